"""The magics' parsing, help and error rendering, without Docker."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_sandbox import Client
from jupyter_sandbox.jupyter.magics import SandboxCellError, SandboxMagics, cell_error
from jupyter_sandbox.types.execution import ErrorOutput, Execution


def no_client() -> Client:
    raise AssertionError("bad arguments must be refused before any Client is made")


@pytest.fixture
def magics() -> SandboxMagics:
    return SandboxMagics(InteractiveShell.instance(), client_factory=no_client)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nonsense", "invalid choice: 'nonsense'"),
        ("use", "the following arguments are required: ID"),
        ("create --memory", "expected one argument"),
        ("upload /no/such/file", "no such local file"),
        ("create --file /no/such/file", "no such local file"),
        ("delete", "no sandbox in use"),
        ("files", "no sandbox in use"),
        ("download /mnt/data/x", "no sandbox in use"),
        ("create --name 'unclosed", "No closing quotation"),
    ],
)
def test_bad_line_arguments_are_usage_errors(
    magics: SandboxMagics, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        magics.sandbox(line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "no sandbox in use"),
        ("--timeout 0 cntr_x", "--timeout: Invalid timeout: must be a number of seconds"),
        ("--timeout nan cntr_x", "--timeout: Invalid timeout"),
        ("--timeout inf cntr_x", "--timeout: Invalid timeout"),
        ("--timeout -1 cntr_x", "--timeout: Invalid timeout"),
        ("--timeout 1e400 cntr_x", "--timeout: Invalid timeout"),
        ("--timeout soon", "invalid float value"),
        ("a b", "unrecognized arguments"),
    ],
)
def test_bad_cell_arguments_are_usage_errors(
    magics: SandboxMagics, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        magics.sandbox(line, "print(1)")


def test_every_command_has_help(magics: SandboxMagics, capsys: pytest.CaptureFixture[str]) -> None:
    doc = SandboxMagics.sandbox.__doc__ or ""
    commands = ["create", "list", "use", "upload", "download", "files", "delete", "status", "panel"]
    for command in commands:
        assert f"%sandbox {command}" in doc
        magics.sandbox(f"{command} --help")
        assert "usage: %sandbox " + command in capsys.readouterr().out
    assert "%%sandbox [ID] [--timeout S]" in doc
    magics.sandbox("help")
    listing = capsys.readouterr().out
    assert all(command in listing for command in commands)


def test_status_without_a_sandbox_says_how_to_start(
    magics: SandboxMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    magics.sandbox("status")
    assert "No sandbox in use" in capsys.readouterr().out


def execution(status: str, **fields: object) -> Execution:
    return Execution(container_id="cntr_x", status=status, duration=0.1, **fields)  # type: ignore[arg-type]


def test_a_failed_cell_raises_the_sandbox_error_with_its_traceback() -> None:
    error = cell_error(
        execution(
            "error",
            outputs=[ErrorOutput(ename="KeyError", evalue="'b'", traceback=["line 1", "KeyError"])],
        )
    )
    assert isinstance(error, SandboxCellError)
    assert type(error).__name__ == "KeyError"
    assert error._render_traceback_() == ["line 1", "KeyError"]
    assert str(error) == "'b'"


@pytest.mark.parametrize(
    ("status", "name"), [("timeout", "SandboxTimeout"), ("died", "SandboxKernelDied")]
)
def test_timeouts_and_deaths_fail_the_cell(status: str, name: str) -> None:
    error = cell_error(execution(status, message="it ended"))
    assert isinstance(error, SandboxCellError)
    assert (type(error).__name__, str(error)) == (name, "it ended")
    assert cell_error(execution("ok")) is None


def test_load_and_unload_extension() -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_sandbox")
    assert "sandbox" in shell.magics_manager.magics["line"]
    assert "sandbox" in shell.magics_manager.magics["cell"]
    shell.run_line_magic("unload_ext", "jupyter_sandbox")
    assert "sandbox" not in shell.magics_manager.magics["line"]
