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

Refused by name: allowlist networks (`network_policy`: the egress proxy is not yet on the
nodes), `runtime="runsc"` unless every ready node's default runtime is runsc (`runtime`: a
service cannot pick one), the ipc channel (`kernel_channel`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

from jupyter_sandbox._exceptions import APIError, BadRequestError, NotFoundError
from jupyter_sandbox.backends import deadline_file, gvisor, kernel, kernel_tcp, labels
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
from jupyter_sandbox.backends.disk import Disks, remove_folder
from jupyter_sandbox.backends.engine_files import EngineFiles
from jupyter_sandbox.backends.kernel_tunnel import ExecTunnel, TunnelKernelConnection
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.docker import (
    KERNEL_MOUNT,
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    SANDBOX_UID,
    SKILLS_MOUNT,
)
from jupyter_sandbox.backends.runtime.engine import connect_engine, docker_errors
from jupyter_sandbox.backends.swarm_hardening import NodeChecks, harden
from jupyter_sandbox.backends.swarm_services import (
    TASK_ENDED,
    SwarmNodes,
    TaskPlace,
    create_service,
    ensure_parking,
    service_name,
    task_template,
    wait_for_task,
)
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
        self.nodes = SwarmNodes(self.engine)
        self._api: Any = self.engine.api  # docker-py's APIClient is untyped
        self.disks = Disks(settings, is_remote=True)
        self._checks = NodeChecks()
        self._places: dict[str, TaskPlace] = {}

    # --- the sandbox itself -------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        """Create the service, wait for Swarm to run its task, harden and check the task's
        container on its node, give it its files, start its kernel; a failure removes all."""
        if spec.network is not None:
            raise self._allowlist_refused()
        self._check_runtime()
        has_skills = spec.storage is not None and spec.mount_skills
        template = task_template(
            self.settings,
            sandbox_id=spec.sandbox_id,
            image=spec.image,
            memory_bytes=spec.memory_bytes,
            deadline=spec.deadline,
            sandbox_labels=spec.labels,
            environment=spec.environment,
            has_skills=has_skills,
        )
        api = self._api
        try:
            with docker_errors(f"creating sandbox {spec.sandbox_id}"):
                self._check_image(spec.image)
                ensure_parking(api, self._store_labels())
                service_id = create_service(api, spec.sandbox_id, template, spec.labels)
                task = wait_for_task(api, spec.sandbox_id, self.settings.start_timeout)
                place = self.nodes.place(task)
                self._places[spec.sandbox_id] = place
                node = self.nodes.client(place.address).api
                info = harden(
                    node,
                    place.container_id,
                    self.settings,
                    spec.memory_bytes,
                    self.settings.runtime,
                )
                self._checks.scan_image(node, place.node_id, place.container_id, info["Image"])
                self._put_kernel_files(node, place.container_id, spec, has_skills)
                node.kill(place.container_id, signal="SIGUSR1")  # the kernel starts now
            return service_id
        except BaseException:
            self.remove(spec.sandbox_id)
            raise

    def _check_image(self, image: str) -> None:
        """The manager must have the kernel image (the nodes are loaded alike)."""
        try:
            self._api.inspect_image(image)
        except docker.errors.ImageNotFound as exc:
            hint = remote.image_hint(image, str(self._api.base_url))
            raise NotFoundError(hint, param="image") from exc

    def _put_kernel_files(self, node: Any, container: str, spec: SandboxSpec, skills: bool) -> None:
        """The deadline, the skills, then the connection file, into the task's volumes."""
        remote.put(node, container, deadline_file.MOUNT, remote.deadline_tar(spec.deadline))
        if skills and spec.storage is not None:
            remote.put(node, container, SKILLS_MOUNT, remote.skills_tar(spec.storage.skills_folder))
        connection = remote.connection_tar(Path(spec.channel) / "connection.json", SANDBOX_UID)
        remote.put(node, container, KERNEL_MOUNT, connection)

    def _check_runtime(self) -> None:
        """A service cannot choose a runtime: runsc only if it is every node's default."""
        runtime = self.settings.runtime
        if runtime is None or runtime == "runc":
            return
        defaults = {
            node["Description"]["Hostname"]: self._node_default_runtime(node)
            for node in self.nodes.ready_nodes()
        }
        if runtime not in gvisor.KNOWN_RUNTIMES or set(defaults.values()) != {runtime}:
            raise BadRequestError(
                f"Invalid runtime: {runtime!r}: a Swarm service cannot choose its runtime, so "
                "it must be the default runtime of every node (`default-runtime` in each "
                f"node's /etc/docker/daemon.json); the nodes' defaults are {defaults}",
                param="runtime",
            )

    def _node_default_runtime(self, node: dict[str, Any]) -> str:
        with docker_errors("asking a node for its runtimes"):
            info = self.nodes.client(node["Status"]["Addr"]).info()
        return str(info.get("DefaultRuntime", "runc"))

    def _store_labels(self) -> dict[str, str]:
        return {labels.MANAGED: "true", labels.STORE: self.settings.store_id}

    def _place(self, sandbox_id: str) -> TaskPlace:
        """Where the sandbox's task runs (asked once, then remembered)."""
        place = self._places.get(sandbox_id)
        if place is None:
            task = self._task(sandbox_id)
            if task is None or not task["Status"].get("ContainerStatus", {}).get("ContainerID"):
                raise NotFoundError(f"sandbox {sandbox_id} has no container", param="container_id")
            place = self._places[sandbox_id] = self.nodes.place(task)
        return place

    def _task(self, sandbox_id: str) -> dict[str, Any] | None:
        try:
            with docker_errors(f"inspecting sandbox {sandbox_id}"):
                tasks: list[dict[str, Any]] = self._api.tasks(
                    filters={"service": service_name(sandbox_id)}
                )
        except NotFoundError:  # no such service
            return None
        return tasks[0] if tasks else None

    def _node_api(self, sandbox_id: str) -> tuple[Any, str]:
        place = self._place(sandbox_id)
        return self.nodes.client(place.address).api, place.container_id

    def state(self, sandbox_id: str) -> SandboxState | None:
        """The task's state as the manager sees it, with its node; not running, with the
        reason, once the task ended or its node is not ready."""
        task = self._task(sandbox_id)
        if task is None:
            return None
        status = task["Status"]
        container = (status.get("ContainerStatus") or {}).get("ContainerID") or ""
        reason = None
        node_name = None
        if task.get("NodeID"):
            try:
                node = self.nodes.node(task["NodeID"])
            except NotFoundError:
                node = None
            if node is None:
                reason = "its node left the swarm"
            else:
                node_name = node["Description"]["Hostname"]
                if node["Status"]["State"] != "ready":
                    reason = f"its node {node_name} is {node['Status']['State']}"
        if reason is None and status["State"] in TASK_ENDED:
            why = status.get("Err") or status.get("Message") or ""
            code = (status.get("ContainerStatus") or {}).get("ExitCode")
            reason = f"its task is {status['State']} ({why}; exit code {code})"
        return SandboxState(
            docker_id=container or task["ID"],
            running=reason is None and status["State"] == "running",
            oom_kills=None,
            node=node_name,
            reason=reason,
        )

    def oom_kills(self, sandbox_id: str) -> int | None:
        """The sandbox cgroup's oom_kill counter, read in the sandbox by one exec."""
        try:
            api, container = self._node_api(sandbox_id)
        except APIError:
            return None
        return remote.oom_kills(api, container)

    def logs(
        self,
        sandbox_id: str,
        since: float,
        *,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_TAIL_BYTES,
    ) -> str:
        """The task container's capped log since `since`, from its node."""
        try:
            api, container = self._node_api(sandbox_id)
            with docker_errors(f"reading the log of sandbox {sandbox_id}"):
                raw = api.logs(container, tail=tail, since=since)
        except APIError:
            return ""
        return bytes(raw)[-max_bytes:].decode("utf-8", "replace")

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal PID 1 (sandbox-init) on the task's node."""
        api, container = self._node_api(sandbox_id)
        with docker_errors(f"signalling sandbox {sandbox_id}"):
            api.kill(container, signal=signal)

    def pause(self, sandbox_id: str) -> None:
        """The cgroup freezer, on the task's node; idempotent."""
        api, container = self._node_api(sandbox_id)
        with docker_errors(f"pausing sandbox {sandbox_id}"):
            try:
                api.pause(container)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "already paused" not in str(exc):
                    raise

    def unpause(self, sandbox_id: str) -> None:
        """Thaw, on the task's node; idempotent."""
        api, container = self._node_api(sandbox_id)
        with docker_errors(f"resuming sandbox {sandbox_id}"):
            try:
                api.unpause(container)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "not paused" not in str(exc):
                    raise

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """The task container's exit code, once the task ended."""
        try:
            task = self._task(sandbox_id)
        except APIError:
            return None
        if task is None or task["Status"]["State"] not in TASK_ENDED:
            return None
        code = (task["Status"].get("ContainerStatus") or {}).get("ExitCode")
        return int(code) if isinstance(code, int) else None

    def remove(self, sandbox_id: str) -> None:
        """Remove the service, then its container and volumes on every reachable node;
        idempotent (a node that is down keeps its volumes for reconcile)."""
        place = self._places.pop(sandbox_id, None)
        with (
            docker_errors(f"removing sandbox {sandbox_id}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self._api.remove_service(service_name(sandbox_id))
        selector = {"label": [f"{labels.CONTAINER_ID}={sandbox_id}"]}
        for address in self._node_addresses(place):
            try:
                api = self.nodes.client(address).api
                for found in api.containers(all=True, filters=selector):
                    api.remove_container(found["Id"], force=True, v=True)
                for volume in api.volumes(filters=selector).get("Volumes") or []:
                    _remove_volume(api, volume["Name"])
            except docker.errors.NotFound:
                continue
            except (docker.errors.DockerException, OSError) as exc:
                logger.warning("sandbox %s: node %s not cleaned: %s", sandbox_id, address, exc)

    def _node_addresses(self, place: TaskPlace | None) -> list[str]:
        """The task's node first (if known), then every other ready node."""
        addresses = [place.address] if place else []
        try:
            addresses += [n["Status"]["Addr"] for n in self.nodes.ready_nodes()]
        except APIError as exc:
            logger.warning("the swarm's nodes are unknown: %s", exc)
        return list(dict.fromkeys(addresses))

    def running_sandboxes(self) -> set[str]:
        """This store's sandboxes whose task runs on a ready node."""
        return {owner for owner, live in self._services().items() if live}

    def _services(self) -> dict[str, bool]:
        """This store's sandbox services -> whether the task runs (or starts) on a ready node."""
        selector = {"label": [f"{labels.MANAGED}=true", f"{labels.STORE}={self.settings.store_id}"]}
        with docker_errors("listing sandboxes"):
            services = self._api.services(filters=selector)
            tasks = self._api.tasks(filters={"desired-state": "running"})
        ready = {n["ID"] for n in self.nodes.ready_nodes()}
        by_service = {
            t["ServiceID"]: t for t in tasks if t.get("NodeID", "") in ready or not t.get("NodeID")
        }
        found: dict[str, bool] = {}
        for service in services:
            owner = service["Spec"].get("Labels", {}).get(labels.CONTAINER_ID, "")
            task = by_service.get(service["ID"])
            live = task is not None and task["Status"]["State"] not in TASK_ENDED
            if owner:
                found[owner] = live
        return found

    def existing(self) -> list[Leftover]:
        """Services (a live task: `container`; an ended one: `service`), sandbox volumes and
        containers on every ready node, and the host's channel and storage folders."""
        found = [
            Leftover("container" if live else "service", owner, service_name(owner))
            for owner, live in self._services().items()
        ]
        seen = {leftover.owner for leftover in found}
        selector = {"label": [f"{labels.MANAGED}=true", f"{labels.STORE}={self.settings.store_id}"]}
        for address in self._node_addresses(None):
            try:
                api = self.nodes.client(address).api
                volumes = api.volumes(filters=selector).get("Volumes") or []
                containers = api.containers(all=True, filters=selector)
            except (docker.errors.DockerException, OSError) as exc:
                logger.warning("node %s not listed: %s", address, exc)
                continue
            owners = [(v.get("Labels") or {}).get(labels.CONTAINER_ID, "") for v in volumes]
            owners += [(c.get("Labels") or {}).get(labels.CONTAINER_ID, "") for c in containers]
            for owner in owners:
                if owner and owner not in seen:
                    seen.add(owner)
                    found.append(Leftover("volume", owner, owner))
        root = self.settings.sockets_root
        channels = sorted(root.iterdir()) if root.is_dir() else []
        found += [Leftover("channel", str(entry), entry.name) for entry in channels]
        found += [Leftover("storage", f.name, f.name) for f in self.disks.entries()]
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one object `existing` reported (an engine kind: all of the sandbox's)."""
        if leftover.kind in ("container", "service", "volume"):
            self.remove(leftover.owner)
        elif leftover.kind == "channel":
            kernel.remove_socket_dir(self.settings.sockets_root / leftover.name)
        elif leftover.kind == "storage":
            remove_folder(self.disks.folder(leftover.owner))

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        """Nothing on this host: uploads land on the node (EngineFiles sweeps them)."""
        return []

    # --- the kernel channel ---------------------------------------------------------------
    def channel_location(self, sandbox_id: str) -> str:
        """A host staging folder for the connection file (`<sockets_root>/tcp-<id>`)."""
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
        api, container = self._node_api(sandbox_id)
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
        return kernel_tcp.sandbox_keys(kernel_tcp.master_key(self.settings.home), sandbox_id)

    # --- the hard deadline ----------------------------------------------------------------
    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        """Before start: nothing (the spec's deadline is in the task's arguments and put by
        `start`); after: into the task's deadline volume, through its node's archive API."""
        if self._task(sandbox_id) is None:
            return
        api, container = self._node_api(sandbox_id)
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
        place = self._place(sandbox_id)
        return EngineFiles(
            self.nodes.client(place.address),
            place.container_id,
            spool=self.settings.home / "blobs" / "tmp",
        )

    # --- network --------------------------------------------------------------------------
    def _allowlist_refused(self) -> BadRequestError:
        # The seam for the egress helper: attach_network would start the sandbox's proxy on
        # its node and return a grant `start` plugs in (instead of refusing here).
        return BadRequestError(
            "Invalid network_policy: allowlist networks are not supported by the swarm "
            "backend yet (the egress proxy does not run on the nodes); use "
            "{'type': 'disabled'}",
            param="network_policy",
        )

    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        """Refuse every allowlist (for now)."""
        raise self._allowlist_refused()

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        """Refused (`check_network` refuses first)."""
        raise self._allowlist_refused()

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Nothing to release."""

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        """No proxy to keep."""
        return []

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        """No proxy, no decisions."""
        return []

    def close(self) -> None:
        """Close the node clients, and the manager's if this backend opened it."""
        self.nodes.close()
        if self._owns_engine:
            self.engine.close()


def _sandbox(location: str) -> str:
    name = Path(location).name
    if not name.startswith(_TCP_PREFIX):
        raise TypeError(f"not a channel of the swarm backend: {location}")
    return name[len(_TCP_PREFIX) :]


def _remove_volume(api: Any, volume: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            api.remove_volume(volume, force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the engine is still detaching it from the container
