"""A Swarm cluster beside one node and beside a local sandbox, in one run.

`python benchmarks/cluster.py [--creates 12] [--threads 6] [--rounds 2] [--idle 4]
[--executes 100]` (root, on the engine that holds the kernel image) starts its own local
cluster of three Docker-in-Docker nodes (`LocalCluster`, the kernel image loaded into each),
then measures, with progress lines on stderr:

1. **Creates per second, 1 node against 3 nodes.** `--threads` client threads share one
   `Client(backend="swarm")` (one engine client, as `serve` does) and create `--creates`
   sandboxes as fast as they can; the rate is creates / wall seconds from the first create to
   the last one's return (a create returns once its kernel answers). "1 node" is the same
   cluster with both workers drained (Swarm places only on the manager); "3 nodes" has all
   three active. The two alternate `--rounds` times so the machine's other load falls on both.
   "3 nodes, before" is "3 nodes" with each create polling the manager on its own for its
   task (`PerCreatePolling`, as before `TaskWaiter`); "local docker" is the same burst on
   this host's engine, no cluster: what the same cores give one engine. After a warm-up that
   creates on every node (each node's once-per-image setuid scan is then done), each burst
   also records the backend's steps per create (the median; "rest" is the create's time
   outside them: mostly the kernel's start to its first answer), the manager polls and engine
   API requests per create, the CPU seconds each node, this process and the whole machine
   spent, and the load average.
2. **Execute round trip**, `--executes` `execute("1")` on a sandbox on a worker node, beside
   a sandbox of the local Docker backend on this host, in the same run.
3. **Idle sandboxes per node** at the default tier (1g): `--idle` idle sandboxes on one node
   (the others drained); each one's memory from the node's engine (`docker stats` on the
   node), and the node's own cgroup (memory.stat of the node container, read inside it)
   before and after; and how many Swarm admits on a node (its memory / the reservation).

Prints one JSON object per measure on stdout, and a table. The cluster is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import docker
import requests

from jupyter_sandbox import Client
from jupyter_sandbox.backends import labels
from jupyter_sandbox.backends.cluster_images import NullLoadProgress, copy_images
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.kernel_recipe import default_image_tag
from jupyter_sandbox.backends.node_image import build_node_image
from jupyter_sandbox.backends.swarm_services import TASK_ENDED

MIB = 1 << 20
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


class Requests:
    """Engine API requests made by this process, by host (`requests.Session.send`, which
    every docker-py call goes through), so a burst can say how many a create costs."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        send = requests.Session.send

        def counted(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            host = str(request.url).split("/")[2]
            with self._lock:
                self.counts[host] = self.counts.get(host, 0) + 1
            return send(session, request, **kwargs)

        requests.Session.send = counted  # type: ignore[method-assign,assignment]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


REQUESTS = Requests()


class StepLog(logging.Handler):
    """Collects the Swarm backend's per-create steps (its debug line) by sandbox."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.steps: dict[str, tuple[str, dict[str, float]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("sandbox %s on %s:") and isinstance(record.args, tuple):
            sandbox_id, node, steps = record.args
            self.steps[str(sandbox_id)] = (str(node), dict(steps))  # type: ignore[call-overload]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ while a Client reads them (it reads them once)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def host_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Nodes:
    """The cluster's node containers on the host engine, read from inside (their own cgroup)."""

    def __init__(self, engine: docker.DockerClient, cluster: LocalCluster) -> None:
        self.containers = {n.name: engine.containers.get(n.name) for n in cluster.nodes()}

    def read(self, name: str, path: str) -> str:
        code, output = self.containers[name].exec_run(["cat", path])
        if code != 0:
            raise RuntimeError(f"{name}: cat {path}: {output!r}")
        assert isinstance(output, bytes)
        return output.decode()

    def cpu_seconds(self) -> dict[str, float]:
        return {
            name: int(self.read(name, "/sys/fs/cgroup/cpuacct/cpuacct.usage")) / 1e9
            for name in self.containers
        }

    def memory(self, name: str) -> dict[str, int]:
        """The node cgroup's memory.stat (cgroup v1, the node's own hierarchy)."""
        lines = self.read(name, "/sys/fs/cgroup/memory/memory.stat").splitlines()
        return {key: int(value) for key, value in (line.split() for line in lines)}


class PerCreatePolling:
    """The wait for a task as it was before `TaskWaiter`: each create polls the manager on
    its own every 0.1 s (the "before" bursts put it back)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.polls = 0

    def wait(self, service_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.api.tasks(filters={"service": service_id})
            self.polls += 1
            task = tasks[0] if tasks else None
            state = task["Status"]["State"] if task else "new"
            if state == "running" and task is not None:
                return dict(task)
            if state in TASK_ENDED or time.monotonic() > deadline:
                raise RuntimeError(f"task {state}")
            time.sleep(0.1)


def in_use(stat: dict[str, int]) -> int:
    """A cgroup's memory in use, as `docker stats` counts it (cache less inactive files)."""
    return stat["total_rss"] + stat["total_cache"] - stat.get("total_inactive_file", 0)


def set_availability(manager: docker.DockerClient, active: set[str]) -> None:
    """Nodes named in `active` take tasks; the others are drained."""
    for node in manager.nodes.list():
        name = node.attrs["Description"]["Hostname"]
        spec = dict(node.attrs["Spec"])
        want = "active" if name in active else "drain"
        if spec.get("Availability") != want:
            spec["Availability"] = want
            node.update(spec)


def burst(
    client: Client,
    steps: StepLog,
    nodes: Nodes,
    creates: int,
    threads: int,
    label: str,
) -> tuple[dict[str, Any], list[str]]:
    """`creates` creates from `threads` threads; the figures and the sandboxes' ids."""
    made: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        at = time.monotonic()
        try:
            box = client.containers.create(name=f"bench-{index}")
        except Exception as exc:  # counted and reported
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        with lock:
            made.append(box.id)
            latencies.append(time.monotonic() - at)
            done = len(made)
        progress(f"  {label}: {done}/{creates} created ({latencies[-1]:.1f} s)")

    cpu_nodes, cpu_host, cpu_own = nodes.cpu_seconds(), host_cpu_seconds(), own_cpu_seconds()
    sent = REQUESTS.snapshot()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(creates)))
    wall = time.monotonic() - started
    load = os.getloadavg()[0]
    requests_made = {
        host: count - sent.get(host, 0)
        for host, count in REQUESTS.snapshot().items()
        if count > sent.get(host, 0)
    }
    node_cpu = {k: round(v - cpu_nodes[k], 1) for k, v in nodes.cpu_seconds().items()}
    placed: dict[str, int] = {}
    per_step: dict[str, list[float]] = {}
    for sandbox_id, latency in zip(made, latencies, strict=True):
        node, times = steps.steps.get(sandbox_id, ("local", {}))
        placed[node] = placed.get(node, 0) + 1
        for step, seconds in times.items():
            per_step.setdefault(step, []).append(seconds)
        if times:  # the rest: store, channel, then the kernel's start to its first answer
            per_step.setdefault("rest (kernel to ready)", []).append(latency - sum(times.values()))
    figures = {
        "measure": "create burst",
        "config": label,
        "creates": len(made),
        "errors": errors,
        "threads": threads,
        "wall_s": round(wall, 2),
        "creates_per_s": round(len(made) / wall, 3),
        "create_s_median": round(statistics.median(latencies), 2) if latencies else None,
        "create_s_max": round(max(latencies), 2) if latencies else None,
        "placed": placed,
        "steps_s_median": {k: round(statistics.median(v), 2) for k, v in per_step.items()},
        "cpu_s": {
            "machine": round(host_cpu_seconds() - cpu_host, 1),
            "nodes": node_cpu,
            "this process": round(own_cpu_seconds() - cpu_own, 1),
            "capacity": round(wall * (os.cpu_count() or 1), 1),
        },
        "load_1min": round(load, 1),
        "engine_requests_per_create": {
            host: round(count / max(1, len(made)), 1) for host, count in requests_made.items()
        },
    }
    return figures, made


