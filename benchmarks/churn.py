"""Churn: N create, execute, delete cycles, a share of them failing creates, then a leak audit.

Failing creates come in two kinds, alternately: an unknown file id (refused before anything is
made) and a kernel that cannot answer in time (start_timeout 0.05 s: the container is made,
started, then rolled back). The audit counts what is left: labelled containers, networks and
volumes, socket folders, storage folders and disk mounts, store rows still `initializing` or
`ready`, and the growth of this process's open file descriptors and RSS.

Usage: `python benchmarks/churn.py [--cycles 1000] [--fail-share 0.2]`.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_sandbox import APIError, Client

LABEL = "org.jupyter-sandbox.test"


@dataclass
class ChurnReport:
    """What a churn run did and what it left behind (every leak field must be empty or 0)."""

    cycles: int = 0
    created: int = 0
    failed_creates: int = 0
    unexpected_errors: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    socket_folders: list[str] = field(default_factory=list)
    storage_folders: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    live_rows: list[str] = field(default_factory=list)
    fd_growth: int = 0
    rss_growth_mib: float = 0.0
    seconds: float = 0.0
    cycle_p50: float = 0.0
    cycle_p95: float = 0.0

    @property
    def leaks(self) -> dict[str, object]:
        """Every leak found (empty when clean)."""
        names = ("containers", "networks", "volumes", "socket_folders", "storage_folders",
                 "mounts", "live_rows", "unexpected_errors")  # fmt: skip
        found: dict[str, object] = {n: getattr(self, n) for n in names if getattr(self, n)}
        if self.fd_growth > 2:
            found["fd_growth"] = self.fd_growth
        return found


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _labelled(kind: str, label: str) -> list[str]:
    extra = ["-a"] if kind == "container" else []
    return subprocess.run(
        ["docker", kind, "ls", *extra, "-q", "--filter", f"label={LABEL}={label}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def churn(home: Path, label: str, cycles: int, fail_share: float = 0.2) -> ChurnReport:
    """Run the cycles on a fresh state folder `home`; return the audit."""
    report = ChurnReport()
    client = Client(home=home, extra_labels={LABEL: label})
    slow = Client(home=home, extra_labels={LABEL: label}, start_timeout=0.05)
    every = round(1 / fail_share) if fail_share > 0 else 0
    durations: list[float] = []
    started = time.monotonic()
    try:
        # Pools (engine connections, ZeroMQ) fill up during the first cycles, every kind of
        # cycle included: growth is measured from there, so only a real leak shows.
        # The engine's connection pool opens and closes sockets as it likes (about 25 here),
        # so a leak is a trend: the peak of the last third against the peak of the first.
        warm_up = min(100, cycles // 2)
        rss = 0
        fd_counts: list[int] = []
        for number in range(cycles):
            if number == warm_up:
                gc.collect()
                rss = _rss()
            begin = time.perf_counter()
            _cycle(client, slow, number, every, report)
            durations.append(time.perf_counter() - begin)
            if number >= warm_up:
                fd_counts.append(_fds())
        report.cycles = cycles
        gc.collect()
        third = max(1, len(fd_counts) // 3)
        report.fd_growth = max(fd_counts[-third:]) - max(fd_counts[:third])
        report.rss_growth_mib = round((_rss() - rss) / 2**20, 1)
        report.live_rows = [
            f"{r.id}:{r.status}" for r in client._store.all(statuses=("initializing", "ready"))
        ]
        sockets_root = client.settings.sockets_root
    finally:
        slow.close()
        client.close()
    report.seconds = round(time.monotonic() - started, 1)
    if durations:
        ordered = sorted(durations)
        report.cycle_p50 = round(statistics.median(ordered), 3)
        report.cycle_p95 = round(ordered[int(0.95 * (len(ordered) - 1))], 3)
    report.containers = _labelled("container", label)
    report.networks = _labelled("network", label)
    report.volumes = _labelled("volume", label)
    report.socket_folders = (
        sorted(p.name for p in sockets_root.iterdir()) if sockets_root.is_dir() else []
    )
    storage = home / "sandboxes"
    report.storage_folders = sorted(p.name for p in storage.iterdir()) if storage.is_dir() else []
    with open("/proc/self/mounts") as table:
        report.mounts = [line.split()[1] for line in table if line.split()[1].startswith(str(home))]
    return report


def _cycle(client: Client, slow: Client, number: int, every: int, report: ChurnReport) -> None:
    if every and number % every == every - 1:
        failing = number // every % 2 == 0
        try:
            if failing:
                client.containers.create(name=f"churn-{number}", file_ids=["file-missing0000"])
            else:
                slow.containers.create(name=f"churn-{number}")
        except APIError:
            report.failed_creates += 1
            return
        report.unexpected_errors.append(f"cycle {number}: a create that should fail succeeded")
        return
    try:
        container = client.containers.create(name=f"churn-{number}")
        report.created += 1
        execution = client.containers.execute(container.id, "print(sum(range(10)))")
        if execution.status != "ok" or execution.outputs[0].text != "45\n":  # type: ignore[union-attr]
            report.unexpected_errors.append(f"cycle {number}: {execution.status}")
        client.containers.delete(container.id)
    except APIError as exc:
        report.unexpected_errors.append(f"cycle {number}: {type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--fail-share", type=float, default=0.2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="jsbx-churn-"))
    label = f"benchmark-churn-{os.getpid()}"
    try:
        report = churn(home / "home", label, args.cycles, args.fail_share)
    finally:
        for kind in ("container", "network", "volume"):
            for name in _labelled(kind, label):
                subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
    for key, value in asdict(report).items():
        print(f"{key:18} {value}")
    print(f"{'leaks':18} {report.leaks or 'none'}")


if __name__ == "__main__":
    main()
