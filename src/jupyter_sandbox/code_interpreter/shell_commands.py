"""Shell commands in a sandbox, through its kernel: what the Responses `shell` tool and the
MCP server's `run_shell` run.

Each command runs under `sh -c` in /mnt/data, in a session of its own (a timeout kills the
whole group), with stdin closed. The runner is executed by the kernel in a fresh namespace,
so the user's variables are neither read nor changed; its parameters are one Python literal
prepended to it, never spliced into its text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.client import Client
from jupyter_sandbox.types.responses import (
    ShellCommandOutput,
    ShellOutcomeExit,
    ShellOutcomeTimeout,
)

__all__ = ["DEFAULT_TIMEOUT_MS", "FAILED_EXIT_CODE", "run_commands"]

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
MAX_OUTPUT = 100_000
FAILED_EXIT_CODE = -1
"""The exit code reported when the sandbox itself failed (the reason is in stderr)."""
_MARKER = "__jsbx_shell_result__"
_RUNNER = """
import json, os, signal, subprocess
results = []
for command in COMMANDS:
    process = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/mnt/data", start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code = None
    text = [stream.decode(errors="replace")[-LIMIT:] for stream in (out, err)]
    results.append([*text, code])
print(MARKER + json.dumps(results))
"""


def run_commands(
    client: Client,
    container_id: str,
    commands: Sequence[str],
    *,
    timeout_ms: int | None = None,
    max_output: int | None = None,
) -> list[ShellCommandOutput]:
    """Run `commands` one after the other; one output per command.

    A sandbox that fails (killed, gone, out of memory) is not raised: the result is one
    entry with exit code `FAILED_EXIT_CODE` and the reason in stderr.

    Args:
        timeout_ms: per command (default 120 s, at most 600 s); the group is then killed.
        max_output: characters kept of each stream (the end is kept; at most 100,000).
    """
    timeout = min(timeout_ms or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS) / 1000
    limit = min(max_output or MAX_OUTPUT, MAX_OUTPUT)
    parameters = (list(commands), timeout, limit, _MARKER)
    runner = f"COMMANDS, TIMEOUT, LIMIT, MARKER = {parameters!r}\n{_RUNNER}"
    code = f"exec({runner!r}, {{}})"
    budget = timeout * max(1, len(commands)) + 30
    try:
        execution = client.containers.execute(container_id, code, timeout=budget)
    except APIError as exc:
        return [_failure(exc.message)]
    for line in reversed(execution.stdout.splitlines()):
        if line.startswith(_MARKER):
            return [_output(*entry) for entry in json.loads(line[len(_MARKER) :])]
    return [_failure(execution.message or execution.stderr or f"the run ended {execution.status}")]


def _output(stdout: str, stderr: str, exit_code: int | None) -> ShellCommandOutput:
    outcome = ShellOutcomeTimeout() if exit_code is None else ShellOutcomeExit(exit_code=exit_code)
    return ShellCommandOutput(stdout=stdout, stderr=stderr, outcome=outcome)


def _failure(why: str) -> ShellCommandOutput:
    return ShellCommandOutput(
        stdout="",
        stderr=f"The sandbox failed: {why}",
        outcome=ShellOutcomeExit(exit_code=FAILED_EXIT_CODE),
    )
