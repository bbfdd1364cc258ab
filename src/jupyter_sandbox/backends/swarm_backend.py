"""`SwarmBackend`: sandboxes scheduled across a Docker Swarm, one service per sandbox.

Talks to a manager engine named by the usual Docker environment (`DOCKER_HOST=tcp://...:2376`,
`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`: what `cluster up --json` prints as `env`), and to
each node's engine at its Swarm address on 2376 with the same client certificate. Swarm
places each sandbox from its memory reservation and limit (`swarm_services`); what a service
spec cannot carry is applied or checked on the task's container before its kernel starts
(`swarm_hardening`). Then, as for a remote engine (`runtime.remote`): the kernel channel is
tcp + CurveZMQ through exec tunnels on the node's engine (no published port, no shared
network); the connection file, the deadline and skills are put into the sandbox's volumes on
its node through the archive API, and a SIGUSR1 starts the kernel with them (the first start
finds no connection file and waits); files go through the node's archive API.

Allowlist sandboxes are placed by this backend, not by Swarm: the node is chosen from
Swarm's view before the service exists, the store's egress proxy runs on it, and the service
is pinned there (`swarm_egress`).

Refused by name: `runtime="runsc"` unless every ready node's default runtime is runsc
(`runtime`: a service cannot pick one), the ipc channel (`kernel_channel`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends import deadline_file, kernel, kernel_tcp
from jupyter_sandbox.backends.base import (
    KernelChannel,
    KernelEndpoint,
    Leftover,
    NetworkGrant,
    SandboxFiles,
    SandboxSpec,
    SandboxState,
    StorageGrant,
)
from jupyter_sandbox.backends.channel_master import channel_master
from jupyter_sandbox.backends.disk import Disks, remove_folder
from jupyter_sandbox.backends.engine_files import EngineFiles
from jupyter_sandbox.backends.kernel_tunnel import ExecTunnel, TunnelKernelConnection
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.docker import (
    KERNEL_MOUNT,
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    SANDBOX_UID,
)
from jupyter_sandbox.backends.runtime.engine import connect_engine, docker_errors
from jupyter_sandbox.backends.swarm_egress import EgressRequest
from jupyter_sandbox.backends.swarm_tasks import SwarmTasks
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = ["SwarmBackend"]

logger = logging.getLogger(__name__)

_TCP_PREFIX = "tcp-"


class SwarmBackend:
    """Sandboxes as Swarm services on the cluster whose manager the environment names.

    Args:
        settings: the store's settings.
        engine: an open client for a manager (default: one from DOCKER_HOST).
    """

    name = "swarm"

    def __init__(self, settings: Settings, engine: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine = engine or connect_engine()
        self.tasks = SwarmTasks(settings, self.engine)
        self.disks = Disks(settings, is_remote=True)
        self._channel_master: bytes | None = None

    # --- the sandbox itself -------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        """Create the service, wait for Swarm to run its task, harden and check the task's
        container on its node, give it its files, start its kernel; a failure removes all.
        An allowlist sandbox first gets its node, its overlay and its node's proxy."""
        try:
            return self.tasks.start(spec)
        finally:
            # The connection file is in the task's volume on its node now (or the create
            # failed): the host's staging folder (a tmpfs) is done with, so it never outlives
            # the create on the server that made it, whichever server ends the sandbox.
            kernel.remove_socket_dir(Path(spec.channel))

    def state(self, sandbox_id: str) -> SandboxState | None:
        """The task's state as the manager sees it, with its node and, once it is not
        running, the reason (its node is not ready, its task ended)."""
        return self.tasks.state(sandbox_id)

    def oom_kills(self, sandbox_id: str) -> int | None:
        """The sandbox cgroup's oom_kill counter, read in the sandbox by one exec."""
        return self.tasks.oom_kills(sandbox_id)

    def logs(
        self,
        sandbox_id: str,
        since: float,
        *,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_TAIL_BYTES,
    ) -> str:
        """The task container's capped log since `since`, from its node."""
        return self.tasks.logs(sandbox_id, since, tail=tail, max_bytes=max_bytes)

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal PID 1 (sandbox-init) on the task's node."""
        self.tasks.signal(sandbox_id, signal)

    def pause(self, sandbox_id: str) -> None:
        """The cgroup freezer, on the task's node; idempotent."""
        self.tasks.pause(sandbox_id)

    def unpause(self, sandbox_id: str) -> None:
        """Thaw, on the task's node; idempotent."""
        self.tasks.unpause(sandbox_id)

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """The task container's exit code, once the task ended."""
        return self.tasks.exit_code(sandbox_id, since)

    def remove(self, sandbox_id: str) -> None:
        """The service, then its container and volumes on every reachable node; idempotent."""
        self.tasks.remove(sandbox_id)

    def running_sandboxes(self) -> set[str]:
        """This store's sandboxes whose task runs on a ready node."""
        return self.tasks.running()

    def existing(self) -> list[Leftover]:
        """Services, sandbox volumes and containers on every ready node, and the host's
        channel and storage folders."""
        found = self.tasks.leftovers()
        found += self.tasks.egress.leftovers()
        root = self.settings.sockets_root
        channels = sorted(root.iterdir()) if root.is_dir() else []
        found += [Leftover("channel", str(entry), entry.name) for entry in channels]
        found += [Leftover("storage", f.name, f.name) for f in self.disks.entries()]
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one object `existing` reported (an engine kind: all of the sandbox's)."""
        if leftover.kind in ("container", "service", "volume"):
            self.remove(leftover.owner)
        elif leftover.kind == "network":
            self.remove(leftover.owner)
            self.tasks.egress.remove_leftover(leftover.owner)
        elif leftover.kind == "channel":
            kernel.remove_socket_dir(self.settings.sockets_root / leftover.name)
        elif leftover.kind == "storage":
            remove_folder(self.disks.folder(leftover.owner))

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        """Nothing on this host: uploads land on the node (EngineFiles sweeps them)."""
        return []

    # --- the kernel channel ---------------------------------------------------------------
    def channel_location(self, sandbox_id: str) -> str:
        """A host staging folder for the connection file (`<sockets_root>/tcp-<id>`), removed
        once `start` has put the file on the node."""
        if self.settings.kernel_channel == "ipc":
            raise BadRequestError(
                "Invalid kernel_channel: ipc sockets cannot reach a Swarm node; use 'tcp' or "
                "'auto'",
                param="kernel_channel",
            )
        return str(self.settings.sockets_root / f"{_TCP_PREFIX}{sandbox_id}")

    def create_channel(self, location: str, key: str) -> None:
        """The staging folder and its connection file with the sandbox's Curve keys."""
        info = kernel_tcp.tcp_connection_info(key, self._curve_keys(_sandbox(location)))
        kernel.create_socket_dir(Path(location), key, KERNEL_MOUNT, SANDBOX_UID, info)

    def remove_channel(self, location: str) -> None:
        """Delete the staging folder; idempotent."""
        kernel.remove_socket_dir(Path(location))

    def kernel_endpoint(self, location: str, key: str) -> KernelEndpoint:
        """The kernel's loopback ports inside the sandbox, with its Curve keys."""
        keys = self._curve_keys(_sandbox(location))
        return KernelEndpoint(
            transport="tcp",
            ip=kernel_tcp.LOOPBACK,
            ports=dict(kernel_tcp.TCP_PORTS),
            key=key,
            folder=Path(location),
            curve_server_key=keys.server_public.decode(),
            curve_public_key=keys.client_public.decode(),
            curve_secret_key=keys.client_secret.decode(),
        )

    def kernel_listening(self, endpoint: KernelEndpoint) -> bool:
        """Whether the task runs on a ready node (the kernel's loopback is out of reach)."""
        state = self.state(_sandbox(str(endpoint.folder)))
        return state is not None and state.running

    def connect_kernel(self, endpoint: KernelEndpoint, max_message: int) -> KernelChannel:
        """CurveZMQ through an exec tunnel on the task's node."""
        sandbox_id = _sandbox(str(endpoint.folder))
        api, container = self.tasks.node_api(sandbox_id)
        tunnel = ExecTunnel(
            api, container, kernel_tcp.TCP_PORTS, connect_wait=self.settings.start_timeout
        )
        return TunnelKernelConnection(
            tunnel, endpoint.key, self._curve_keys(sandbox_id), max_message
        )

    def reset_channel(self, endpoint: KernelEndpoint) -> None:
        """Nothing to delete (tcp)."""

    def _curve_keys(self, sandbox_id: str) -> kernel_tcp.CurveKeys:
        kernel_tcp.require_curve()
        if self._channel_master is None:  # the store's for a shared store: any server's
            self._channel_master = channel_master(self.settings)
        return kernel_tcp.sandbox_keys(self._channel_master, sandbox_id)

    # --- the hard deadline ----------------------------------------------------------------
    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        """Before start: nothing (the spec's deadline is in the task's arguments and put by
        `start`); after: into the task's deadline volume, through its node's archive API."""
        if self.tasks.task(sandbox_id) is None:
            return
        api, container = self.tasks.node_api(sandbox_id)
        with docker_errors(f"setting the deadline of sandbox {sandbox_id}"):
            remote.put(api, container, deadline_file.MOUNT, remote.deadline_tar(deadline))

    def remove_deadline(self, sandbox_id: str) -> None:
        """Nothing on this host (the deadline volume goes with the sandbox)."""

    # --- storage and files ----------------------------------------------------------------
    def create_storage(self, sandbox_id: str) -> StorageGrant:
        """A host folder for skills (copied to the node at start); files live in volumes."""
        storage = self.disks.create(sandbox_id)
        return StorageGrant(
            sandbox_id=sandbox_id,
            kind="volume",
            skills_folder=storage.skills,
            files_before_start=False,
        )

    def remove_storage(self, sandbox_id: str) -> None:
        """Delete the host folder; idempotent."""
        self.disks.remove(sandbox_id)

    def files(self, sandbox_id: str, storage_kind: str | None) -> SandboxFiles:
        """The archive API of the task's node."""
        place = self.tasks.place(sandbox_id)
        return EngineFiles(
            self.tasks.nodes.client(place.address),
            place.container_id,
            spool=self.settings.home / "blobs" / "tmp",
        )

    # --- network --------------------------------------------------------------------------
    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        """Nothing to refuse: each node's proxy files are written with their owners by tar."""

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        """The request, kept for `start`: the node (hence the proxy) is chosen there, from the
        memory reservation; the proxy's environment is added to the task's there too."""
        return NetworkGrant(sandbox_id, {}, EgressRequest(policy, dict(labels), deadline))

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Unplug the node's proxy, drop the sandbox's list and secrets (the proxy goes with
        its node's last allowlist sandbox), remove the overlay."""
        self.tasks.egress.release(sandbox_id, needed)

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        """Each ready node's proxy up while its sandboxes need it, gone otherwise."""
        return self.tasks.egress.reconcile(needed)

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        """The decisions of the proxy on the sandbox's node."""
        return self.tasks.egress.log(sandbox_id)

    def close(self) -> None:
        """Close the node clients, and the manager's if this backend opened it."""
        self.tasks.nodes.close()
        if self._owns_engine:
            self.engine.close()


def _sandbox(location: str) -> str:
    name = Path(location).name
    if not name.startswith(_TCP_PREFIX):
        raise TypeError(f"not a channel of the swarm backend: {location}")
    return name[len(_TCP_PREFIX) :]
