"""The sandbox's task: made, hardened and started on the node Swarm picks, then followed there.

`SwarmTasks` is to the Swarm backend what `runtime.docker.DockerRuntime` is to the Docker one:
the engine side (the manager for services, tasks and nodes; each node's engine for the task's
container), with every step of a create timed (`last_start_steps`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from jupyter_sandbox._exceptions import (
    APIConnectionError,
    APIError,
    BadRequestError,
    NotFoundError,
)
from jupyter_sandbox.backends import deadline_file, gvisor, labels
from jupyter_sandbox.backends.base import Leftover, SandboxSpec, SandboxState
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.docker import (
    KERNEL_MOUNT,
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    SANDBOX_UID,
    SKILLS_MOUNT,
)
from jupyter_sandbox.backends.runtime.engine import docker_errors
from jupyter_sandbox.backends.swarm_egress import EgressRequest, SwarmEgress
from jupyter_sandbox.backends.swarm_hardening import NodeChecks, harden
from jupyter_sandbox.backends.swarm_services import (
    STARTING,
    TASK_ENDED,
    NodeLostError,
    SwarmNodes,
    TaskPlace,
    create_service,
    ensure_parking,
    service_name,
    task_template,
)
from jupyter_sandbox.backends.swarm_waiter import TaskWaiter
from jupyter_sandbox.settings import Settings

__all__ = ["PLACEMENT_ATTEMPTS", "SwarmTasks"]

PLACEMENT_ATTEMPTS = 3
"""Nodes a create tries before it gives up, when the ones before failed it (a node lost)."""

logger = logging.getLogger(__name__)


class SwarmTasks:
    """Sandboxes' services and task containers, on the swarm whose manager is `engine`."""

    def __init__(self, settings: Settings, engine: docker.DockerClient) -> None:
        self.settings = settings
        self.nodes = SwarmNodes(engine)
        self.egress = SwarmEgress(settings, self.nodes)
        self._api: Any = engine.api  # docker-py's APIClient is untyped
        self._checks = NodeChecks()
        self._places: dict[str, TaskPlace] = {}
        self.waiter = TaskWaiter(self._api)
        """One poll of the manager for every create in flight."""
        self.last_start_steps: dict[str, float] = {}
        """Seconds per step of the last `start` (benchmarks/swarm_create.py prints them)."""

    def start(self, spec: SandboxSpec) -> str:
        """Create the service, wait for Swarm to run its task, harden and check the task's
        container on its node, give it its files, start its kernel; a failure removes all
        (but an allowlist sandbox's overlay and proxy files: `release_network`'s).

        An allowlist sandbox (`spec.network`, its handle an `EgressRequest`) is placed by us:
        its node is chosen and its proxy put on its overlay before the service exists
        (`swarm_egress`), and its task address is admitted before its kernel starts. A node
        lost mid-create (down, unreachable, or never starting the task) is left out and the
        create tried again on the others, up to `PLACEMENT_ATTEMPTS` times."""
        self._check_runtime()
        excluded: list[str] = []
        while True:
            try:
                return self._start_once(spec, excluded)
            except Exception as exc:
                lost = self._lost_node(spec.sandbox_id, exc)
                self.remove(spec.sandbox_id)
                # An allowlist sandbox is pinned to its proxy's node: its create fails.
                if (
                    lost is None
                    or spec.network is not None
                    or len(excluded) + 1 >= PLACEMENT_ATTEMPTS
                ):
                    raise
                logger.warning(
                    "sandbox %s: its node %s failed during the create (%s); placing it again",
                    spec.sandbox_id,
                    lost,
                    exc,
                )
                excluded.append(lost)
            except BaseException:
                self.remove(spec.sandbox_id)
                raise

    def _lost_node(self, sandbox_id: str, error: Exception) -> str | None:
        """The id of the node the failed attempt's task was on, if the failure was that
        node's: it is not ready now, its engine could not be reached, or it never started
        the task; None for any other failure (those are the sandbox's, not a node's)."""
        try:
            task = self.task(sandbox_id)
            node_id = str(task.get("NodeID") or "") if task is not None else ""
            if not node_id:
                return None  # never placed: no node to blame (e.g. none has the resources)
            if isinstance(error, (APIConnectionError, NodeLostError)):
                return node_id
            if task is not None and task["Status"]["State"] in STARTING:
                return node_id  # assigned to it, and it did not start it in time
            return node_id if self.nodes.node(node_id)["Status"]["State"] != "ready" else None
        except APIError:
            return None  # the manager cannot tell: not a node's failure to work round

    def _start_once(self, spec: SandboxSpec, excluded: list[str]) -> str:
        has_skills = spec.storage is not None and spec.mount_skills
        request: EgressRequest | None = None
        if spec.network is not None:
            if not isinstance(spec.network.handle, EgressRequest):
                raise TypeError("a NetworkGrant not made by the swarm backend")
            request = spec.network.handle
        api = self._api
        steps: dict[str, float] = {}
        clock = time.monotonic()

        def step(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            steps[name], clock = round(now - clock, 3), now

        with docker_errors(f"creating sandbox {spec.sandbox_id}"):
            self._check_image(spec.image)
            plan = None
            if request is not None:
                plan = self.egress.prepare(spec.sandbox_id, request, spec.memory_bytes)
                step("node and egress proxy")
            template = task_template(
                self.settings,
                sandbox_id=spec.sandbox_id,
                image=spec.image,
                memory_bytes=spec.memory_bytes,
                deadline=spec.deadline,
                sandbox_labels=spec.labels,
                environment={
                    **spec.environment,
                    **(plan.attachment.environment if plan else {}),
                },
                has_skills=has_skills,
            )
            if plan is not None:
                self.egress.plug(template, plan)
            else:
                ensure_parking(api, self._store_labels())
            if excluded:  # nodes lost by earlier attempts
                placement = template.setdefault("Placement", {})
                placement["Constraints"] = [
                    *placement.get("Constraints", []),
                    *(f"node.id!={node}" for node in excluded),
                ]
            service_id = create_service(api, spec.sandbox_id, template, spec.labels)
            step("service create")
            task = self.waiter.wait(service_id, self.settings.start_timeout)
            place = self._places[spec.sandbox_id] = self.nodes.place(task)
            step("task running")
            node = self.nodes.client(place.address).api
            runtime = self.settings.runtime
            overlay = plan.network.name if plan is not None else None
            info = harden(
                node, place.container_id, self.settings, spec.memory_bytes, runtime, overlay
            )
            step("harden and check")
            if request is not None and plan is not None:
                self.egress.admit(spec.sandbox_id, request, plan, task)
                step("egress admit")
            self._checks.scan_image(node, place.node_id, place.container_id, info["Image"])
            step("image scan")
            self._put_kernel_files(node, place.container_id, spec, has_skills)
            node.kill(place.container_id, signal="SIGUSR1")  # the kernel starts now
            step("kernel files and start")
        self.last_start_steps = steps
        logger.debug("sandbox %s on %s: %s", spec.sandbox_id, place.node, steps)
        return service_id

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

    def place(self, sandbox_id: str) -> TaskPlace:
        """Where the sandbox's task runs (asked once, then remembered)."""
        place = self._places.get(sandbox_id)
        if place is None:
            task = self.task(sandbox_id)
            if task is None or not task["Status"].get("ContainerStatus", {}).get("ContainerID"):
                raise NotFoundError(f"sandbox {sandbox_id} has no container", param="container_id")
            place = self._places[sandbox_id] = self.nodes.place(task)
        return place

    def task(self, sandbox_id: str) -> dict[str, Any] | None:
        try:
            with docker_errors(f"inspecting sandbox {sandbox_id}"):
                tasks: list[dict[str, Any]] = self._api.tasks(
                    filters={"service": service_name(sandbox_id)}
                )
        except NotFoundError:  # no such service
            return None
        return tasks[0] if tasks else None

    def node_api(self, sandbox_id: str) -> tuple[Any, str]:
        place = self.place(sandbox_id)
        return self.nodes.client(place.address).api, place.container_id

    def state(self, sandbox_id: str) -> SandboxState | None:
        """The task's state as the manager sees it, with its node; not running, with the
        reason, once the task ended or its node is not ready."""
        task = self.task(sandbox_id)
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
            api, container = self.node_api(sandbox_id)
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
            api, container = self.node_api(sandbox_id)
            with docker_errors(f"reading the log of sandbox {sandbox_id}"):
                raw = api.logs(container, tail=tail, since=since)
        except APIError:
            return ""
        return bytes(raw)[-max_bytes:].decode("utf-8", "replace")

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal PID 1 (sandbox-init) on the task's node."""
        api, container = self.node_api(sandbox_id)
        with docker_errors(f"signalling sandbox {sandbox_id}"):
            api.kill(container, signal=signal)

    def pause(self, sandbox_id: str) -> None:
        """The cgroup freezer, on the task's node; idempotent."""
        api, container = self.node_api(sandbox_id)
        with docker_errors(f"pausing sandbox {sandbox_id}"):
            try:
                api.pause(container)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "already paused" not in str(exc):
                    raise

    def unpause(self, sandbox_id: str) -> None:
        """Thaw, on the task's node; idempotent."""
        api, container = self.node_api(sandbox_id)
        with docker_errors(f"resuming sandbox {sandbox_id}"):
            try:
                api.unpause(container)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "not paused" not in str(exc):
                    raise

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """The task container's exit code, once the task ended."""
        try:
            task = self.task(sandbox_id)
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
        for address in self.node_addresses(place):
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

    def node_addresses(self, place: TaskPlace | None) -> list[str]:
        """Every ready node, the task's first (a node that is down is never dialled: its
        objects wait for reconcile once it is back)."""
        try:
            ready = [n["Status"]["Addr"] for n in self.nodes.ready_nodes()]
        except APIError as exc:
            logger.warning("the swarm's nodes are unknown: %s", exc)
            return []
        first = [place.address] if place is not None and place.address in ready else []
        return list(dict.fromkeys([*first, *ready]))

    def running(self) -> set[str]:
        """This store's sandboxes whose task runs on a ready node."""
        return {owner for owner, live in self.services().items() if live}

    def services(self) -> dict[str, bool]:
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

    def leftovers(self) -> list[Leftover]:
        """Services (a live task: `container`; an ended one: `service`), and sandbox volumes
        and containers on every ready node."""
        found = [
            Leftover("container" if live else "service", owner, service_name(owner))
            for owner, live in self.services().items()
        ]
        seen = {leftover.owner for leftover in found}
        selector = {"label": [f"{labels.MANAGED}=true", f"{labels.STORE}={self.settings.store_id}"]}
        for address in self.node_addresses(None):
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
        return found


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
