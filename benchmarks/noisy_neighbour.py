"""Noisy neighbour: a victim sandbox's execute latency while another sandbox runs each bomb.

For each bomb, the attacker re-runs it in a loop (its own client, another thread, as a server
would) while the victim runs small executes and a `retrieve` (the API) back to back; we report
the p50/p95 of both beside the quiet baseline, and the p95 ratio. Target: ratio <= 2.

Usage: `python benchmarks/noisy_neighbour.py [--seconds 8] [--bombs cpu,fork,...]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox import APIError, Client, ConflictError

LABEL = "org.jupyter-sandbox.test"

# Each bomb runs for about SECONDS, then returns (the attacker loop starts it again).
BOMBS = {
    "cpu": (
        "import multiprocessing, time\n"
        "def burn():\n    end = time.monotonic() + SECONDS\n"
        "    while time.monotonic() < end: pass\n"
        "ps = [multiprocessing.Process(target=burn) for _ in range(8)]\n"
        "[p.start() for p in ps]; [p.join() for p in ps]"
    ),
    "fork": (
        "import os, time, signal\nkids = []\n"
        "try:\n    while True:\n        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(SECONDS); os._exit(0)\n"
        "        kids.append(pid)\nexcept OSError:\n    pass\n"
        "time.sleep(SECONDS)\n"
        "for k in kids: os.kill(k, signal.SIGKILL); os.waitpid(k, 0)"
    ),
    "memory": "chunks = []\nwhile True:\n    chunks.append(bytearray(b'x' * 2**26))",
    "stdout": (
        "import time\nend = time.monotonic() + SECONDS\n"
        "while time.monotonic() < end:\n    print('x' * 1000)"
    ),
    "disk": (
        "import os, time\nend = time.monotonic() + SECONDS\nblock = os.urandom(2**20)\n"
        "while time.monotonic() < end:\n"
        "    with open('/mnt/data/fill', 'wb') as f:\n"
        "        for _ in range(256): f.write(block)\n"
        "        os.fsync(f.fileno())\n"
        "    os.remove('/mnt/data/fill')"
    ),
    "fd": (
        "import os, time\nfds = []\n"
        "try:\n    while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError:\n    pass\n"
        "end = time.monotonic() + SECONDS\n"
        "while time.monotonic() < end: os.read(fds[-1], 1); os.stat('/dev/null')\n"
        "for fd in fds: os.close(fd)"
    ),
}
VICTIM_CODE = "sum(range(1000))"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Phase:
    """Latencies (seconds) of the victim during one phase."""

    name: str
    executes: list[float]
    retrieves: list[float]
    attacker_runs: int = 0

    @property
    def p95(self) -> float:
        return percentile(self.executes, 0.95)

    def row(self, baseline: Phase | None) -> str:
        ratio = f"{self.p95 / baseline.p95:5.2f}x" if baseline else "  1.00x"
        return (
            f"{self.name:9} n={len(self.executes):4}  execute p50 "
            f"{statistics.median(self.executes) * 1000:6.1f} ms  p95 {self.p95 * 1000:6.1f} ms "
            f"({ratio})  retrieve p95 {percentile(self.retrieves, 0.95) * 1000:5.1f} ms"
            f"  attacker runs {self.attacker_runs}"
        )


def measure(victim: Client, victim_id: str, seconds: float, name: str) -> Phase:
    """Back-to-back small executes (and a retrieve each) for `seconds`."""
    phase = Phase(name, [], [])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        execution = victim.containers.execute(victim_id, VICTIM_CODE, timeout=30)
        phase.executes.append(time.perf_counter() - started)
        if execution.status != "ok":
            raise RuntimeError(f"the victim's execute failed: {execution.status}")
        started = time.perf_counter()
        victim.containers.retrieve(victim_id)
        phase.retrieves.append(time.perf_counter() - started)
    return phase


def under_attack(
    victim: Client, victim_id: str, attacker: Client, attacker_id: str, bomb: str, seconds: float
) -> Phase:
    """Measure the victim while the attacker loops on `bomb`."""
    code = BOMBS[bomb].replace("SECONDS", str(max(1.0, seconds / 2)))
    stop = threading.Event()
    runs = [0]

    def attack() -> None:
        while not stop.is_set():
            # A bomb may break its own sandbox's kernel; the next run restarts it.
            with contextlib.suppress(APIError):
                attacker.containers.execute(attacker_id, code, timeout=seconds + 10)
            runs[0] += 1

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    time.sleep(min(1.0, seconds / 4))  # let the bomb take hold
    try:
        phase = measure(victim, victim_id, seconds, bomb)
    finally:
        stop.set()
        thread.join(timeout=seconds + 30)
    phase.attacker_runs = runs[0]
    return phase


def run(home: Path, label: str, bombs: list[str], seconds: float) -> tuple[Phase, list[Phase]]:
    """The quiet baseline, then one phase per bomb."""
    victim = Client(home=home, extra_labels={LABEL: label})
    attacker = Client(home=home, extra_labels={LABEL: label})
    try:
        victim_id = victim.containers.create(name="victim").id
        attacker_id = attacker.containers.create(name="attacker").id
        measure(victim, victim_id, 1.0, "warm-up")
        baseline = measure(victim, victim_id, seconds, "quiet")
        phases = []
        for bomb in bombs:
            phases.append(under_attack(victim, victim_id, attacker, attacker_id, bomb, seconds))
            try:
                attacker.containers.restart(attacker_id)  # the next bomb starts clean
            except ConflictError:  # the bomb ended its whole sandbox (gVisor): a fresh one
                attacker.containers.delete(attacker_id)
                attacker_id = attacker.containers.create(name="attacker").id
        victim.containers.delete(victim_id)
        attacker.containers.delete(attacker_id)
        return baseline, phases
    finally:
        attacker.close()
        victim.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--bombs", default=",".join(BOMBS))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="jsbx-noisy-"))
    label = f"benchmark-noisy-{os.getpid()}"
    try:
        baseline, phases = run(folder / "home", label, args.bombs.split(","), args.seconds)
    finally:
        for kind in ("container", "volume"):
            names = subprocess.run(
                ["docker", kind, "ls", "-aq" if kind == "container" else "-q",
                 "--filter", f"label={LABEL}={label}"],
                capture_output=True, text=True, check=False,
            ).stdout.split()  # fmt: skip
            for name in names:
                subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{os.cpu_count()} cores; victim and attacker each capped at --cpus 1")
    print(baseline.row(None))
    for phase in phases:
        print(phase.row(baseline))


if __name__ == "__main__":
    main()
