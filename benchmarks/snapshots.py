"""Snapshots, forks and idle pause (issue 18), beside re-running the cells, in one run.

For each DataFrame size: the time to build the state in a fresh sandbox (create, then run
the cells that make it: the baseline a fork replaces), to snapshot it, and to fork it (create
with `snapshot_id` until the kernel holds the DataFrame); then resume-from-pause latency
(execute on a frozen sandbox against one on a running one) and the memory paused sandboxes
hold. Usage: `python benchmarks/snapshots.py [--sizes 1,100] [--large] [--resumes 10]`
(`--large` adds 1 GB; it needs a 4g sandbox and ~3 GiB of host memory).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import docker

from jupyter_sandbox import Client

CELLS = """
import numpy as np, pandas as pd
rows = {rows}
df = pd.DataFrame(np.random.default_rng(0).random((rows, 4)), columns=list("abcd"))
df["e"] = df["a"].rolling(16, min_periods=1).mean()
summary = df.describe()
"""
PROBE = "len(df), round(float(df['e'].sum()), 3)"


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def value(client: Client, container_id: str, code: str) -> str:
    """Run `code`; its last output's text (empty if it printed nothing)."""
    execution = client.containers.execute(container_id, code)
    assert execution.status == "ok", execution.outputs
    last = execution.outputs[-1] if execution.outputs else None
    return str(last.data["text/plain"]) if last is not None else ""  # type: ignore[union-attr]


def snapshot_rows(client: Client, megabytes: int) -> list[str]:
    """One table row per measure for a DataFrame of `megabytes` MB (5 float64 columns)."""
    rows = megabytes * 10**6 // 40
    memory = "4g" if megabytes >= 500 else "2g"
    built, source = timed(lambda: client.containers.create(name="bench", memory_limit=memory))
    try:
        cells, _ = timed(lambda: value(client, source.id, CELLS.format(rows=rows)))
        expected = value(client, source.id, PROBE)
        took, snapshot = timed(lambda: client.containers.snapshots.create(source.id))
        forked, fork = timed(
            lambda: client.containers.create(
                name="fork", memory_limit=memory, snapshot_id=snapshot.id
            )
        )
        assert value(client, fork.id, PROBE) == expected
        client.containers.delete(fork.id)
        client.containers.snapshots.delete(source.id, snapshot.id)
    finally:
        client.containers.delete(source.id)
    size = f"{megabytes} MB"
    return [
        f"| {size} | fresh sandbox + re-run cells | {built + cells:.2f} | - |",
        f"| {size} | snapshot | {took:.2f} | {snapshot.bytes / 2**20:.1f} MiB |",
        f"| {size} | fork (create from snapshot, state loaded) | {forked:.2f} | - |",
    ]


def resume_latency(client: Client, count: int) -> tuple[list[float], list[float]]:
    """(execute on a paused sandbox, execute on a running one), seconds."""
    container = client.containers.create(name="resume", idle_action="pause")
    paused: list[float] = []
    running: list[float] = []
    try:
        value(client, container.id, "x = 1")
        for _ in range(count):
            client._store.update(container.id, last_active_at=time.time() - 86400)
            client._expiry.sweep(force=True)
            assert client.containers.retrieve(container.id).status == "paused"
            paused.append(timed(lambda: value(client, container.id, "x"))[0])
            running.append(timed(lambda: value(client, container.id, "x"))[0])
    finally:
        client.containers.delete(container.id)
    return paused, running


def paused_memory(client: Client, count: int, megabytes: int) -> list[str]:
    """Memory each sandbox's cgroup holds, running then paused, with a DataFrame in it."""
    engine = docker.from_env()
    made = [client.containers.create(name="mem", idle_action="pause") for _ in range(count)]
    lines = []
    try:
        for container in made:
            value(client, container.id, CELLS.format(rows=megabytes * 10**6 // 40))

        def usage(container_id: str) -> float:
            stats = engine.api.stats(f"jsbx-{container_id}", stream=False)
            return float(stats["memory_stats"].get("usage", 0)) / 2**20

        before = [usage(c.id) for c in made]
        for container in made:
            client._store.update(container.id, last_active_at=time.time() - 86400)
        client._expiry.sweep(force=True)
        assert all(client.containers.retrieve(c.id).status == "paused" for c in made)
        after = [usage(c.id) for c in made]
        lines.append(
            f"| {count} sandboxes, {megabytes} MB DataFrame each | "
            f"{statistics.median(before):.0f} MiB | {statistics.median(after):.0f} MiB |"
        )
    finally:
        for container in made:
            client.containers.delete(container.id)
        engine.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,100", help="DataFrame sizes in MB")
    parser.add_argument("--large", action="store_true", help="add 1000 MB")
    parser.add_argument("--resumes", type=int, default=10)
    parser.add_argument("--paused", type=int, default=3, help="sandboxes paused at once")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1000] if args.large else [])
    home = tempfile.mkdtemp(prefix="jsbx-bench-")
    client = Client(home=home, extra_labels={"org.jupyter-sandbox.bench": "snapshots"})
    try:
        print("| data | measure | seconds | size |")
        print("|---|---|---:|---:|")
        for megabytes in sizes:
            for line in snapshot_rows(client, megabytes):
                print(line, flush=True)
        paused, running = resume_latency(client, args.resumes)
        print()
        print("| execute `x` (ms) | median | max | n |")
        print("|---|---:|---:|---:|")
        for label, samples in (("on a paused sandbox (resume)", paused), ("running", running)):
            print(
                f"| {label} | {statistics.median(samples) * 1000:.1f} | "
                f"{max(samples) * 1000:.1f} | {len(samples)} |"
            )
        print()
        print("| paused sandboxes | memory running (median) | memory paused (median) |")
        print("|---|---:|---:|")
        for line in paused_memory(client, args.paused, 100):
            print(line)
    finally:
        for left in client.containers.list(limit=100):  # a failed run leaves nothing
            client.containers.delete(left.id)
        client.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
