"""Prototypes for the Swarm backend, on a two-node local cluster.

1. An API server's side reaches a kernel on another node through the sandbox's own attachable
   internal overlay network, with no published port and nothing on a default bridge. The
   "API server" is a container on the manager; the channel is plain TCP with Jupyter's HMAC
   signing (the CurveZMQ layer is the channel branch's: the path and the isolation are what
   this proves).
2. What a Swarm service carries to its container on this engine, and what it does not.

Figures go to TIMINGS.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import docker
import pytest
from docker.models.containers import Container
from docker.models.services import Service

from jupyter_sandbox.backends.cluster_network import OVERLAY_MTU, create_sandbox_overlay
from jupyter_sandbox.backends.cluster_nodes import CLUSTER, LocalCluster
from tests.cluster.conftest import TIMINGS
from tests.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]

PORTS = {"shell_port": 5555, "iopub_port": 5556, "stdin_port": 5557, "control_port": 5558}
PORTS["hb_port"] = 5559

# Runs in the gateway container: connect over the overlay, execute, time round trips.
PROBE = """
import json, statistics, sys, time
from jupyter_client import BlockingKernelClient
info = json.loads(sys.argv[1])
kc = BlockingKernelClient()
kc.load_connection_info(info)
kc.start_channels()
started = time.monotonic()
kc.wait_for_ready(timeout=120)
ready = time.monotonic() - started
outputs = []
kc.execute_interactive(
    "import socket; print(socket.gethostname(), 6 * 7)",
    timeout=60,
    output_hook=lambda m: outputs.append(m["content"].get("text", "")),
)
rounds = []
for _ in range(30):
    t = time.monotonic()
    kc.execute_interactive("pass", timeout=30, output_hook=lambda m: None)
    rounds.append((time.monotonic() - t) * 1000)
print(json.dumps({"ready_s": ready, "output": "".join(outputs),
                  "rtt_ms_median": statistics.median(rounds), "rtt_ms_p90": sorted(rounds)[26]}))
"""
# Runs on a node's default bridge: knock on the kernel's shell port. A TCP connect alone
# proves nothing here (this machine's uplink accepts any TCP connection); a ZeroMQ socket
# greets first with ZMTP's signature (0xFF, 8 bytes, 0x7F), so only the kernel says "zmtp".
KNOCK = """
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    greeting = s.recv(10)
    zmtp = len(greeting) == 10 and greeting[0] == 0xFF and greeting[9] == 0x7F
    print("zmtp" if zmtp else "no greeting")
except OSError as exc:
    print("no kernel", type(exc).__name__)
"""
OUTBOUND = """
import socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3)
    print("connected")
except OSError as exc:
    print("unreachable" if exc.errno == 101 else repr(exc))
