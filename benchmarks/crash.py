"""Crash recovery: SIGKILL the owning process at random points of create, execute, upload and
delete, then check that the next `Client` reconciles: every orphan reaped within 30 s, no
record stuck `initializing`, nothing left that no live record owns.

Usage: `python benchmarks/crash.py [--kills 100] [--seed 1]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sandbox import Client

LABEL = "org.jupyter-sandbox.test"

# The victim: creates, executes, uploads and deletes in a loop, saying where it is.
VICTIM = """
import json, sys
from jupyter_sandbox import Client
client = Client(home=sys.argv[1], extra_labels=json.loads(sys.argv[2]))
print("started", flush=True)
number = 0
while True:
    number += 1
    container = client.containers.create(name=f"crash-{number}")
    client.containers.execute(container.id, "x = sum(range(10**5))")
    client.containers.files.create(container.id, file=("f", b"x" * 2**20), path="/mnt/data/f")
    if number % 3:
        client.containers.delete(container.id)
"""


@dataclass
class CrashReport:
    """Totals over every kill."""

    kills: int = 0
    orphans_reaped: int = 0
    """Records marked failed/terminated plus objects removed by the reconciling client."""
    survivors_kept: int = 0
    """Ready sandboxes left by the victim (sandboxes outlive their creator): kept, then deleted."""
    stuck_initializing: list[str] = field(default_factory=list)
    unowned: list[str] = field(default_factory=list)
    reconcile_seconds: list[float] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, object]:
        found: dict[str, object] = {}
        if self.stuck_initializing:
            found["stuck_initializing"] = self.stuck_initializing
        if self.unowned:
            found["unowned"] = self.unowned
        slow = [s for s in self.reconcile_seconds if s > 30]
        if slow:
            found["reconcile_over_30s"] = slow
        return found


def _labelled(label: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind, extra in (("container", ["-a"]), ("volume", []), ("network", [])):
        names = subprocess.run(
            ["docker", kind, "ls", *extra, "-q", "--filter", f"label={LABEL}={label}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if names:
            found[kind] = names
    return found


def remove_labelled(label: str) -> None:
    """Remove whatever a run left behind with its label (containers, volumes, networks)."""
    for kind, names in _labelled(label).items():
        for name in names:
            subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)


def _container_label(name: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", '{{index .Config.Labels "org.jupyter-sandbox.container-id"}}',
         name],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip


def crash_once(home: Path, label: str, rng: random.Random, report: CrashReport) -> None:
    """Start the victim, kill it at a random moment, reconcile, audit, clean up."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(home), json.dumps({LABEL: label})],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert victim.stdout is not None
    victim.stdout.readline()  # imported and connected: the loop starts now
    time.sleep(rng.uniform(0.0, 3.0))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    report.kills += 1
    started = time.monotonic()
    client = Client(home=home, extra_labels={LABEL: label})  # reconciles on start
    try:
        _, reconciled = client.gc()
        report.reconcile_seconds.append(round(time.monotonic() - started, 2))
        report.orphans_reaped += len(set(reconciled.marked) | set(reconciled.removed))
        records = client._store.all()
        report.stuck_initializing += [r.id for r in records if r.status == "initializing"]
        live = {r.id for r in records if r.status == "ready" and not r.deleted}
        for name in _labelled(label).get("container", []):
            owner = _container_label(name)
            if owner and owner not in live:
                report.unowned.append(owner)
        sockets = client.settings.sockets_root
        live_dirs = {Path(r.socket_dir).name for r in records if r.id in live}
        report.unowned += [
            f"socket folder {p.name}"
            for p in (sockets.iterdir() if sockets.is_dir() else [])
            if p.name not in live_dirs
        ]
        storage = home / "sandboxes"
        report.unowned += [
            f"storage {p.name}"
            for p in (storage.iterdir() if storage.is_dir() else [])
            if p.name not in live
        ]
        report.survivors_kept += len(live)
        for container_id in live:
            client.containers.delete(container_id)
    finally:
        client.close()


def run(kills: int, seed: int, home: Path, label: str) -> CrashReport:
    rng = random.Random(seed)
    report = CrashReport()
    for _ in range(kills):
        crash_once(home, label, rng, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="jsbx-crash-"))
    label = f"benchmark-crash-{os.getpid()}"
    started = time.monotonic()
    try:
        report = run(args.kills, args.seed, folder / "home", label)
    finally:
        remove_labelled(label)
        shutil.rmtree(folder, ignore_errors=True)
    seconds = sorted(report.reconcile_seconds)
    print(f"kills              {report.kills}")
    print(f"orphans reaped     {report.orphans_reaped}")
    print(f"survivors kept     {report.survivors_kept} (ready sandboxes; deleted after)")
    print(f"reconcile seconds  median {seconds[len(seconds) // 2]}, max {seconds[-1]}")
    print(f"problems           {report.problems or 'none'}")
    print(f"total seconds      {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
