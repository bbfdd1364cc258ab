"""Server crash recovery: SIGKILL `jupyter-sandbox serve` (with a warm pool) at random points
while a client creates, executes, uploads and deletes through the HTTP API, restart it, and
check what the restarted server's own start-up reconcile left: every orphan reaped (its
pooled sandboxes included), no record stuck `initializing`, nothing no live record owns.

Usage, from the repository root: `python -m benchmarks.server_crash [--kills 100] [--seed 1]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.crash import LABEL, _container_label, _labelled, remove_labelled
from openai import OpenAI

from jupyter_sandbox import Client
from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from jupyter_sandbox.core.pool import POOL_PROJECT

KEY = "sk-crash-0123456789abcdef"
STARTUP_SECONDS = 60.0


@dataclass
class ServerCrashReport:
    """Totals over every kill."""

    kills: int = 0
    stuck_initializing: list[str] = field(default_factory=list)
    unowned: list[str] = field(default_factory=list)
    pooled_at_kill: int = 0
    """Ready pooled sandboxes the killed server left (what its restart had to reap)."""
    dead_pool: list[str] = field(default_factory=list)
    """Pooled sandboxes of the killed server still live after the restart (must be none)."""
    restart_seconds: list[float] = field(default_factory=list)
    """From the restarted server's launch to its start-up complete (its reconcile included)."""
    reap_seconds: list[float] = field(default_factory=list)
    """From the restarted server's launch until nothing is stuck, unowned or left pooled."""
    requests_before_kill: list[int] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, object]:
        found: dict[str, object] = {}
        if self.stuck_initializing:
            found["stuck_initializing"] = self.stuck_initializing
        if self.unowned:
            found["unowned"] = self.unowned
        if self.dead_pool:
            found["dead_pool"] = self.dead_pool
        slow = [s for s in self.reap_seconds if s > 30]
        if slow:
            found["reaped_after_30s"] = slow
        return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One `jupyter-sandbox serve` process (warm pool of two) on a free loopback port."""

    def __init__(self, home: Path, label: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
        env.update(
            JUPYTER_SANDBOX_HOME=str(home),
            JUPYTER_SANDBOX_API_KEYS=f"crash:{KEY}",
            JUPYTER_SANDBOX_EXTRA_LABELS=json.dumps({LABEL: label}),
            JUPYTER_SANDBOX_POOL_SIZE="2",
        )
        command = [sys.executable, "-c", "from jupyter_sandbox.cli import main; main()",
                   "serve", "--port", str(self.port), "--log-level", "info"]  # fmt: skip
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        stream = self.process.stderr
        assert stream is not None

        def pump() -> None:
            for line in stream:
                if "Application startup complete" in line:
                    ready.set()
            ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not ready.wait(STARTUP_SECONDS) or self.process.poll() is not None:
            self.stop(signal.SIGKILL)
            raise RuntimeError("the server did not start")

    def sdk(self) -> OpenAI:
        return OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=KEY, max_retries=0)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._pump.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def _pooled(home: Path, owner: int) -> list[str]:
    """Ready pooled sandboxes that process `owner` made."""
    store = Store(home / "store.sqlite3")
    try:
        records = store.all(statuses=("ready",))
    finally:
        store.close()
    return [
        r.id
        for r in records
        if r.project == POOL_PROJECT and r.owner_pid == owner and not r.deleted
    ]


def _wait_for_pool(home: Path, owner: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not _pooled(home, owner) and time.monotonic() < end:
        time.sleep(0.1)


def _audit(home: Path, label: str, server_pid: int) -> tuple[list[str], list[str], list[str]]:
    """What the restarted server has not (yet) cleaned: stuck, unowned, a dead server's pool."""
    store = Store(home / "store.sqlite3")
    try:
        records = store.all()
    finally:
        store.close()
    stuck = [r.id for r in records if r.status == "initializing" and r.owner_pid != server_pid]
    live = {r.id for r in records if r.status in ("initializing", "ready") and not r.deleted}
    dead_pool = [
        r.id
        for r in records
        if r.id in live and r.project == POOL_PROJECT and r.owner_pid != server_pid
    ]
    unowned = []
    for name in _labelled(label).get("container", []):
        owner = _container_label(name)
        if owner and owner not in live:
            unowned.append(owner)
    return stuck, unowned, dead_pool