def delete_all(client: Client, ids: list[str], threads: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(client.containers.delete, ids))
    return time.monotonic() - started


def round_trips(execute: Callable[[], object], count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        at = time.monotonic()
        execute()
        times.append((time.monotonic() - at) * 1000)
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "min_ms": round(ordered[0], 2),
    }


def start_cluster(engine: docker.DockerClient, home: Path) -> LocalCluster:
    cluster = LocalCluster(engine, f"cluster-bench-{uuid4().hex[:4]}", home=home)
    image = build_node_image(engine)
    progress(f"cluster {cluster.name}: 3 nodes up ({image})")
    members = cluster.up(3, image)
    progress(f"  nodes: {cluster.timings.steps}; loading the kernel image into each node")
    clients = {node.name: cluster.client_for(node.address) for node in members}
    try:
        loads = copy_images(engine, [default_image_tag()], clients, NullLoadProgress())
    finally:
        for node_client in clients.values():
            node_client.close()
    progress(f"  images: {loads}")
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=12, help="creates per burst")
    parser.add_argument("--threads", type=int, default=6, help="client threads per burst")
    parser.add_argument("--rounds", type=int, default=2, help="1-node/3-node alternations")
    parser.add_argument("--idle", type=int, default=4, help="idle sandboxes on one node")
    parser.add_argument("--executes", type=int, default=100)
    parser.add_argument(
        "--no-local", dest="local", action="store_false", help="skip the local docker bursts"
    )
    args = parser.parse_args()
    steps = StepLog()
    tasks_logger = logging.getLogger("jupyter_sandbox.backends.swarm_tasks")
    tasks_logger.setLevel(logging.DEBUG)
    tasks_logger.addHandler(steps)
    results: list[dict[str, Any]] = []

    def report(figures: dict[str, Any]) -> None:
        results.append(figures)
        print(json.dumps(figures), flush=True)

    engine = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory(prefix="jsbx-bench-cluster-") as scratch:
        home = Path(scratch)
        local = Client(home=home / "local", backend="docker")
        cluster = start_cluster(engine, home)
        try:
            with environment(cluster.env()):
                swarm = Client(home=home / "swarm", backend="swarm")
            manager = cluster.client_for(cluster.nodes()[0].address)
            names = [node.name for node in cluster.nodes()]
            nodes = Nodes(engine, cluster)
            try:
                measure(args, report, local, swarm, manager, names, nodes, steps)
            finally:
                set_availability(manager, set(names))
                leftover = [c.id for c in swarm.containers.list()]
                if leftover:
                    delete_all(swarm, leftover, args.threads)
                swarm.close()
                local.close()
                manager.close()
        finally:
            progress(f"cluster {cluster.name}: down")
            cluster.down()
            engine.close()
    table(results)


