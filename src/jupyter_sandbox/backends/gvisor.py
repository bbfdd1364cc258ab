"""gVisor (`runsc`) as a sandbox runtime: whether the engine has it, and how to fix it if not.

Debian's runsc is registered with the engine as the runtime `runsc` by `scripts/register-runsc`
(merged into `/etc/docker/daemon.json`, then SIGHUP to dockerd: no restart). Its runtime
argument `--network=host` makes gVisor use the network namespace Docker made for the container
(only `lo` for a disabled network, the sandbox's own internal network for an allowlist).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection

from jupyter_sandbox._exceptions import BadRequestError

RUNSC = "runsc"
KNOWN_RUNTIMES = ("runc", RUNSC)
REGISTRATION = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}
FIX = (
    "install and register gVisor: `sudo apt-get install runsc && sudo scripts/register-runsc` "
    "(from a source checkout; it merges "
    '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}}} '
    "into /etc/docker/daemon.json and sends dockerd SIGHUP, which restarts nothing)"
)


def runsc_installed() -> bool:
    """Whether this host has a `runsc` binary (only meaningful for a local engine)."""
    return shutil.which(RUNSC) is not None


def check_runtime(runtime: str | None, registered: Collection[str]) -> None:
    """Refuse a runtime the engine does not have, naming `runtime` and the fix.

    Raises:
        BadRequestError: the runtime is unknown, or runsc is not registered with the engine.
    """
    if runtime is None or runtime in registered:
        return
    if runtime == RUNSC:
        raise BadRequestError(
            f"Invalid runtime: 'runsc' (gVisor) is not registered with the Docker engine "
            f"(it has {', '.join(sorted(registered)) or 'no runtimes'}); {FIX}",
            param="runtime",
        )
    raise BadRequestError(
        f"Invalid runtime: {runtime!r} is not a runtime of the Docker engine (it has "
        f"{', '.join(sorted(registered)) or 'none'}); use 'runc' (the default) or 'runsc' "
        "(gVisor)",
        param="runtime",
    )
