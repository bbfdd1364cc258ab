"""The Swarm side of the Swarm backend: one service per sandbox, its task, and the nodes.

A sandbox is a Swarm service (`jsbx-<id>`, one replica, restart policy `none`), so Swarm
picks the node from the sandbox's memory reservation (= its limit: nothing is overcommitted)
and detects a node's failure. The service spec carries every hardening a 1.41 service spec
can (user 1000, read-only root, all capabilities dropped, memory, CPU and pids limits,
ulimits, tmpfs /tmp, the capped log, IPv6 off); what it cannot is applied or checked on the
task's container through its node's engine (`swarm_hardening`). PID 1 is sandbox-init itself,
not an init process (`init` off), as on one host: sandbox code, same uid, cannot kill a
namespace's init.

Network: a service with no network lands on the node's default bridge, and Swarm has no
`none` network ("could not find the corresponding predefined swarm network"). So every
sandbox's task starts on one internal overlay, `PARKING_NETWORK` (no gateway: no route out),
and is disconnected from it on its node before its kernel is given a connection file; a
create returns only once the container holds nothing but `lo`. No user code runs while a task
is parked: its kernel cannot start until the connection file arrives.

Each node's engine is reached at its Swarm address (`Status.Addr`) on 2376 with the manager's
TLS client certificate (one CA, one client certificate for the cluster), one client per node.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.tls
from docker.types import (
    ContainerSpec,
    DriverConfig,
    EndpointSpec,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    TaskTemplate,
)

from jupyter_sandbox._exceptions import APIConnectionError, InternalServerError
from jupyter_sandbox.backends import deadline_file, labels
from jupyter_sandbox.backends.runtime.docker import (
    CONNECTION_FILE,
    KERNEL_MOUNT,
    LOG_MAX_SIZE,
    SANDBOX_UID,
    SKILLS_MOUNT,
)
from jupyter_sandbox.backends.runtime.engine import docker_errors
from jupyter_sandbox.settings import Settings

__all__ = [
    "NODE_PORT",
    "PARKING_NETWORK",
    "TASK_ENDED",
    "SwarmNodes",
    "TaskPlace",
    "service_name",
    "task_template",
    "volume_name",
]

logger = logging.getLogger(__name__)

NODE_PORT = 2376
PARKING_NETWORK = "jsbx-swarm-parking"
"""The internal overlay every sandbox task starts on, and is disconnected from at once."""
PARKING_MTU = 1350
WRITABLE = {"data": "/mnt/data", "workspace": "/workspace"}
KERNEL_ROLE, DEADLINE_ROLE, SKILLS_ROLE = "kernel", "sandbox", "skills"
TASK_ENDED = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")
"""A task's terminal states (every other state is on its way to `running`)."""
STARTING = ("assigned", "accepted", "preparing", "ready", "starting")
"""A task on a node that has not started it yet."""
_NODE_CHECK = 1.0
"""Seconds between looks at the node of a task that is starting (`swarm_waiter.TaskWaiter`)."""


class NodeLostError(InternalServerError):
    """The node Swarm gave a sandbox's task stopped being ready before the task ran."""


def service_name(sandbox_id: str) -> str:
    """The Docker name of a sandbox's service."""
    return f"jsbx-{sandbox_id}"


def volume_name(sandbox_id: str, role: str) -> str:
    """A sandbox's volume on its node (the same names as on one engine)."""
    return f"jsbx-{sandbox_id}-{role}"


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def task_template(
    settings: Settings,
    *,
    sandbox_id: str,
    image: str,
    memory_bytes: int,
    deadline: float,
    sandbox_labels: dict[str, str],
    environment: dict[str, str],
    has_skills: bool,
) -> TaskTemplate:
    """The service's task: the sandbox's container as far as a 1.41 service spec goes."""

    def volume(role: str, target: str, *, no_copy: bool = False) -> Mount:
        tagged = {**sandbox_labels, labels.ROLE: role}
        return Mount(target, volume_name(sandbox_id, role), labels=tagged, no_copy=no_copy)

    mounts = [
        Mount("/tmp", "", type="tmpfs", tmpfs_size=_size(settings.tmp_size), tmpfs_mode=0o1777),
        Mount("/dev/shm", "", type="tmpfs", tmpfs_size=_size(settings.shm_size)),
        *(volume(role, path) for role, path in WRITABLE.items()),
        volume(KERNEL_ROLE, KERNEL_MOUNT),
        volume(DEADLINE_ROLE, deadline_file.MOUNT),
    ]
    if has_skills:  # no copy of the image's folder: its root stays root's
        mounts.append(volume(SKILLS_ROLE, SKILLS_MOUNT, no_copy=True))
    spec = ContainerSpec(
        image,
        # Args only: the image's ENTRYPOINT (sandbox-init) stays PID 1.
        args=[
            "--connection-file",
            CONNECTION_FILE,
            "--deadline",
            f"{deadline:.3f}",
            "--deadline-file",
            deadline_file.CONTAINER_PATH,
        ],
        env=dict(environment),
        user=f"{SANDBOX_UID}:{SANDBOX_UID}",
        labels=sandbox_labels,
        mounts=mounts,
        read_only=True,
        stop_signal="SIGTERM",
        cap_drop=["ALL"],
        init=False,
        sysctls={"net.ipv6.conf.all.disable_ipv6": "1"},
    )
    # Not in docker-py 7's ContainerSpec, in the 1.41 API:
    spec["Ulimits"] = [
        {"Name": "nofile", "Soft": 4096, "Hard": 4096},
        {"Name": "core", "Soft": 0, "Hard": 0},
    ]
    resources = Resources(
        cpu_limit=int(settings.cpus * 1e9),
        mem_limit=memory_bytes,
        mem_reservation=memory_bytes,  # Swarm places by it: a node never holds more than fits
    )
    resources["Limits"]["Pids"] = settings.pids_limit  # API 1.41, not in docker-py
    return TaskTemplate(
        spec,
        resources=resources,
        restart_policy=RestartPolicy("none"),
        networks=[NetworkAttachmentConfig(PARKING_NETWORK)],
        log_driver=DriverConfig(
            "local", {"max-size": LOG_MAX_SIZE, "max-file": "1", "compress": "false"}
        ),
    )


