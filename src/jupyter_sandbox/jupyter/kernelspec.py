"""Kernelspecs whose kernels run in sandboxes (`jupyter sandbox kernelspec install`).

Run as `python -m jupyter_sandbox.jupyter.kernelspec` (the kernelspec's `argv`), this module refuses
to start: the `argv` is only used by a Jupyter too old to know kernel provisioners, and such
a Jupyter would otherwise run the "sandboxed" kernel on the host.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox._options import parse_network
from jupyter_sandbox.types.container import NetworkPolicy

DEFAULT_NAME = "python3-sandbox"
DEFAULT_DISPLAY_NAME = "Python 3 (sandbox)"
PROVISIONER_NAME = "jupyter-sandbox"
DEFAULT_LIFETIME = 8 * 3600
"""Kernels live a working day unless configured otherwise (the operator's maximum applies)."""
_LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
_RUNTIME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def kernel_json(
    *,
    display_name: str = DEFAULT_DISPLAY_NAME,
    memory: str | None = "1g",
    network: str | dict[str, Any] | None = "disabled",
    lifetime: int | None = DEFAULT_LIFETIME,
    runtime: str | None = None,
    **config: Any,
) -> dict[str, Any]:
    """The kernel.json of a sandboxed Python kernel; `config` adds provisioner traits.

    Args:
        runtime: the OCI runtime of its sandboxes (`runsc`: gVisor); None: the settings of
            the Jupyter server's environment when a kernel starts.

    Raises:
        BadRequestError: `memory` is not a tier this host allows, `network` is not a known
            spelling, or `runtime` is not a runtime's name.
    """
    provisioner_config: dict[str, Any] = {}
    if runtime is not None:
        if not isinstance(runtime, str) or not _RUNTIME_NAME.fullmatch(runtime):
            raise BadRequestError(
                f"Invalid runtime {runtime!r}: the name of a runtime of the Docker engine, "
                "such as runc or runsc (gVisor)",
                param="runtime",
            )
        provisioner_config["runtime"] = runtime
    if memory is not None:
        from jupyter_sandbox.core.containers import check_memory
        from jupyter_sandbox.settings import Settings

        # Only tiers this host allows: a kernel asking for another would fail at every start.
        provisioner_config["memory_limit"] = check_memory(memory, Settings())
    policy = parse_network(network)
    if policy is not None:
        try:
            checked = TypeAdapter(NetworkPolicy).validate_python(policy)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise BadRequestError(
                f"Invalid network policy: {message}", param="network_policy"
            ) from None
        if getattr(checked, "domain_secrets", None):
            raise BadRequestError(
                "Invalid network policy: domain_secrets cannot be kept in a kernelspec (it is a "
                "file on disk); create the sandbox through the API instead",
                param="network_policy.domain_secrets",
            )
        provisioner_config["network_policy"] = checked.model_dump(mode="json")
    if lifetime is not None:
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 5:
            raise BadRequestError(
                f"Invalid lifetime {lifetime!r}: a whole number of seconds, at least 5",
                param="lifetime_seconds",
            )
        provisioner_config["lifetime"] = lifetime
    provisioner_config.update({k: v for k, v in config.items() if v is not None})
    return {
        "argv": ["python3", "-m", "jupyter_sandbox.jupyter.kernelspec", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": provisioner_config,
            },
        },
    }


def default_spec_dir() -> Path | None:
    """The repository's `kernelspecs/python3-sandbox` (for its logos), if this is a checkout."""
    candidate = Path(__file__).resolve().parents[3] / "kernelspecs" / DEFAULT_NAME
    return candidate if candidate.is_dir() else None


def install(
    *,
    name: str = DEFAULT_NAME,
    display_name: str = DEFAULT_DISPLAY_NAME,
    memory: str | None = "1g",
    network: str | dict[str, Any] | None = "disabled",
    lifetime: int | None = DEFAULT_LIFETIME,
    runtime: str | None = None,
    user: bool = False,
    prefix: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a sandbox kernelspec where Jupyter finds it; return the folder.

    Args:
        runtime: the OCI runtime of its sandboxes (`runsc`: gVisor), which the Docker engine
            must have (it is asked, so a kernelspec that could never start is not written).
        user: install for this user (`jupyter --data-dir`) rather than system-wide.
        prefix: install under `<prefix>/share/jupyter/kernels` (`sys.prefix` for a venv).
        config: more provisioner settings (image, file_ids, skills, idle_minutes, ...).

    Raises:
        BadRequestError: a bad setting (as `kernel_json`), or a runtime the engine lacks.
        APIConnectionError: `runtime` is given and the Docker engine cannot be asked.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec = kernel_json(
        display_name=display_name,
        memory=memory,
        network=network,
        lifetime=lifetime,
        runtime=runtime,
        **(config or {}),
    )
    if runtime is not None:
        _check_engine_runtime(runtime)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        (folder / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        logos = default_spec_dir()
        for logo in _LOGOS:
            if logos is not None and (logos / logo).is_file():
                shutil.copyfile(logos / logo, folder / logo)
        destination = KernelSpecManager().install_kernel_spec(
            str(folder), kernel_name=name, user=user, prefix=prefix
        )
    return Path(destination)


def _check_engine_runtime(runtime: str) -> None:
    """Refuse a runtime the Docker engine does not have (BadRequestError naming `runtime`)."""
    from jupyter_sandbox.backends.gvisor import check_runtime
    from jupyter_sandbox.backends.runtime.engine import connect_engine, docker_errors

    engine = connect_engine(timeout=10)
    try:
        with docker_errors("listing the engine's runtimes"):
            registered = frozenset(engine.info().get("Runtimes") or {})
    finally:
        engine.close()
    check_runtime(runtime, registered)


def main(argv: list[str]) -> int:
    """Refuse to run a sandbox kernel on the host."""
    print(  # noqa: T201
        "jupyter-sandbox: this kernel runs only through the 'jupyter-sandbox' kernel "
        "provisioner (jupyter_client >= 7 with jupyter-sandbox installed); refusing to start "
        "it on the host.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