def measure(
    args: argparse.Namespace,
    report: Callable[[dict[str, Any]], None],
    local: Client,
    swarm: Client,
    manager: docker.DockerClient,
    names: list[str],
    nodes: Nodes,
    steps: StepLog,
) -> None:
    # Warm-up: a create on every node (its once-per-image setuid scan), then gone.
    set_availability(manager, set(names))
    progress("warm-up: one create per node")
    figures, made = burst(swarm, steps, nodes, len(names), len(names), "warm-up")
    progress(f"  warm-up placed {figures['placed']}")
    delete_all(swarm, made, args.threads)
    configs = [
        ("1 node", swarm, {names[0]}),
        ("3 nodes", swarm, set(names)),
        ("3 nodes, before", swarm, set(names)),
    ]
    if args.local:  # this host's engine, no cluster: what the same 2 cores give one engine
        configs.append(("local docker", local, set(names)))
    for index in range(args.rounds):
        for label, client, active in configs:
            set_availability(manager, active)
            progress(f"round {index + 1}/{args.rounds}: {label}, {args.creates} creates")
            tasks = swarm._backend.tasks  # type: ignore[attr-defined]
            waiter = tasks.waiter
            if label.endswith(", before"):
                tasks.waiter = PerCreatePolling(tasks._api)
            polls = tasks.waiter.polls
            try:
                figures, made = burst(client, steps, nodes, args.creates, args.threads, label)
            finally:
                polls, tasks.waiter = tasks.waiter.polls - polls, waiter
            if client is swarm:
                figures["task_polls_per_create"] = round(polls / max(1, figures["creates"]), 1)
            figures["round"] = index + 1
            progress(f"  {figures['creates_per_s']} creates/s; deleting")
            figures["delete_all_s"] = round(delete_all(client, made, args.threads), 2)
            report(figures)

    # Execute round trip: a sandbox on a worker, and a local one, side by side.
    set_availability(manager, {names[-1]})
    progress("execute round trip: cluster (a worker) and local")
    remote_box = swarm.containers.create(name="bench-rtt")
    local_box = local.containers.create(name="bench-rtt")
    swarm.containers.execute(remote_box.id, "1")  # the first execute opens the channel
    local.containers.execute(local_box.id, "1")
    trips = {
        "cluster": round_trips(lambda: swarm.containers.execute(remote_box.id, "1"), args.executes),
        "local": round_trips(lambda: local.containers.execute(local_box.id, "1"), args.executes),
    }
    report({"measure": "execute round trip", "executes": args.executes, **trips})
    swarm.containers.delete(remote_box.id)
    local.containers.delete(local_box.id)

    # Idle sandboxes on one node (a worker), from the node's own view.
    worker = names[-1]
    progress(f"idle: {args.idle} sandboxes on {worker}")
    time.sleep(5)
    before = nodes.memory(worker)
    idle = [swarm.containers.create(name=f"bench-idle-{i}").id for i in range(args.idle)]
    time.sleep(15)  # settle: kernels idle, page cache of the first imports in
    after = nodes.memory(worker)
    node_client = swarm._backend.tasks.nodes  # type: ignore[attr-defined]
    place = swarm._backend.tasks.place(idle[0])  # type: ignore[attr-defined]
    engine = node_client.client(place.address)
    stats = []
    for container in engine.containers.list(filters={"label": labels.MANAGED}):
        memory = container.stats(stream=False)["memory_stats"]
        stats.append((memory["usage"] - memory["stats"].get("total_inactive_file", 0)) / MIB)
    info = manager.nodes.get(place.node_id).attrs["Description"]["Resources"]
    reservation = 1 << 30
    per_box_node = (in_use(after) - in_use(before)) / len(idle) / MIB
    report(
        {
            "measure": "idle sandboxes per node",
            "node": worker,
            "idle_sandboxes": len(idle),
            "per_sandbox_mib_docker_stats_median": round(statistics.median(stats), 1),
            "per_sandbox_mib_node_cgroup": round(per_box_node, 1),
            "node_rss_per_sandbox_mib": round(
                (after["total_rss"] - before["total_rss"]) / len(idle) / MIB, 1
            ),
            "node_memory_gib": round(info["MemoryBytes"] / (1 << 30), 1),
            "swarm_admits_at_1g": info["MemoryBytes"] // reservation,
            "fits_by_idle_cost": int(info["MemoryBytes"] / MIB // per_box_node),
        }
    )
    delete_all(swarm, idle, args.threads)


def table(results: list[dict[str, Any]]) -> None:
    head = (
        "config", "round", "creates/s", "wall s", "create s (median, max)", "per node",
        "task polls / engine requests per create", "CPU s: machine / nodes / client / capacity",
        "load",
    )  # fmt: skip
    print("\n| " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|---|---|---|---|---:|")
    for r in results:
        if r["measure"] != "create burst":
            continue
        cpu = r["cpu_s"]
        cells = (
            r["config"], r["round"], r["creates_per_s"], r["wall_s"],
            f"{r['create_s_median']}, {r['create_s_max']}", list(r["placed"].values()),
            f"{r.get('task_polls_per_create', '-')} / "
            f"{sum(r['engine_requests_per_create'].values()):.0f}",
            f"{cpu['machine']} / {sum(cpu['nodes'].values()):.1f} / {cpu['this process']} / "
            f"{cpu['capacity']}",
            r["load_1min"],
        )  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    for config in ("1 node", "3 nodes", "3 nodes, before", "local docker"):
        rates = [r["creates_per_s"] for r in results if r.get("config") == config]
        if rates:
            print(f"{config}: creates/s median {statistics.median(rates):.3f} over {rates}")


if __name__ == "__main__":
    main()
