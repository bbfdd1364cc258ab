"""The local cluster's API servers: `jupyter-sandbox serve` processes on this host, bound to
loopback, one per manager (several with `cluster up --servers N`), all on the cluster's
PostgreSQL store, so any of them serves any sandbox.

Each runs in its own session (a terminal's Ctrl-C does not reach it), logs to
`<cluster folder>/servers/serve-N.log`, and is recorded in `serve-N.json` (pid, port and the
process's start time, so a reused pid is never taken for it). The API key is in
`<cluster folder>/api-key` (0600) and reaches `serve` as `--api-key-file`; the store password
in the file the store URL names (`passfile=`): neither is on a command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from jupyter_sandbox.backends.cluster_errors import ClusterError

__all__ = ["ServerProcess", "list_servers", "start_servers", "stop_servers", "wait_answering"]

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
_ENV_PREFIX = "JUPYTER_SANDBOX_"


@dataclass(frozen=True)
class ServerProcess:
    """One API server as `cluster status` shows it."""

    index: int
    port: int
    pid: int
    started: str
    """The process's start time (from /proc), so a reused pid is not this server."""
    log: Path

    @property
    def url(self) -> str:
        """Where it answers (the openai SDK's `base_url` is this plus `/v1`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether this very process still runs."""
        return _start_time(self.pid) == self.started


def _folder(cluster_folder: Path) -> Path:
    return cluster_folder / "servers"


def start_servers(
    cluster_folder: Path, count: int, env: Mapping[str, str], api_key_file: Path
) -> list[ServerProcess]:
    """Start `count` servers with `env` (on top of this environment, minus its own
    `JUPYTER_SANDBOX_*` settings); they answer once `wait_answering` returns."""
    folder = _folder(cluster_folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX)}
    started = []
    for index in range(1, count + 1):
        port = _free_port()
        log = folder / f"serve-{index}.log"
        command = [
            sys.executable, "-c", "from jupyter_sandbox.cli import main; main()", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(api_key_file),
        ]  # fmt: skip
        with log.open("ab") as output:
            process = subprocess.Popen(
                command,
                env={**base, **env},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                cwd=cluster_folder,
            )
        server = ServerProcess(index, port, process.pid, _start_time(process.pid) or "", log)
        record = {"port": port, "pid": process.pid, "started": server.started}
        (folder / f"serve-{index}.json").write_text(json.dumps(record))
        started.append(server)
    return started


def wait_answering(
    servers: list[ServerProcess],
    timeout: float = START_TIMEOUT,
    progress: Callable[[str], None] = lambda line: None,
) -> None:
    """Block until every server's `/health` says `ok` (its start-up reconcile has run).

    Raises:
        ClusterError: a server exited or did not answer within `timeout` (its log's tail).
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, trust_env=False) as http:
        for server in servers:
            progress(f"waiting for the API server at {server.url}")
            delay = 0.1
            while True:
                try:
                    if http.get(f"{server.url}/health").json().get("status") == "ok":
                        break
                except (httpx.HTTPError, ValueError):
                    pass  # not listening yet
                if not server.alive or time.monotonic() > deadline:
                    state = "exited" if not server.alive else f"no answer in {timeout:.0f} s"
                    raise ClusterError(
                        f"API server {server.index} ({state}); its log ({server.log}):\n"
                        + _tail(server.log)
                    )
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


def list_servers(cluster_folder: Path) -> list[ServerProcess]:
    """The cluster's servers, as recorded (alive or not)."""
    folder = _folder(cluster_folder)
    found = []
    for path in sorted(folder.glob("serve-*.json")) if folder.is_dir() else []:
        index = int(path.stem.rpartition("-")[2])
        record = json.loads(path.read_text())
        found.append(
            ServerProcess(
                index, record["port"], record["pid"], record["started"], path.with_suffix(".log")
            )
        )
    return found


def stop_servers(cluster_folder: Path) -> list[str]:
    """Stop every recorded server still running (SIGTERM, then SIGKILL after
    `STOP_TIMEOUT`); what was stopped. Sandboxes keep running (`down` removes them)."""
    stopped = []
    servers = [server for server in list_servers(cluster_folder) if server.alive]
    for server in servers:
        os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for server in servers:
        while server.alive and time.monotonic() < deadline:
            _reap(server.pid)
            time.sleep(0.1)
        if server.alive:
            os.kill(server.pid, signal.SIGKILL)
        _reap(server.pid)
        stopped.append(f"API server {server.url} (pid {server.pid})")
    for path in _folder(cluster_folder).glob("serve-*.json"):
        path.unlink()
    return stopped


def _reap(pid: int) -> None:
    """Collect our own child's exit (started by this process) so it is not a zombie."""
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if there is no such
    process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] == "Z":
        return None
    return fields[19]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
