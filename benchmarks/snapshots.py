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


def snapshot_round(client: Client, megabytes: int) -> dict[str, float]:
    """One round for a DataFrame of `megabytes` MB (5 float64 columns): seconds per step."""
    rows = megabytes * 10**6 // 40
    memory = "4g" if megabytes >= 500 else "2g"
    times: dict[str, float] = {}
    times["create a fresh sandbox"], source = timed(
        lambda: client.containers.create(name="bench", memory_limit=memory)
    )
    made = [source.id]
    try:
        times["re-run the cells"], _ = timed(
            lambda: value(client, source.id, CELLS.format(rows=rows))
        )
        expected = value(client, source.id, PROBE)
        times["snapshot"], snapshot = timed(lambda: client.containers.snapshots.create(source.id))
        times["bytes"] = snapshot.bytes
        times["fork (create + restore)"], fork = timed(
            lambda: client.containers.create(
                name="fork", memory_limit=memory, snapshot_id=snapshot.id
            )
        )
        made.append(fork.id)
        assert value(client, fork.id, PROBE) == expected
        plain = client.containers.create(name="plain", memory_limit=memory)
        made.append(plain.id)
        record = client._containers.get_record(plain.id, client.project)
        stored = client._snapshots.check(snapshot.id, client.project)
        times["restore alone (into a ready sandbox)"], _ = timed(
            lambda: client._snapshots.restore(record, stored)
        )
        assert value(client, plain.id, PROBE) == expected
        client.containers.snapshots.delete(source.id, snapshot.id)
    finally:
        for container_id in made:
            client.containers.delete(container_id)
    return times


def snapshot_rows(client: Client, megabytes: int, rounds: int) -> list[str]:
    """Table rows (median over `rounds`) for one DataFrame size."""
    runs = [snapshot_round(client, megabytes) for _ in range(rounds)]
    size = f"{runs[0]['bytes'] / 2**20:.1f} MiB"
    lines = []
    for measure in runs[0]:
        if measure == "bytes":
            continue
        samples = [run[measure] for run in runs]
        lines.append(
            f"| {megabytes} MB | {measure} | {statistics.median(samples):.2f} | "
            f"{min(samples):.2f} | {len(samples)} | {size if measure == 'snapshot' else ''} |"
        )
    rebuild = statistics.median([r["create a fresh sandbox"] + r["re-run the cells"] for r in runs])
    lines.append(f"| {megabytes} MB | fresh sandbox + re-run (sum) | {rebuild:.2f} | | | |")
    return lines


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
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size")
    parser.add_argument("--paused", type=int, default=3, help="sandboxes paused at once")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1000] if args.large else [])
    home = tempfile.mkdtemp(prefix="jsbx-bench-")
    client = Client(home=home, extra_labels={"org.jupyter-sandbox.bench": "snapshots"})
    try:
        print("| data | measure | seconds (median) | min | n | bundle |")
        print("|---|---|---:|---:|---:|---:|")
        for megabytes in sizes:
            for line in snapshot_rows(client, megabytes, 1 if megabytes >= 500 else args.rounds):
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
