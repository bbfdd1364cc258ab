"""Foundation benchmark: a sandbox beside a plain local ipykernel, in one run.

Prints create-to-first-result (cold start, and a claim from the warm pool) and the execute
round trip (median and p95 of N small executes) for both. Usage:
`python benchmarks/run.py [--rounds 5] [--executes 100] [--pool-size 2]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager

from jupyter_sandbox import Client


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_executes(run: Callable[[], object], count: int) -> list[float]:
    run()  # warm-up
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def local_kernel(rounds: int, executes: int) -> tuple[list[float], list[float]]:
    """Cold start to first result and round trips of a local ipykernel (jupyter_client)."""
    starts: list[float] = []
    trips: list[float] = []
    scratch = tempfile.mkdtemp(prefix="jsbx-bench-")
    for index in range(rounds):
        started = time.perf_counter()
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=f"{scratch}/k{index}")
        manager.start_kernel()
        kernel_client = manager.client()
        kernel_client.start_channels()
        kernel_client.wait_for_ready(timeout=30)
        reply = kernel_client.execute_interactive(
            "print(1)", output_hook=lambda msg: None, timeout=30
        )
        assert reply["content"]["status"] == "ok"
        starts.append(time.perf_counter() - started)
        if index == 0:
            trips = time_executes(
                lambda kc=kernel_client: kc.execute_interactive(  # type: ignore[misc]
                    "1", output_hook=lambda msg: None, timeout=30
                ),
                executes,
            )
        kernel_client.stop_channels()
        manager.shutdown_kernel(now=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return starts, trips


def same_client_trips(client: Client, container_id: str, executes: int) -> list[float]:
    """Round trips to the sandbox through jupyter_client's own client, as for the local kernel."""
    kernel_client = BlockingKernelClient()
    kernel_client.load_connection_info(client.containers.connection_info(container_id))
    kernel_client.start_channels()
    kernel_client.wait_for_ready(timeout=30)
    try:
        return time_executes(
            lambda: kernel_client.execute_interactive(
                "1", output_hook=lambda msg: None, timeout=30
            ),
            executes,
        )
    finally:
        kernel_client.stop_channels()


def sandbox(
    rounds: int, executes: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """The same for sandboxes, plus delete times."""
    starts: list[float] = []
    trips: list[float] = []
    same_client: list[float] = []
    deletes: list[float] = []
    with (
        tempfile.TemporaryDirectory() as home,
        Client(home=home, extra_labels={"org.jupyter-sandbox.benchmark": "run"}) as client,
    ):
        for index in range(rounds):
            started = time.perf_counter()
            container = client.containers.create(name=f"bench-{index}")
            execution = client.containers.execute(container.id, "print(1)")
            assert execution.stdout == "1\n"
            starts.append(time.perf_counter() - started)
            if index == 0:
                trips = time_executes(
                    lambda cid=container.id: client.containers.execute(cid, "1"), executes
                )
                same_client = same_client_trips(client, container.id, executes)
            started = time.perf_counter()
            client.containers.delete(container.id)
            deletes.append(time.perf_counter() - started)
    return starts, trips, same_client, deletes


def warm_sandbox(rounds: int, pool_size: int) -> tuple[list[float], list[float]]:
    """Create-to-first-result when `create` claims a pooled sandbox; each claim is made once
    the pool is full again (a pool sized for the arrival rate), then the sandbox is deleted.
    Also the claim alone (create returns)."""
    firsts: list[float] = []
    claims: list[float] = []
    with (
        tempfile.TemporaryDirectory() as home,
        Client(
            home=home, extra_labels={"org.jupyter-sandbox.benchmark": "pool"}, pool_size=pool_size
        ) as client,
    ):
        for index in range(rounds):
            if not client.wait_for_pool(120):
                raise SystemExit("the warm pool did not fill in 120 s")
            started = time.perf_counter()
            container = client.containers.create(name=f"warm-{index}")
            claimed = time.perf_counter()
            execution = client.containers.execute(container.id, "print(1)")
            assert execution.stdout == "1\n"
            firsts.append(time.perf_counter() - started)
            claims.append(claimed - started)
            client.containers.delete(container.id)
    return firsts, claims


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values) * 1000:8.1f} "
        f"| {percentile(values, 0.95) * 1000:8.1f} | {min(values) * 1000:8.1f} | {len(values):4d} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="cold starts per runner")
    parser.add_argument("--executes", type=int, default=100, help="round trips timed")
    parser.add_argument("--pool-size", type=int, default=2, help="warm pool size (0: skip)")
    args = parser.parse_args()
    local_starts, local_trips = local_kernel(args.rounds, args.executes)
    box_starts, box_trips, box_same, box_deletes = sandbox(args.rounds, args.executes)
    warm_firsts, warm_claims = (
        warm_sandbox(args.rounds, args.pool_size) if args.pool_size else ([], [])
    )
    print("| measure (ms) | median | p95 | min | n |")
    print("|---|---:|---:|---:|---:|")
    print(row("local ipykernel: start to first result", local_starts))
    print(row("sandbox: create to first result (cold)", box_starts))
    if warm_firsts:
        print(row("sandbox: create to first result (warm pool)", warm_firsts))
        print(row("sandbox: create returns (warm-pool claim)", warm_claims))
    print(row("local ipykernel: execute round trip", local_trips))
    print(row("sandbox: execute round trip (jupyter_client, as local)", box_same))
    print(row("sandbox: execute round trip (Client API)", box_trips))
    print(row("sandbox: delete", box_deletes))
    same = statistics.median(box_same) / statistics.median(local_trips)
    api = statistics.median(box_trips) / statistics.median(local_trips)
    print(f"\nexecute round trip / local (median): same client {same:.2f}x, Client API {api:.2f}x")


if __name__ == "__main__":
    main()
