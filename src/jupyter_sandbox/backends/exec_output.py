"""One short command run in a sandbox by exec, its output read as hostile input.

Whatever the command, sandbox code (same user) can open the exec's stdout and stderr
(`/proc/<pid>/fd/1`) and write into them, or hold them open: the host reads at most `limit`
bytes of stdout and the last 2 KiB of stderr, within `timeout` seconds in all, and a command
cut short has no exit code (callers treat that as a failure, or as a truncated answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_sandbox.backends.kernel_tunnel import read_streams

__all__ = ["ExecResult", "run_exec"]


@dataclass(frozen=True)
class ExecResult:
    """What one exec gave, within its bounds."""

    code: int | None
    """The exit code; None if the output was cut (over `limit` or past `timeout`) or the
    engine does not know it."""
    stdout: bytes
    stderr: bytes
    """The last 2 KiB only."""
    complete: bool
    """Whether the output ended by itself, within the bounds."""


def run_exec(
    api: Any, container: str, command: list[str], *, limit: int, timeout: float, user: str = ""
) -> ExecResult:
    """Run `command` in `container` (as `user`, else the container's) and read its output.

    Raises:
        docker.errors.DockerException: from the engine (the caller maps it).
    """
    made = api.exec_create(container, command, stdout=True, stderr=True, user=user)
    stream = api.exec_start(made["Id"], socket=True)
    stdout, stderr, complete = read_streams(stream, limit, timeout)
    code = api.exec_inspect(made["Id"]).get("ExitCode") if complete else None
    return ExecResult(int(code) if isinstance(code, int) else None, stdout, stderr, complete)
