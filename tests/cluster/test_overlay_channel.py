"""Prototype: an API server's side reaches a kernel on another node through the sandbox's own
attachable internal overlay network, with no published port and nothing on a default bridge.

The "gateway" stands for an API server running in a container on the manager node. The kernel
channel here is plain TCP with Jupyter's HMAC signing; the CurveZMQ layer is the channel
branch's (the path and the isolation are what this proves). Figures go to TIMINGS.
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