def create_service(
    api: Any, sandbox_id: str, template: TaskTemplate, sandbox_labels: dict[str, str]
) -> str:
    """Create the sandbox's service; its id."""
    created: dict[str, Any] = api.create_service(
        template,
        name=service_name(sandbox_id),
        labels=sandbox_labels,
        endpoint_spec=EndpointSpec(mode="dnsrr"),  # no virtual IP (IPVS): nothing to publish
    )
    return str(created["ID"])


def ensure_parking(api: Any, store_labels: dict[str, str]) -> None:
    """The parking overlay: internal (no gateway, no route out), not attachable."""
    try:
        api.inspect_network(PARKING_NETWORK)
        return
    except docker.errors.NotFound:
        pass
    try:
        api.create_network(
            PARKING_NETWORK,
            driver="overlay",
            internal=True,
            check_duplicate=True,
            labels={**store_labels, labels.ROLE: "parking"},
            options={"com.docker.network.driver.mtu": str(PARKING_MTU)},
        )
    except docker.errors.APIError as exc:
        # Another server made it meanwhile (the engine says 409, or Swarm's manager a 500
        # "name conflicts with an existing object"): use theirs; else the failure stands.
        try:
            api.inspect_network(PARKING_NETWORK)
        except docker.errors.NotFound:
            raise exc from None


@dataclass(frozen=True)
class TaskPlace:
    """Where a sandbox's task runs: its node and its container there."""

    node_id: str
    node: str
    """The node's hostname (as `cluster status` names it)."""
    address: str
    container_id: str


class SwarmNodes:
    """The manager's view of the nodes, and one engine client per node (cached)."""

    def __init__(self, manager: docker.DockerClient) -> None:
        self.manager = manager
        self.api: Any = manager.api  # docker-py's APIClient is untyped
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()

    def node(self, node_id: str) -> dict[str, Any]:
        """The manager's record of a node (raises NotFoundError once it left)."""
        with docker_errors(f"inspecting node {node_id}"):
            node: dict[str, Any] = self.api.inspect_node(node_id)
        return node

    def ready_nodes(self) -> list[dict[str, Any]]:
        """Nodes the manager sees as ready."""
        with docker_errors("listing the swarm's nodes"):
            nodes: list[dict[str, Any]] = self.api.nodes()
        return [n for n in nodes if n["Status"]["State"] == "ready"]

    def place(self, task: dict[str, Any]) -> TaskPlace:
        """Where a running task is."""
        node = self.node(task["NodeID"])
        return TaskPlace(
            node_id=task["NodeID"],
            node=node["Description"]["Hostname"],
            address=node["Status"]["Addr"],
            container_id=task["Status"]["ContainerStatus"]["ContainerID"],
        )

    def client(self, address: str) -> docker.DockerClient:
        """The engine of the node at `address` (port 2376, the manager's TLS client files)."""
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = self._connect(address)
        return client

    def _connect(self, address: str) -> docker.DockerClient:
        cert, verify = self.api.cert, self.api.verify
        if not self.api.base_url.startswith("https://") or not isinstance(cert, tuple):
            raise APIConnectionError(
                "the swarm backend needs a TLS manager (DOCKER_HOST=tcp://...:2376, "
                "DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH) to reach each node's engine"
            )
        client = docker.DockerClient(
            base_url=f"tcp://{address}:{NODE_PORT}",
            tls=docker.tls.TLSConfig(
                client_cert=cert,
                ca_cert=verify if isinstance(verify, str) else None,
                verify=verify,
            ),
            timeout=60,
            version=str(self.api._version),  # the manager's API version
        )
        client.api.trust_env = False  # no REQUESTS_CA_BUNDLE or *_PROXY for a node's engine
        return client

    def close(self) -> None:
        """Close every node client."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
