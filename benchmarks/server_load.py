"""Load benchmark of `jupyter-sandbox serve`: N concurrent clients each create a sandbox,
execute in it and delete it, R rounds; the same workload through the in-process Python API
beside it, in one run.

Prints throughput (sandbox cycles per second) and p50/p95 latency per operation for both.
Usage: `python benchmarks/server_load.py [--clients 4] [--rounds 3] [--executes 5]`.
Every Docker object carries a run label and is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

from openai import OpenAI

from jupyter_sandbox import Client

LABEL = "org.jupyter-sandbox.bench"
KEY = "sk-bench-" + uuid4().hex
CODE = "sum(range(1000))"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Api:
    """create / execute / delete, over HTTP or in process."""

    def __init__(
        self,
        create: Callable[[str], str],
        execute: Callable[[str], Any],
        delete: Callable[[str], Any],
    ) -> None:
        self.create, self.execute, self.delete = create, execute, delete


def workload(api: Api, clients: int, rounds: int, executes: int) -> dict[str, Any]:
    """Each client thread: `rounds` times create, `executes` executes, delete."""
    samples: dict[str, list[float]] = {"create": [], "execute": [], "delete": []}
    lock = threading.Lock()

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        with lock:
            samples[name].append(time.perf_counter() - started)
        return result

    def one_client(index: int) -> None:
        for round_ in range(rounds):
            name = f"load-{index}-{round_}"
            container_id = timed("create", lambda name=name: api.create(name))  # type: ignore[misc]
            try:
                for _ in range(executes):
                    timed("execute", lambda cid=container_id: api.execute(cid))  # type: ignore[misc]
            finally:
                timed("delete", lambda cid=container_id: api.delete(cid))  # type: ignore[misc]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(one_client, i) for i in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "cycles": clients * rounds, "samples": samples}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(home: Path, port: int, label: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    env.update(
        JUPYTER_SANDBOX_HOME=str(home),
        JUPYTER_SANDBOX_API_KEYS=f"bench:{KEY}",
        JUPYTER_SANDBOX_EXTRA_LABELS=json.dumps({LABEL: label}),
        JUPYTER_SANDBOX_SERVER_RATE_LIMIT="0",
        JUPYTER_SANDBOX_SERVER_MAX_LIVE_SANDBOXES="1000",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", "from jupyter_sandbox.cli import main; main()",
         "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    for raw in process.stderr:  # uvicorn's start-up line at warning level: our banner first
        if b"serving" in raw:
            break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # then the port: accept() means the app is up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("server exited") from None
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def report(name: str, result: dict[str, Any]) -> list[str]:
    rows = []
    throughput = result["cycles"] / result["elapsed"]
    for op, values in result["samples"].items():
        rows.append(
            f"| {name} | {op} | {len(values)} | {percentile(values, 0.5) * 1000:.0f} | "
            f"{percentile(values, 0.95) * 1000:.0f} | {throughput:.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--executes", type=int, default=5)
    args = parser.parse_args()
    label = f"run-{uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="jsbx-load-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        with Client(home=scratch / "embedded", extra_labels={LABEL: label}) as client:
            embedded = Api(
                lambda name: client.containers.create(name=name).id,
                lambda cid: client.containers.execute(cid, CODE),
                client.containers.delete,
            )
            results["in-process"] = workload(embedded, args.clients, args.rounds, args.executes)

        port = free_port()
        server = start_server(scratch / "server", port, label)
        try:
            with OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY) as sdk:
                http = Api(
                    lambda name: sdk.containers.create(name=name).id,
                    lambda cid: sdk.post(
                        f"/containers/{cid}/execute", body={"code": CODE}, cast_to=dict
                    ),
                    sdk.containers.delete,
                )
                results["HTTP (openai SDK)"] = workload(
                    http, args.clients, args.rounds, args.executes
                )
        finally:
            server.terminate()
            server.wait(30)
            if server.stderr is not None:
                server.stderr.close()
    finally:
        leftovers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}={label}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        for container in leftovers:
            subprocess.run(["docker", "rm", "-fv", container], capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{args.clients} concurrent clients x {args.rounds} rounds "
        f"(create, {args.executes} x execute `{CODE}`, delete); {os.cpu_count()} CPUs\n"
    )
    print("| API | operation | n | p50 ms | p95 ms | cycles/s |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        print("\n".join(report(name, result)))
    if leftovers:
        print(f"\nWARNING: removed {len(leftovers)} leftover container(s)")


if __name__ == "__main__":
    main()