"""


def _connection_file(key: str) -> bytes:
    info = {**PORTS, "ip": "0.0.0.0", "transport": "tcp", "key": key}
    info["signature_scheme"] = "hmac-sha256"
    return json.dumps(info).encode()


def _tar_one(name: str, data: bytes, uid: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o600, uid, uid
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _probe(container: Container, info: dict[str, object]) -> dict[str, Any]:
    """Run PROBE in `container` against the kernel `info` names."""
    code, output = container.exec_run(["python3", "-c", PROBE, json.dumps(info)], demux=True)
    stdout, stderr = output
    assert code == 0, (stderr or b"").decode()
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


def _start_kernel(node: docker.DockerClient, network: str, key: str) -> Container:
    """A hardened kernel container joined only to `network`."""
    container = node.containers.create(
        IMAGE,
        command=[
            "--connection-file",
            "/run/kernel/connection.json",
            f"--deadline={time.time() + 900:.0f}",  # the hard lifetime, as on one host
        ],
        labels={CLUSTER: "probe"},
        network=network,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        # Not read_only: the connection file is copied in before start (no host folder can be
        # mounted on a remote node; a Swarm service would get it as a tmpfs secret instead).
        tmpfs={"/tmp": "size=64m", "/workspace": "size=16m"},
        mem_limit="512m",
        pids_limit=256,
    )
    container.put_archive("/run/kernel", _tar_one("connection.json", _connection_file(key), 1000))
    container.start()
    return container


@pytest.fixture
def overlay(
    two_nodes: LocalCluster,
) -> Iterator[tuple[str, docker.DockerClient, docker.DockerClient]]:
    manager_node, worker_node = two_nodes.nodes()
    manager = two_nodes.client_for(manager_node.address)
    worker = two_nodes.client_for(worker_node.address)
    started = time.monotonic()
    network = create_sandbox_overlay(manager, uuid4().hex[:12], {CLUSTER: "probe"})
    with TIMINGS.open("a") as log:
        log.write(json.dumps({"overlay create s": round(time.monotonic() - started, 3)}) + "\n")
    try:
        yield str(network.name), manager, worker
    finally:
        for client in (worker, manager):
            for container in client.containers.list(all=True, filters={"label": CLUSTER}):
                container.remove(force=True)
        network.remove()
        manager.close()
        worker.close()


def test_gateway_on_the_manager_reaches_a_kernel_on_the_worker_over_the_overlay(
    overlay: tuple[str, docker.DockerClient, docker.DockerClient],
) -> None:
    network, manager, worker = overlay
    key = secrets.token_hex(32)
    started = time.monotonic()
    kernel = _start_kernel(worker, network, key)
    kernel.reload()
    kernel_started = time.monotonic() - started
    endpoint = kernel.attrs["NetworkSettings"]["Networks"]
    assert list(endpoint) == [network]  # the overlay only: no bridge, no host network
    address = endpoint[network]["IPAddress"]
    info = {**json.loads(_connection_file(key)), "ip": address}

    # The API server's stand-in: a container on the manager, on the cluster's ordinary bridge
    # (where clients would reach it), joined to the sandbox's overlay when the sandbox is made.
    api_server = manager.containers.run(
        IMAGE,
        entrypoint=["sleep", "600"],
        labels={CLUSTER: "probe"},
        cap_drop=["ALL"],
        detach=True,
    )
    started = time.monotonic()
    manager.networks.get(network).connect(api_server)
    connect_s = time.monotonic() - started
    result = _probe(api_server, info)
    assert result["output"] == f"{kernel.attrs['Config']['Hostname']} 42\n"
    # Baseline: the same channel from a container on the kernel's own node.
    neighbour = worker.containers.run(
        IMAGE, entrypoint=["sleep", "600"], labels={CLUSTER: "probe"}, network=network, detach=True
    )
    same_node = _probe(neighbour, info)
    # The overlay is internal: no route out of it (the egress proxy would be the only way).
    _, output = neighbour.exec_run(["python3", "-c", OUTBOUND])
    assert output.decode().strip() == "unreachable", output.decode()
    started = time.monotonic()
    manager.networks.get(network).disconnect(api_server)
    disconnect_s = time.monotonic() - started

    # Isolation: the same node's default bridge cannot reach the kernel's port.
    knock = worker.containers.run(
        IMAGE,
        entrypoint=["python3", "-c", KNOCK, address, str(PORTS["shell_port"])],
        labels={CLUSTER: "probe"},
        remove=False,
        detach=True,
    )
    knock.wait(timeout=60)
    assert not knock.logs().decode().startswith("zmtp"), knock.logs().decode()
    greeter = manager.containers.run(
        IMAGE,
        entrypoint=["python3", "-c", KNOCK, address, str(PORTS["shell_port"])],
        labels={CLUSTER: "probe"},
        network=network,
        detach=True,
    )
    greeter.wait(timeout=60)
    assert greeter.logs().decode().startswith("zmtp"), "the knock itself is broken"

    mtu = worker.networks.get(network).attrs["Options"]["com.docker.network.driver.mtu"]
    assert mtu == str(OVERLAY_MTU)
    with TIMINGS.open("a") as log:
        log.write(
            json.dumps(
                {
                    "kernel start on worker s": round(kernel_started, 2),
                    "api server connect s": round(connect_s, 3),
                    "api server disconnect s": round(disconnect_s, 3),
                    "rtt same-node ms median": round(same_node["rtt_ms_median"], 2),
                    "kernel ready s": round(result["ready_s"], 2),
                    "rtt cross-node ms median": round(result["rtt_ms_median"], 2),
                    "rtt cross-node ms p90": round(result["rtt_ms_p90"], 2),
                }
            )
            + "\n"
        )


def _service_task(service: Service, deadline: float) -> dict[str, Any]:
    """The service's one task once it left the pipeline's early states (or at the deadline)."""
    waiting = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "starting")
    while True:
        tasks = service.tasks()
        if tasks and (tasks[0]["Status"]["State"] not in waiting or time.monotonic() > deadline):
            task: dict[str, Any] = tasks[0]
            return task
        time.sleep(0.2)  # Swarm has no event for a task's state on a worker; poll its record


def test_what_a_swarm_service_applies_on_this_engine(
    overlay: tuple[str, docker.DockerClient, docker.DockerClient], two_nodes: LocalCluster
) -> None:
    """Which sandbox hardening a service spec carries to its container on engine 20.10, and
    what it does not: the Swarm backend must replace or refuse the difference."""
    network, manager, _ = overlay
    spec = docker.types.ContainerSpec(
        IMAGE,
        command=["sleep", "300"],  # a service's Command replaces the entrypoint (sandbox-init)
        user="1000:1000",
        read_only=True,
        init=True,
        cap_drop=["ALL"],
        labels={CLUSTER: "probe"},
        mounts=[docker.types.Mount("/tmp", "", type="tmpfs", tmpfs_size=64 << 20)],
    )
    spec["Ulimits"] = [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]  # not in docker-py
    spec["Privileges"] = {"NoNewPrivileges": True}  # API 1.44+; 20.10 is 1.41
    resources = docker.types.Resources(cpu_limit=10**9, mem_limit=1 << 30, mem_reservation=1 << 29)
    resources["Limits"]["Pids"] = 256  # not in docker-py
    clients = {node.name: two_nodes.client_for(node.address) for node in two_nodes.nodes()}
    found: dict[str, dict[str, Any]] = {}
    try:
        for name, networks in (("overlay", [network]), ("none", [])):
            template = docker.types.TaskTemplate(
                spec,
                resources=resources,
                restart_policy=docker.types.RestartPolicy("none"),
                networks=[docker.types.NetworkAttachmentConfig(n) for n in networks],
            )
            started = time.monotonic()
            created = manager.api.create_service(
                template,
                name=f"probe-{name}-{uuid4().hex[:6]}",
                labels={CLUSTER: "probe"},
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),  # no IPVS here
            )
            service = manager.services.get(created["ID"])
            try:
                task = _service_task(service, time.monotonic() + 120)
                node = manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
                container = clients[node].containers.get(
                    task["Status"]["ContainerStatus"]["ContainerID"]
                )
                assert task["Status"]["State"] == "running", container.logs().decode()
                found[name] = {
                    "seconds": time.monotonic() - started,
                    "host": container.attrs["HostConfig"],
                    "networks": list(container.attrs["NetworkSettings"]["Networks"]),
                }
            finally:
                service.remove()
    finally:
        for client in clients.values():
            client.close()
    host = found["overlay"]["host"]
    # Carried over:
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is True
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (1 << 30, 10**9, 256)
    assert host["Ulimits"] == [{"Name": "nofile", "Hard": 1024, "Soft": 1024}]
    # Not carried over by engine 20.10: the backend must refuse or replace these.
    assert not host["SecurityOpt"]  # no no-new-privileges
    assert host["MemorySwap"] == 2 << 30  # swap allowed: cannot be set equal to memory
    assert host["CpuShares"] == 0  # no CPU weight; only the NanoCpus ceiling
    assert host["Runtime"] == "runc"  # no per-service runtime: runsc only as the node default
    assert found["overlay"]["networks"] == [network]
    # A service without networks lands on the node's default bridge: never use zero networks.
    assert found["none"]["networks"] == ["bridge"]
    with TIMINGS.open("a") as log:
        log.write(
            json.dumps(
                {
                    f"service {k} create-to-running s": round(v["seconds"], 2)
                    for k, v in found.items()
                }
            )
            + "\n"
        )


def _wait_nodes_ready(manager: docker.DockerClient, count: int, deadline: float) -> None:
    """Every node `ready` and `active` as the manager sees it (a node busy under load may be
    marked down for a heartbeat or two; placement is only meaningful once all are back)."""
    while True:
        nodes = manager.nodes.list()
        ready = [
            n
            for n in nodes
            if n.attrs["Status"]["State"] == "ready" and n.attrs["Spec"]["Availability"] == "active"
        ]
        if len(ready) == count:
            return
        assert time.monotonic() < deadline, [(n.attrs["Status"], n.attrs["Spec"]) for n in nodes]
        time.sleep(0.5)  # node state has no event on this API; poll the manager's record


def test_swarm_places_by_memory_reservation_and_holds_what_does_not_fit(
    two_nodes: LocalCluster,
) -> None:
    manager = two_nodes.client_for(two_nodes.nodes()[0].address)
    _wait_nodes_ready(manager, len(two_nodes.nodes()), time.monotonic() + 120)
    memory = min(n.attrs["Description"]["Resources"]["MemoryBytes"] for n in manager.nodes.list())
    reservation = int(memory / 2.5)  # two fit on a node, a third does not
    services = []
    try:
        for index in range(5):
            created = manager.api.create_service(
                docker.types.TaskTemplate(
                    docker.types.ContainerSpec(IMAGE, command=["sleep", "300"]),
                    resources=docker.types.Resources(mem_reservation=reservation),
                    restart_policy=docker.types.RestartPolicy("none"),
                ),
                name=f"place-{index}-{uuid4().hex[:6]}",
                labels={CLUSTER: "probe"},
            )
            services.append(manager.services.get(created["ID"]))
        tasks = [
            _service_task(s, time.monotonic() + (120 if i < 4 else 10))
            for i, s in enumerate(services)
        ]
        states = [(t["Status"]["State"], t["Status"].get("Err", "")) for t in tasks]
        assert [state for state, _ in states] == ["running"] * 4 + ["pending"], states
        hosts = sorted(
            manager.nodes.get(t["NodeID"]).attrs["Description"]["Hostname"] for t in tasks[:4]
        )
        assert hosts == sorted([node.name for node in two_nodes.nodes()] * 2)
        assert "insufficient resources" in tasks[4]["Status"]["Err"]
    finally:
        for service in services:
            service.remove()
        manager.close()
