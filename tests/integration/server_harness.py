"""A real `jupyter-sandbox serve` process on a free loopback port, for the server tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openai import OpenAI

from jupyter_sandbox.settings import Settings
from tests.conftest import TEST_LABEL, remove_labelled

KEYS = {"alice": "sk-alice-0123456789abcdef", "bob": "sk-bob-0123456789abcdef"}
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    """One server process and how to reach it."""

    home: Path
    label: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    clients: list[OpenAI] = field(default_factory=list)
    _pump: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sdk(self, project: str = "alice", **options: object) -> OpenAI:
        """The official client, pointed here with `project`'s key."""
        client = OpenAI(base_url=f"{self.url}/v1", api_key=KEYS[project], **options)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def headers(self, project: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[project]}"}

    def start(self) -> None:
        """Start the process and wait for uvicorn's start-up line (reconcile has run)."""
        command = [
            sys.executable, "-c", "from jupyter_sandbox.cli import main; main()",
            "serve", "--port", str(self.port), "--log-level", "info",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        stream = self.process.stderr
        assert stream is not None

        def pump() -> None:
            for line in stream:
                self.log.append(line)
                if "Application startup complete" in line:
                    ready.set()
            ready.set()  # the process ended: let the waiter look

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        ready.wait(STARTUP_SECONDS)
        if self.process.poll() is not None or not any(
            "Application startup complete" in line for line in self.log
        ):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-40:]))

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process (SIGTERM: graceful; SIGKILL: a crash)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        code = self.process.returncode
        if self._pump is not None:
            self._pump.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        return code

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


def server_env(home: Path, label: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    env.update(
        {
            "JUPYTER_SANDBOX_HOME": str(home),
            "JUPYTER_SANDBOX_API_KEYS": ",".join(f"{p}:{k}" for p, k in KEYS.items()),
            "JUPYTER_SANDBOX_EXTRA_LABELS": json.dumps({TEST_LABEL: label}),
        }
    )
    for name, value in settings.items():
        env[f"JUPYTER_SANDBOX_{name.upper()}"] = str(value)
    return env


def delete_everything(server: RunningServer) -> None:
    """Delete every container each tenant still has, through the API."""
    for project in KEYS:
        client = server.sdk(project, max_retries=0)
        for container in list(client.containers.list(limit=100)):
            client.containers.delete(container.id)


@contextmanager
def serving(home: Path, label: str, **settings: object) -> Iterator[RunningServer]:
    """A started server; afterwards nothing labelled `label` may remain."""
    server = RunningServer(home, label, server_env(home, label, **settings))
    server.start()
    sockets_root = Settings(home=home).sockets_root
    try:
        yield server
    finally:
        try:
            if server.process is not None:
                delete_everything(server)
        finally:
            server.stop()
            server.close_clients()
            leaked = remove_labelled(f"{TEST_LABEL}={label}")
            leftovers = [p.name for p in sockets_root.iterdir()] if sockets_root.is_dir() else []
            shutil.rmtree(sockets_root, ignore_errors=True)
            assert not leaked, f"leaked Docker objects: {leaked}"
            assert not leftovers, f"leaked socket folders: {leftovers}"
