"""The CLI without Docker: help for every command, parsing errors, exit codes, doctor rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from jupyter_sandbox import (
    APIConnectionError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JupyterSandboxError,
    NotFoundError,
    __version__,
)
from jupyter_sandbox._options import parse_network_option
from jupyter_sandbox.cli import app, parse_network
from jupyter_sandbox.cli import doctor_checks as checks
from jupyter_sandbox.cli.demo_job import deferred_interrupts
from jupyter_sandbox.jupyter.kernelspec import kernel_json

runner = CliRunner()
NO_ENGINE = {"DOCKER_HOST": "tcp://127.0.0.1:1"}
"""An engine that refuses connections (a missing unix socket would leak one in docker-py)."""


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree (typer vendors click, so duck-type the groups)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands(typer.main.get_command(app))]
EXPECTED = {
    (),
    ("create",),
    ("list",),
    ("get",),
    ("delete",),
    ("exec",),
    ("gc",),
    ("doctor",),
    ("mcp",),
    ("demo",),
    ("image",),
    ("image", "build"),
    ("image", "status"),
    ("kernelspec",),
    ("kernelspec", "install"),
    ("cp",),
    ("files",),
    ("skills",),
    ("skills", "create"),
    ("skills", "list"),
    ("skills", "get"),
    ("skills", "delete"),
    ("snapshots",),
    ("snapshots", "create"),
    ("snapshots", "list"),
    ("snapshots", "get"),
    ("snapshots", "delete"),
    ("logs",),
    ("serve",),
    ("cluster",),
    ("cluster", "up"),
    ("cluster", "status"),
    ("cluster", "down"),
}


def test_every_command_is_there() -> None:
    assert set(COMMANDS) == EXPECTED


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "root")
def test_every_command_and_parameter_has_help(path: tuple[str, ...]) -> None:
    command = dict(_commands(typer.main.get_command(app)))[path]
    assert command.help, f"{' '.join(path)} has no help text"
    undocumented = [
        p.name for p in command.params if not getattr(p, "help", None) and p.name != "help"
    ]
    assert not undocumented, f"{' '.join(path)}: parameters without help: {undocumented}"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert " ".join(command.help.split()) in " ".join(result.output.split())


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "root")
def test_help_shows_no_python_internals(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    for leak in ("{", "<list[", "range>", "<class", "NoneType"):
        assert leak not in result.output, f"{' '.join(path)} --help shows {leak!r}"


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"jupyter-sandbox {__version__}\n"


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage:" in result.output
    assert "doctor" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create"], "Missing option '--name'"),
        (["create", "--name", "x", "--network", "open"], "use 'disabled' or 'allowlist:"),
        (
            ["create", "--name", "x", "--expires-minutes", "soon"],
            "Invalid value for '--expires-minutes': Input should be a valid integer",
        ),
        (["list", "--limit", "0"], "Input should be greater than or equal to 1"),
        (["list", "--limit", "101"], "Input should be less than or equal to 100"),
        (["list", "--order", "sideways"], "Invalid value for '--order'"),
        (["get"], "Missing argument 'ID'"),
        (["delete"], "Missing argument 'ID"),
        (["exec"], "Missing argument 'ID'"),
        (["exec", "cntr_x", "print(1)", "--file", "code.py"], "give CODE or --file, not both"),
        (["exec", "cntr_x", "--file", "/nonexistent/code.py"], "cannot read /nonexistent/code.py"),
        (
            ["exec", "cntr_x", "1", "--timeout", "0"],
            "Input should be greater than or equal to 0.001",
        ),
        (["exec", "cntr_x", "1", "--timeout", "nan"], "Invalid value for '--timeout'"),
        (["exec", "cntr_x", "1", "--timeout", "inf"], "Invalid value for '--timeout'"),
        (["exec", "cntr_x", "1", "--timeout", "-1"], "Invalid value for '--timeout'"),
        (["exec", "cntr_x", "1", "--timeout", "1e400"], "Invalid value for '--timeout'"),
        (["exec", "cntr_x", "1", "--timeout", "86401"], "Invalid value for '--timeout'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_bad_arguments_exit_2_before_touching_docker(args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env=NO_ENGINE)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("disabled", {"type": "disabled"}),
        (" Off ", {"type": "disabled"}),
        ("allowlist:pypi.org", {"type": "allowlist", "allowed_domains": ["pypi.org"]}),
        (
            "allowlist:pypi.org,*.github.com",
            {"type": "allowlist", "allowed_domains": ["pypi.org", "*.github.com"]},
        ),
        ("allow=pypi.org, a.com,", {"type": "allowlist", "allowed_domains": ["pypi.org", "a.com"]}),
    ],
)
def test_one_network_grammar_for_cli_kernelspec_and_magics(
    value: str, policy: dict[str, Any]
) -> None:
    assert parse_network(value) == policy  # the CLI's --network
    assert parse_network_option(value) == policy  # kernelspec, provisioner, magics, panel
    config = kernel_json(network=value)["metadata"]["kernel_provisioner"]["config"]
    assert config["network_policy"] == policy  # the kernelspec installer's


@pytest.mark.parametrize("value", ["open", "allowlist:", "allow=,", "disabled:x"])
def test_a_bad_network_spelling_is_refused_alike(value: str) -> None:
    with pytest.raises(BadRequestError, match="use 'disabled' or 'allowlist:") as caught:
        parse_network_option(value)
    assert caught.value.param == "network_policy"
    result = runner.invoke(app, ["create", "--name", "x", "--network", value], env=NO_ENGINE)
    assert result.exit_code == 2, result.output
    assert "use 'disabled' or 'allowlist:" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["kernelspec", "install", "--name", "k", "--network", value], env=NO_ENGINE
    )
    assert result.exit_code != 0
    assert "use 'disabled' or 'allowlist:" in " ".join(result.output.split())


@pytest.mark.parametrize("args", [["list"], ["get", "cntr_x"], ["gc"], ["exec", "cntr_x", "1"]])
def test_unreachable_engine_exits_3_without_traceback(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), *args], env=NO_ENGINE)
    assert result.exit_code == 3
    assert result.output.startswith("error: Docker engine unreachable")
    assert "Traceback" not in result.output


def test_doctor_reports_an_unreachable_engine(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "doctor"], env=NO_ENGINE)
    assert result.exit_code == 3
    lines = result.output.splitlines()
    assert lines[0].startswith("Docker engine  FAIL  Docker engine unreachable")
    assert lines[1].startswith("disk cap       ")  # which mechanism caps the disk, if any
    assert lines[2] == f"store          INFO  {tmp_path / 'store.sqlite3'}"


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    env = {**NO_ENGINE, "JUPYTER_SANDBOX_CPUS": "-1"}
    result = runner.invoke(app, ["--home", str(tmp_path), "list"], env=env)
    assert result.exit_code == 2
    assert result.output == "error: Invalid cpus: Input should be greater than 0 (got '-1')\n"


class _RaisingClient:
    """Stands in for `Client` to check how each error class maps to an exit code."""

    error: JupyterSandboxError

    def __init__(self, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequestError("Invalid name: too long", param="name"), 2),
        (NotFoundError("No container found with id 'cntr_x'"), 2),
        (APIConnectionError("Docker engine unreachable"), 3),
        (ConflictError("Container cntr_x is expired"), 1),
        (InternalServerError("the engine refused"), 1),
    ],
)
def test_errors_map_to_exit_codes(
    error: JupyterSandboxError, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_RaisingClient, "error", error, raising=False)
    monkeypatch.setattr("jupyter_sandbox.client.Client", _RaisingClient)
    result = runner.invoke(app, ["get", "cntr_x"])
    assert result.exit_code == code
    assert result.output == f"error: {error}\n"


# doctor: the rules, over `docker info` / `docker version` dicts as the engine returns them.

SAFE_INFO: dict[str, Any] = {
    "ServerVersion": "27.3.1",
    "Driver": "overlay2",
    "CgroupVersion": "2",
    "CgroupDriver": "systemd",
    "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}},
    "RuncCommit": {"ID": "v1.2.8-0-gabcdef"},
    "KernelVersion": "6.8.0",
}
SAFE_VERSION: dict[str, Any] = {
    "Version": "27.3.1",
    "Components": [
        {"Name": "Engine", "Version": "27.3.1"},
        {"Name": "runc", "Version": "1.2.8"},
    ],
}


def _levels(found: list[checks.Check]) -> dict[str, str]:
    return {check.name: check.level for check in found}


def test_a_safe_engine_passes() -> None:
    found = checks.engine_checks(SAFE_INFO, SAFE_VERSION)
    assert _levels(found) == {
        "Docker engine": "ok",
        "runc": "ok",
        "cgroup": "ok",
        "seccomp": "ok",
        "security options": "info",
        "storage driver": "info",
        "default runtime": "ok",
        "gVisor (runsc)": "info",
        "host kernel": "info",
    }
    assert checks.exit_code(found) == 0


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("20.10.24+dfsg1", (20, 10, 24)),
        ("v1.2.8-0-gabcdef", (1, 2, 8)),
        ("1.1.5+ds1", (1, 1, 5)),
        ("26.1", (26, 1, 0)),
        ("dev", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_version(text: str | None, parsed: tuple[int, int, int] | None) -> None:
    assert checks.parse_version(text) == parsed


@pytest.mark.parametrize(
    ("version", "level"),
    [
        ("20.10.24+dfsg1", "warn"),
        ("23.0.10", "warn"),
        ("23.0.11", "ok"),
        ("24.0.9", "warn"),
        ("25.0.3", "warn"),
        ("25.0.4", "ok"),
        ("26.0.0", "ok"),
        ("28.2.2", "ok"),
        ("weird", "warn"),
        (None, "warn"),
    ],
)
def test_docker_before_the_dns_fix_warns(version: str | None, level: str) -> None:
    check = checks.check_engine_version(version)
    assert check.level == level
    if level == "warn" and version and version[0].isdigit():
        assert "CVE-2024-29018" in check.detail


@pytest.mark.parametrize(
    ("version", "level", "cves"),
    [
        ("1.1.5+ds1", "warn", ["CVE-2024-21626", "CVE-2025-31133"]),
        ("1.1.12", "warn", ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]),
        ("1.2.7", "warn", ["CVE-2025-31133"]),
        ("1.2.8", "ok", []),
        ("1.3.0", "warn", ["CVE-2025-52881"]),
        ("1.3.2", "warn", ["CVE-2025-52565"]),
        ("1.3.3", "ok", []),
        ("v1.4.0", "ok", []),
        (None, "warn", []),
    ],
)
def test_runc_before_the_masked_paths_fix_warns(
    version: str | None, level: str, cves: list[str]
) -> None:
    check = checks.check_runc_version(version)
    assert check.level == level
    for cve in cves:
        assert cve in check.detail
    if version and version.startswith("1.1.12"):
        assert "CVE-2024-21626" not in check.detail


def test_a_distribution_build_is_flagged_as_maybe_patched() -> None:
    assert "backported" in checks.check_runc_version("1.1.5+ds1").detail
    assert "backported" not in checks.check_runc_version("1.2.7").detail


def test_runc_version_prefers_the_version_components() -> None:
    assert checks.runc_version(SAFE_INFO, SAFE_VERSION) == "1.2.8"
    assert checks.runc_version(SAFE_INFO, {"Components": []}) == "v1.2.8-0-gabcdef"
    assert checks.runc_version({}, {}) is None
    server_shaped = {"Server": {"Components": [{"Name": "runc", "Version": "1.3.3"}]}}
    assert checks.runc_version({}, server_shaped) == "1.3.3"


@pytest.mark.parametrize(("cgroup", "level"), [("2", "ok"), ("1", "warn"), (None, "warn")])
def test_cgroup_v1_warns(cgroup: str | None, level: str) -> None:
    assert checks.check_cgroup({**SAFE_INFO, "CgroupVersion": cgroup}).level == level


@pytest.mark.parametrize(
    ("options", "level"),
    [
        (["name=seccomp,profile=default"], "ok"),
        (["name=seccomp,profile=builtin", "name=rootless"], "ok"),
        (["name=seccomp,profile=unconfined"], "fail"),
        (["name=apparmor"], "fail"),
        ([], "fail"),
        (None, "fail"),
    ],
)
def test_seccomp_off_fails(options: list[str] | None, level: str) -> None:
    check = checks.check_seccomp({**SAFE_INFO, "SecurityOptions": options})
    assert check.level == level


def test_seccomp_off_fails_the_doctor_but_warnings_do_not() -> None:
    warned = {**SAFE_INFO, "ServerVersion": "20.10.24", "CgroupVersion": "1"}
    assert checks.exit_code(checks.engine_checks(warned, {})) == 0
    unconfined = {**SAFE_INFO, "SecurityOptions": []}
    assert checks.exit_code(checks.engine_checks(unconfined, SAFE_VERSION)) == 1


@pytest.mark.parametrize(
    ("runtimes", "configured", "level"),
    [
        ({"runc": {}}, None, "info"),
        ({"runc": {}, "runsc": {}}, None, "ok"),
        ({"runc": {}, "runsc": {}}, "runsc", "ok"),
        ({"runc": {}}, "runsc", "fail"),
    ],
)
def test_runsc(runtimes: dict[str, Any], configured: str | None, level: str) -> None:
    assert checks.check_runsc({"Runtimes": runtimes}, configured).level == level


def test_security_options_are_listed() -> None:
    info = {"SecurityOptions": ["name=seccomp,profile=default", "name=userns", "name=apparmor"]}
    assert checks.check_security_extras(info).detail == "apparmor, userns"


def test_doctor_names_what_stops_sandboxes_being_made() -> None:
    found = [
        checks.check_image("k:1", exists=False, up_to_date=False, size_bytes=None),
        checks.check_egress_image("e:1", exists=False),
        checks.check_runsc({"Runtimes": {"runc": {}}}, "runsc"),
    ]
    assert [c.level for c in found] == ["fail", "warn", "fail"]
    assert checks.exit_code(found) == 1
    assert checks.missing(found) == (
        "Sandboxes cannot be created here until these are fixed: kernel image, gVisor (runsc)"
    )
    assert checks.missing(found[1:2]) is None


@pytest.mark.parametrize(
    ("exists", "up_to_date", "size", "level", "detail"),
    [
        (
            False,
            False,
            None,
            "fail",
            "k:1 is missing, so no sandbox can start: run `jupyter-sandbox image build`",
        ),
        (
            True,
            False,
            250_000_000,
            "warn",
            "k:1 is out of date, 250 MB: run `jupyter-sandbox image build`",
        ),
        (True, True, 250_000_000, "ok", "k:1 (up to date, 250 MB)"),
    ],
)
def test_image_check(
    exists: bool, up_to_date: bool, size: int | None, level: str, detail: str
) -> None:
    check = checks.check_image("k:1", exists=exists, up_to_date=up_to_date, size_bytes=size)
    assert (check.level, check.detail) == (level, detail)


JUPYTER = Path(sys.executable).with_name("jupyter")


@pytest.mark.skipif(not JUPYTER.exists(), reason="jupyter_core's `jupyter` is not installed")
def test_jupyter_finds_the_subcommand() -> None:
    result = subprocess.run(
        [str(JUPYTER), "sandbox", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"jupyter-sandbox {__version__}\n")
    listed = subprocess.run(
        [str(JUPYTER), "--help"], capture_output=True, text=True, check=False
    ).stdout
    assert "sandbox" in listed.split()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_finishes_creation_and_deletion_before_an_interrupt(signum: int) -> None:
    finished: list[bool] = []

    def create_a_sandbox() -> None:
        with deferred_interrupts():
            os.kill(os.getpid(), signum)
            finished.append(True)

    with pytest.raises(KeyboardInterrupt):
        create_a_sandbox()
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    ("installed", "says"),
    [(True, "installed but not registered"), (False, "not installed"), (None, "not installed")],
)
def test_runsc_check_says_how_to_fix(installed: bool | None, says: str) -> None:
    found = checks.check_runsc({"Runtimes": {"runc": {}}}, installed=installed)
    assert found.level == "info"
    assert found.detail.startswith(says)
    assert "scripts/register-runsc" in found.detail
    assert "apt-get install runsc" in found.detail


def test_a_missing_runsc_that_is_asked_for_fails_with_the_fix() -> None:
    found = checks.check_runsc({"Runtimes": {"runc": {}}}, "runsc", installed=True)
    assert found.level == "fail"
    assert "scripts/register-runsc" in found.detail
