"""Kernelspecs, the provisioner's registration and its config mapping, without Docker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from jupyter_sandbox import BadRequestError
from jupyter_sandbox._options import describe_network, describe_seconds, parse_network
from jupyter_sandbox.jupyter.kernelspec import install, kernel_json
from jupyter_sandbox.jupyter.provisioner import SandboxProvisioner

REPO = Path(__file__).resolve().parents[2]


def test_provisioner_is_registered() -> None:
    entries = KernelProvisionerFactory.instance().get_provisioner_entries()
    assert entries["jupyter-sandbox"] == "jupyter_sandbox.jupyter.provisioner:SandboxProvisioner"


def test_repository_kernelspec_is_the_default_one() -> None:
    shipped = json.loads((REPO / "kernelspecs/python3-sandbox/kernel.json").read_text())
    assert shipped == kernel_json()
    assert shipped["display_name"] == "Python 3 (sandbox)"
    assert shipped["metadata"]["kernel_provisioner"]["provisioner_name"] == "jupyter-sandbox"


def test_kernelspec_argv_refuses_to_run_on_the_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_sandbox.jupyter.kernelspec", "/tmp/c.json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "refusing to start it on the host" in result.stderr


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("disabled", {"type": "disabled"}),
        ("allow=a.com,b.com", {"type": "allowlist", "allowed_domains": ["a.com", "b.com"]}),
        ("allowlist:a.com", {"type": "allowlist", "allowed_domains": ["a.com"]}),
        ({"type": "disabled"}, {"type": "disabled"}),
        (None, None),
    ],
)
def test_network_spellings(value: object, policy: object) -> None:
    assert parse_network(value) == policy  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["allow=", "open", "allow=,"])
def test_bad_network_spellings(value: str) -> None:
    with pytest.raises(BadRequestError, match="disabled"):
        parse_network(value)


def test_short_forms() -> None:
    policy = {"type": "allowlist", "allowed_domains": ["a.com", "b.com"]}
    assert describe_network(policy) == "allowlist:a.com,b.com"
    assert parse_network(describe_network(policy)) == policy  # the short form reads back
    assert [describe_seconds(s) for s in (0, 45, 750, 3900)] == [
        "expired",
        "45s",
        "12m 30s",
        "1h 05m",
    ]


def test_install_writes_a_kernelspec(tmp_path: Path) -> None:
    folder = install(
        name="py-net", display_name="Py (net)", memory="2G", network="allow=PyPI.org",
        prefix=str(tmp_path),
    )  # fmt: skip
    assert folder == tmp_path / "share/jupyter/kernels/py-net"
    spec = json.loads((folder / "kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config["memory_limit"] == "2g"
    assert config["network_policy"] == {"type": "allowlist", "allowed_domains": ["pypi.org"]}
    assert spec["display_name"] == "Py (net)"
    assert (folder / "logo-64x64.png").is_file()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"memory": "3g"}, "memory_limit"),
        ({"network": "allow=10.0.0.1"}, "network_policy"),
        ({"runtime": "run sc"}, "runtime"),
        ({"runtime": ""}, "runtime"),
        ({"runtime": "--privileged"}, "runtime"),
    ],
)
def test_install_refuses_bad_settings(tmp_path: Path, kwargs: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        install(prefix=str(tmp_path), **kwargs)  # type: ignore[arg-type]
    assert caught.value.param == param


def test_the_runtime_becomes_the_provisioners_runtime_trait() -> None:
    spec = kernel_json(runtime="runsc")
    assert spec["metadata"]["kernel_provisioner"]["config"]["runtime"] == "runsc"
    assert "runtime" not in kernel_json()["metadata"]["kernel_provisioner"]["config"]
    prov = provisioner(**spec["metadata"]["kernel_provisioner"]["config"])
    assert prov.runtime == "runsc"
    assert asyncio.run(prov.get_provisioner_info())["runtime"] == "runsc"


def test_install_offers_only_this_hosts_tiers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTER_SANDBOX_ALLOW_LARGE_MEMORY", raising=False)
    with pytest.raises(BadRequestError, match="'16g' is not enabled on this host") as caught:
        install(prefix=str(tmp_path), memory="16G")
    assert "allowed on this host: 512m, 1g, 2g, 4g;" in caught.value.message
    monkeypatch.setenv("JUPYTER_SANDBOX_ALLOW_LARGE_MEMORY", "1")
    folder = install(prefix=str(tmp_path), memory="16GB")
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["memory_limit"] == "16g"


def test_cli_kernelspec_install(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jupyter_sandbox.cli import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["kernelspec", "install", "--prefix", str(tmp_path), "--memory", "512m"]
    )
    assert ok.exit_code == 0, ok.output
    assert "Installed kernelspec python3-sandbox" in ok.output
    bad = runner.invoke(app, ["kernelspec", "install", "--user", "--sys-prefix"])
    assert bad.exit_code == 2
    bad_runtime = runner.invoke(
        app, ["kernelspec", "install", "--prefix", str(tmp_path), "--runtime", "run sc"]
    )
    assert bad_runtime.exit_code == 2
    assert "Invalid runtime 'run sc'" in bad_runtime.output
    assert "--runtime" in runner.invoke(app, ["kernelspec", "install", "--help"]).output


def provisioner(**config: object) -> SandboxProvisioner:
    spec = KernelSpec(**kernel_json())
    return SandboxProvisioner(kernel_id="0123456789abcdef", kernel_spec=spec, **config)


def test_kernelspec_config_becomes_create_parameters() -> None:
    params = provisioner(
        memory_limit="2g", network_policy="allow=a.com", lifetime=7200, file_ids=["file-1"]
    )._params()
    assert params == {
        "name": "jupyter-kernel-01234567",
        "memory_limit": "2g",
        "network_policy": {"type": "allowlist", "allowed_domains": ["a.com"]},
        "file_ids": ["file-1"],
        "skills": None,
        "lifetime_seconds": 7200,
        "expires_after": {"anchor": "last_active_at", "minutes": 120},
    }
    assert provisioner(name="mine", idle_minutes=5)._params()["expires_after"]["minutes"] == 5


def test_without_a_sandbox_the_provisioner_reports_no_process() -> None:
    prov = provisioner()
    assert not prov.has_process
    assert asyncio.run(prov.poll()) == 0
    asyncio.run(prov.send_signal(2))  # nothing to signal: no error
    assert prov.get_shutdown_wait_time(7.0) == 7.0
