"""Kernel channels side by side, in one run: runc+ipc, runc+tcp (CurveZMQ), runsc+tcp (gVisor).

For each: cold create-to-first-result (create, then `print(1)`), create-to-first-result from a
warm pool (`--pool-size`, 0 to skip), and the round trip of N `execute("1")`. Usage:
`python benchmarks/channels.py [--rounds 3] [--executes 100] [--pool-size 1]` (root: the tcp
channel enters the sandbox's network namespace).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_sandbox import Client
from jupyter_sandbox.core.pool import POOL_PROJECT

CONFIGS: dict[str, dict[str, Any]] = {
    "runc + ipc": {"kernel_channel": "ipc"},
    "runc + tcp": {"kernel_channel": "tcp"},
    "runsc + tcp": {"runtime": "runsc"},
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def first_result(client: Client) -> tuple[float, str]:
    started = time.perf_counter()
    container = client.containers.create(name="bench")
    out = client.containers.execute(container.id, "print(1)")
    assert out.stdout == "1\n", out
    return time.perf_counter() - started, container.id


def wait_pool_full(client: Client, size: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        ready = client._store.all(statuses=("ready",))
        if sum(r.project == POOL_PROJECT and not r.deleted for r in ready) >= size:
            return
        time.sleep(0.1)
    raise TimeoutError("the pool did not fill")


def measure(
    name: str, settings: dict[str, Any], args: argparse.Namespace
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"cold": [], "warm": [], "trip": []}
    with tempfile.TemporaryDirectory(prefix="jsbx-bench-") as home:
        with Client(home=Path(home), **settings) as client:
            for index in range(args.rounds):
                elapsed, container_id = first_result(client)
                results["cold"].append(elapsed)
                if index == 0:
                    client.containers.execute(container_id, "1")
                    for _ in range(args.executes):
                        started = time.perf_counter()
                        client.containers.execute(container_id, "1")
                        results["trip"].append(time.perf_counter() - started)
                client.containers.delete(container_id)
        if args.pool_size:
            with Client(home=Path(home), pool_size=args.pool_size, **settings) as client:
                for _ in range(args.rounds):
                    wait_pool_full(client, args.pool_size, time.monotonic() + 120)
                    elapsed, container_id = first_result(client)
                    results["warm"].append(elapsed)
                    client.containers.delete(container_id)
    print(f"done: {name}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--executes", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for name, settings in CONFIGS.items():
        found = measure(name, settings, args)
        for key, label in (
            ("cold", "create to first result (cold)"),
            ("warm", "create to first result (warm pool)"),
            ("trip", "execute round trip"),
        ):
            values = [v * 1000 for v in found[key]]
            if values:
                rows.append(
                    f"| {name}: {label} | {statistics.median(values):8.1f} "
                    f"| {percentile(values, 0.95):8.1f} | {min(values):8.1f} | {len(values):4d} |"
                )
    print("| measure (ms) | median | p95 | min | n |\n|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
