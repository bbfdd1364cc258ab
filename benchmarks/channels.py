"""Kernel channels side by side, in one run: runc+ipc, runc+tcp (CurveZMQ), runsc+tcp (gVisor),
runc+tcp through the exec tunnel on this engine (`engine_location=remote`), and with `--dind`
a remote engine: a Docker-in-Docker node over mutual TLS (`jupyter-sandbox cluster up`).

"runc + tcp, before" is runc + tcp with the liveness check before each execute asking the
engine every time (as before the check read the sandbox's init process): the before/after of
that change, in the same run. With `--dind`, the node is also reached over ssh
(`DOCKER_HOST=ssh://root@node`, the cluster's keys in a private HOME).

For each: cold create-to-first-result (create, then `print(1)`), create-to-first-result from a
warm pool (`--pool-size`, 0 to skip), and the round trip of N `execute("1")`. Usage:
`python benchmarks/channels.py [--rounds 3] [--executes 100] [--pool-size 1] [--dind]` (root:
the local tcp channel enters the sandbox's network namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_sandbox import Client
from jupyter_sandbox.core.pool import POOL_PROJECT

CONFIGS: dict[str, dict[str, Any]] = {
    "runc + ipc": {"kernel_channel": "ipc"},
    "runc + tcp, before": {"kernel_channel": "tcp"},
    "runc + tcp": {"kernel_channel": "tcp"},
    "runsc + tcp": {"runtime": "runsc"},
    "runc + tcp, exec tunnel": {"engine_location": "remote"},
}
DIND = "remote engine (dind, TLS)"
DIND_SSH = "remote engine (dind, ssh)"
CLI = shutil.which("jupyter-sandbox") or str(Path(sys.executable).with_name("jupyter-sandbox"))


@contextmanager
def dind_node() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """One Docker-in-Docker node with the kernel image; yields the env pointing at it over
    TLS, and over ssh."""
    name = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="jsbx-bench-dind-") as home:
        env = {**os.environ, "JUPYTER_SANDBOX_HOME": home}
        up = subprocess.run(
            [CLI, "cluster", "up", "--nodes", "1", "--name", name, "--json"],
            capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        try:
            if up.returncode != 0:
                raise RuntimeError(f"cluster up failed: {up.stderr}")
            tls = dict(json.loads(up.stdout)["env"])
            keys = Path(home) / "clusters" / name / "ssh"
            dot_ssh = Path(home) / "user" / ".ssh"  # docker-py reads only ~/.ssh
            dot_ssh.mkdir(parents=True, mode=0o700)
            shutil.copy(keys / "config", dot_ssh / "config")
            shutil.copy(keys / "known_hosts", dot_ssh / "known_hosts")
            address = tls["DOCKER_HOST"].removeprefix("tcp://").rpartition(":")[0]
            ssh = {"DOCKER_HOST": f"ssh://root@{address}", "HOME": str(dot_ssh.parent)}
            yield tls, ssh
        finally:
            subprocess.run(
                [CLI, "cluster", "down", "--name", name], capture_output=True, check=False, env=env
            )


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


def ask_engine_every_time(client: Client) -> None:
    """The liveness check as it was: an engine inspect before every execute."""
    runtime = client._backend.runtime  # type: ignore[attr-defined]

    def is_running(container_id: str) -> bool:
        state = runtime.state(container_id)
        return state is not None and bool(state.running)

    runtime.is_running = is_running


def measure(
    name: str, settings: dict[str, Any], args: argparse.Namespace
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"cold": [], "warm": [], "trip": []}
    with tempfile.TemporaryDirectory(prefix="jsbx-bench-") as home:
        with Client(home=Path(home), **settings) as client:
            if name.endswith(", before"):
                ask_engine_every_time(client)
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
    parser.add_argument("--dind", action="store_true", help="also a remote (dind) engine")
    parser.add_argument("--only", nargs="*", help="only these configurations (names)")
    args = parser.parse_args()
    rows = []
    found_by_name: dict[str, dict[str, list[float]]] = {}
    for name in CONFIGS:
        if not args.only or name in args.only:
            found_by_name[name] = measure(name, CONFIGS[name], args)
    if args.dind:
        with dind_node() as (tls_env, ssh_env):
            for name, remote_env in ((DIND, tls_env), (DIND_SSH, ssh_env)):
                if args.only and name not in args.only:
                    continue
                saved = dict(os.environ)
                os.environ.update(remote_env)  # what Client() reads: DOCKER_HOST, TLS, ~/.ssh
                try:
                    found_by_name[name] = measure(name, {}, args)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
    for name, found in found_by_name.items():
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