def _drive(server: Server, stop: threading.Event, count: list[int]) -> None:
    """Create, execute, upload and delete through HTTP until the server dies."""
    sdk = server.sdk()
    try:
        number = 0
        while not stop.is_set():
            number += 1
            container = sdk.containers.create(name=f"crash-{number}")
            count[0] += 1
            sdk.post(
                f"/containers/{container.id}/execute",
                body={"code": "x = sum(range(10**5))"},
                cast_to=dict,
            )
            count[0] += 1
            sdk.containers.files.create(container.id, file=("f", b"x" * 2**20))
            count[0] += 1
            if number % 3:
                sdk.containers.delete(container.id)
                count[0] += 1
    except Exception:  # the server was killed under us: expected
        pass
    finally:
        sdk.close()


def crash_once(home: Path, label: str, rng: random.Random, report: ServerCrashReport) -> None:
    """Serve, drive, SIGKILL the server at a random moment, restart it, audit, clean up."""
    server = Server(home, label)
    try:
        _wait_for_pool(home, server.process.pid)
        stop, count = threading.Event(), [0]
        driver = threading.Thread(target=_drive, args=(server, stop, count))
        driver.start()
        time.sleep(rng.uniform(0.0, 4.0))
    finally:
        server.stop(signal.SIGKILL)  # whatever failed: no server outlives its round
    stop.set()
    driver.join(60)
    report.kills += 1
    report.requests_before_kill.append(count[0])
    report.pooled_at_kill += len(_pooled(home, server.process.pid))
    started = time.monotonic()
    restarted = Server(home, label)  # its start-up reconcile is what is checked
    report.restart_seconds.append(round(time.monotonic() - started, 2))
    try:
        # Audit until clean or 30 s: the start-up reconcile reaps what it finds at once; engine
        # calls the killed server left in flight land later and go at the next reconcile.
        deadline = time.monotonic() + 30
        while True:
            stuck, unowned, dead_pool = _audit(home, label, restarted.process.pid)
            if not (stuck or unowned or dead_pool) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        report.reap_seconds.append(round(time.monotonic() - started, 2))
        report.stuck_initializing += stuck
        report.unowned += unowned
        report.dead_pool += dead_pool
    finally:
        restarted.stop()  # graceful: removes its own warm pool
    with Client(home=home, extra_labels={LABEL: label}, project="crash") as client:
        for container in list(client.containers.list(limit=100)):
            client.containers.delete(container.id)


def run(kills: int, seed: int, home: Path, label: str) -> ServerCrashReport:
    rng = random.Random(seed)
    report = ServerCrashReport()
    for _ in range(kills):
        crash_once(home, label, rng, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="jsbx-server-crash-"))
    label = f"benchmark-server-crash-{os.getpid()}"
    started = time.monotonic()
    try:
        report = run(args.kills, args.seed, folder / "home", label)
    finally:
        remove_labelled(label)
        shutil.rmtree(folder, ignore_errors=True)
    seconds = sorted(report.restart_seconds)
    print(f"kills                 {report.kills}")
    print(f"requests before kill  median {sorted(report.requests_before_kill)[report.kills // 2]}")
    print(f"pooled at kill        {report.pooled_at_kill} (reaped by the restart)")
    print(f"restart seconds       median {seconds[len(seconds) // 2]}, max {seconds[-1]}")
    reaped = sorted(report.reap_seconds)
    late = sum(
        1 for r, s in zip(report.reap_seconds, report.restart_seconds, strict=True) if r > s + 1
    )
    print(
        f"clean after seconds   median {reaped[len(reaped) // 2]}, max {reaped[-1]} "
        f"({late} not clean at start-up: the killed server's engine calls still landing)"
    )
    print(f"problems              {report.problems or 'none'}")
    print(f"total seconds         {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
