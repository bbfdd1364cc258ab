"""Allowlist sandboxes on a Swarm: we pick the node, its egress proxy serves the sandbox.

The proxy and the files a sandbox binds (its resolv.conf, its CA bundle) live on one node
(`remote_egress`), so an allowlist sandbox cannot be left to Swarm's placement: the node is
chosen first, from Swarm's own view (ready, `active` nodes with the memory reservation still
unreserved, the least reserved first), and the service is pinned there (`node.id==<id>`);
Swarm still checks the reservation on that node.

Per sandbox: an attachable, internal overlay `jsbx-<id>-net` with its own /28 (gateway `.1`,
absent: internal; the proxy at `.2`; tasks from `.8/29` only, so nothing else takes `.2`),
labelled with the node it belongs to. Swarm does not refuse overlapping subnets, so a free
/28 is chosen against every network the manager lists, and of two creates that raced to the
same one the network with the larger id backs off. The proxy is plugged in at `.2` before
the service exists; once the task runs its address on the overlay is admitted (until then
the proxy refuses it: `unknown_source`). At the end: disconnect the proxy, drop the
sandbox's list and secrets (the proxy goes with its node's last allowlist sandbox), remove
the overlay.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.types import (
    DNSConfig,
    IPAMConfig,
    IPAMPool,
    Mount,
    NetworkAttachmentConfig,
    Placement,
    TaskTemplate,
)

from jupyter_sandbox._exceptions import InternalServerError, NotFoundError
from jupyter_sandbox.backends import labels
from jupyter_sandbox.backends.base import Leftover
from jupyter_sandbox.backends.egress import SandboxNetwork
from jupyter_sandbox.backends.egress_network import NetworkAttachment
from jupyter_sandbox.backends.remote_egress import RemoteEgressNetworks
from jupyter_sandbox.backends.remote_egress_proxy import RemoteEgressProxy
from jupyter_sandbox.backends.runtime.docker import CA_BUNDLE_PATHS, network_name
from jupyter_sandbox.backends.runtime.engine import docker_errors
from jupyter_sandbox.backends.swarm_services import PARKING_MTU, SwarmNodes
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = ["NODE", "EgressPlan", "EgressRequest", "SwarmEgress", "choose_node"]

logger = logging.getLogger(__name__)

NODE = f"{labels.PREFIX}.node"
"""Label on a sandbox's overlay: the id of the node whose proxy serves it."""
ROLE_NETWORK = "network"  # the role `EgressProxy.sandbox_networks` knows
_PREFIX = 28
_TASK_RANGE = 8  # tasks take .8 to .14: never the proxy's .2
_REMOVE_WAIT = 15.0


@dataclass(frozen=True)
class EgressRequest:
    """What `attach_network` was asked (the work waits for `start`, which knows the memory
    reservation the node must hold)."""

    policy: NetworkPolicyAllowlist
    labels: dict[str, str]
    deadline: float


@dataclass(frozen=True)
class EgressPlan:
    """Where an allowlist sandbox runs and what its task is given."""

    node_id: str
    node: str
    address: str
    network: SandboxNetwork
    attachment: NetworkAttachment


def choose_node(nodes: list[dict[str, Any]], tasks: list[dict[str, Any]], memory: int) -> str:
    """The id of the ready, active node with the most unreserved memory, if it holds `memory`.

    Raises:
        InternalServerError: no node has `memory` unreserved (Swarm's words).
    """
    reserved: dict[str, int] = {}
    for task in tasks:
        resources = task.get("Spec", {}).get("Resources") or {}
        held = (resources.get("Reservations") or {}).get("MemoryBytes") or 0
        if task.get("NodeID"):
            reserved[task["NodeID"]] = reserved.get(task["NodeID"], 0) + int(held)
    free: dict[str, int] = {
        str(node["ID"]): int(node["Description"]["Resources"]["MemoryBytes"])
        - reserved.get(node["ID"], 0)
        for node in nodes
        if node["Status"]["State"] == "ready" and node["Spec"].get("Availability") == "active"
    }
    fits = [node_id for node_id, left in free.items() if left >= memory]
    if not fits:
        raise InternalServerError(
            f"no suitable node for an allowlist sandbox (insufficient resources on "
            f"{len(free)} nodes: {memory} bytes of memory unreserved on none)"
        )
    return max(fits, key=lambda node_id: (free[node_id], node_id))


class _NodeProxy(RemoteEgressProxy):
    """The store's proxy on one node; its sandbox networks are the overlays labelled with
    this node (the manager's list: a worker lists an overlay only while it uses it)."""

    def __init__(
        self, settings: Settings, engine: docker.DockerClient, manager: Any, node_id: str
    ) -> None:
        super().__init__(settings, engine)
        self._manager = manager
        self.node_id = node_id

    def sandbox_networks(self) -> list[SandboxNetwork]:
        """The overlays of this node's sandboxes (a recreated proxy rejoins each at `.2`)."""
        return [
            SandboxNetwork.for_subnet(entry["Name"], subnet)
            for entry in overlays(self._manager, self._settings.store_id, self.node_id)
            if (subnet := _subnet(entry))
        ]

    def connect(self, network: SandboxNetwork) -> None:
        """Put the proxy at `.2` on an overlay (idempotent: a proxy made just now joined every
        overlay of its node already, and an overlay says so in other words than a bridge)."""
        try:
            super().connect(network)
        except docker.errors.APIError as exc:
            if "already attached" not in str(exc.explanation or exc):
                raise

    def disconnect(self, network: str) -> None:
        """Unplug the proxy from a sandbox's overlay; idempotent."""
        with docker_errors(f"unplugging egress proxy {self.name} from {network}"):
            try:
                self._api.disconnect_container_from_network(self.name, network, force=True)
            except docker.errors.NotFound:
                pass  # no proxy, or not on it
            except docker.errors.APIError as exc:
                if "is not connected" not in str(exc.explanation or exc):
                    raise


def overlays(api: Any, store_id: str, node_id: str | None = None) -> list[dict[str, Any]]:
    """This store's sandbox overlays (of one node, if given), as the manager has them."""
    selector = [f"{labels.MANAGED}=true", f"{labels.STORE}={store_id}", f"{NODE}"]
    if node_id is not None:
        selector[-1] = f"{NODE}={node_id}"
    with docker_errors("listing the sandboxes' overlays"):
        found: list[dict[str, Any]] = api.networks(filters={"label": selector})
    return found


def _overlaps(one: str, other: str) -> bool:
    """Whether two CIDR subnets overlap (False for a missing or malformed one)."""
    try:
        first, second = ipaddress.ip_network(one), ipaddress.ip_network(other)
    except ValueError:
        return False
    return first.version == second.version and first.overlaps(second)


def _subnet(network: dict[str, Any]) -> str:
    config = (network.get("IPAM") or {}).get("Config") or []
    return str(config[0].get("Subnet") or "") if config else ""


class SwarmEgress:
    """The node choice, the overlays and one `RemoteEgressNetworks` per node."""

    def __init__(self, settings: Settings, nodes: SwarmNodes) -> None:
        self.settings = settings
        self.nodes = nodes
        self._api: Any = nodes.api
        self._egress: dict[str, tuple[RemoteEgressNetworks, _NodeProxy]] = {}
        self._lock = threading.Lock()

    def _store_id(self) -> str:
        return self.settings.store_id

    def for_node(self, node: dict[str, Any]) -> RemoteEgressNetworks:
        """The egress of one node (made once, then kept)."""
        return self._node_egress(node)[0]

    def _node_egress(self, node: dict[str, Any]) -> tuple[RemoteEgressNetworks, _NodeProxy]:
        with self._lock:
            found = self._egress.get(node["ID"])
            if found is None:
                engine = self.nodes.client(node["Status"]["Addr"])
                proxy = _NodeProxy(self.settings, engine, self._api, node["ID"])
                found = self._egress[node["ID"]] = (
                    RemoteEgressNetworks(self.settings, proxy),
                    proxy,
                )
        return found

    # --- create ---------------------------------------------------------------------------
    def prepare(self, sandbox_id: str, request: EgressRequest, memory_bytes: int) -> EgressPlan:
        """Choose the node, make the overlay, put the node's proxy on it (and the sandbox's
        secrets and CA bundle on the node); the sandbox is not yet admitted."""
        with docker_errors("choosing a node for an allowlist sandbox"):
            nodes = self._api.nodes()
            tasks = self._api.tasks(filters={"desired-state": "running"})
        node_id = choose_node(nodes, tasks, memory_bytes)
        node = next(n for n in nodes if n["ID"] == node_id)
        network = self._create_overlay(sandbox_id, {**request.labels, NODE: node_id})
        attachment = self.for_node(node).prepare(
            sandbox_id, request.policy, request.labels, request.deadline, network=network
        )
        return EgressPlan(
            node_id=node_id,
            node=node["Description"]["Hostname"],
            address=node["Status"]["Addr"],
            network=network,
            attachment=attachment,
        )

    def _create_overlay(self, sandbox_id: str, overlay_labels: dict[str, str]) -> SandboxNetwork:
        pool = ipaddress.ip_network(self.settings.egress_subnet_pool)
        slots = 2 ** (_PREFIX - pool.prefixlen)
        name = network_name(sandbox_id)
        chooser = random.SystemRandom()
        with docker_errors(f"creating the overlay of sandbox {sandbox_id}"):
            for _ in range(64):
                taken = self._taken_subnets()
                start = int(pool.network_address) + chooser.randrange(slots) * 2 ** (32 - _PREFIX)
                subnet = ipaddress.ip_network(f"{ipaddress.ip_address(start)}/{_PREFIX}")
                if any(_overlaps(str(subnet), other) for other in taken):
                    continue
                created = self._api.create_network(
                    name,
                    driver="overlay",
                    internal=True,  # no gateway, no docker_gwbridge: no route out
                    attachable=True,  # the proxy, a plain container, joins it
                    check_duplicate=True,
                    options={"com.docker.network.driver.mtu": str(PARKING_MTU)},
                    ipam=IPAMConfig(
                        pool_configs=[
                            IPAMPool(
                                subnet=str(subnet),
                                gateway=str(subnet[1]),
                                iprange=f"{subnet[_TASK_RANGE]}/{_PREFIX + 1}",
                            )
                        ]
                    ),
                    labels={**overlay_labels, labels.ROLE: ROLE_NETWORK},
                )
                if self._lost_race(str(created["Id"]), str(subnet)):
                    self._api.remove_network(created["Id"])
                    continue
                return SandboxNetwork.for_subnet(name, str(subnet))
        raise InternalServerError(
            f"no free /{_PREFIX} left in egress_subnet_pool {pool}", param="network_policy"
        )

    def _taken_subnets(self) -> list[str]:
        return [
            str(config.get("Subnet") or "")
            for entry in self._api.networks()
            for config in (entry.get("IPAM") or {}).get("Config") or []
        ]

    def _lost_race(self, network_id: str, subnet: str) -> bool:
        """Whether another network with a smaller id took an overlapping subnet (it keeps it)."""
        return any(
            entry["Id"] != network_id and entry["Id"] < network_id and _overlaps(subnet, config)
            for entry in self._api.networks()
            for config in [_subnet(entry)]
        )

    def plug(self, template: TaskTemplate, plan: EgressPlan) -> None:
        """The task on its overlay only, pinned to the node, the node's files bound read-only,
        the proxy as the embedded resolver's upstream (it serves no DNS)."""
        template["Networks"] = [NetworkAttachmentConfig(plan.network.name)]
        template["Placement"] = Placement(constraints=[f"node.id=={plan.node_id}"])
        spec = template["ContainerSpec"]
        binds = [
            Mount("/etc/resolv.conf", plan.attachment.resolv_conf, type="bind", read_only=True)
        ]
        if plan.attachment.ca_bundle is not None:
            binds += [
                Mount(path, plan.attachment.ca_bundle, type="bind", read_only=True)
                for path in CA_BUNDLE_PATHS
            ]
        spec["Mounts"] = [*spec.get("Mounts", []), *binds]
        spec["DNSConfig"] = DNSConfig(nameservers=[plan.network.proxy_ip])

    def admit(self, sandbox_id: str, request: EgressRequest, plan: EgressPlan, task: Any) -> str:
        """The task's address on its overlay, given to the proxy; returns it.

        Raises:
            InternalServerError: the task is not where it was planned (fail closed).
        """
        if task.get("NodeID") != plan.node_id:
            raise InternalServerError(
                f"the sandbox's task runs on node {task.get('NodeID')}, not on {plan.node_id} "
                "where its egress proxy is"
            )
        subnet = ipaddress.ip_network(plan.network.subnet)
        found = [
            address.partition("/")[0]
            for attachment in task.get("NetworksAttachments") or []
            if attachment["Network"]["Spec"]["Name"] == plan.network.name
            for address in attachment.get("Addresses") or []
        ]
        good: list[str] = [
            a for a in found if ipaddress.ip_address(a) in subnet and a != plan.network.proxy_ip
        ]
        if len(found) != 1 or not good:
            raise InternalServerError(
                f"the sandbox's task has no single address on {plan.network.name}: {found}"
            )
        deadline = max(request.deadline, time.monotonic() + self.settings.egress_start_timeout)
        node = self.nodes.node(plan.node_id)
        self.for_node(node).admit(sandbox_id, request.policy, good[0], deadline)
        return good[0]

    # --- the end ---------------------------------------------------------------------------
    def release(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Disconnect the proxy, drop the sandbox's list and secrets (the proxy goes with its
        node's last allowlist sandbox), remove the overlay; idempotent. A node that is down
        keeps its proxy's files until reconcile finds it back."""
        name = network_name(sandbox_id)
        try:
            with docker_errors(f"inspecting the overlay of sandbox {sandbox_id}"):
                info: dict[str, Any] = self._api.inspect_network(name)
        except NotFoundError:  # released already
            return
        node_id = (info.get("Labels") or {}).get(NODE, "")
        node = self._ready_node(node_id)
        if node is not None:
            egress, proxy = self._node_egress(node)
            proxy.disconnect(name)
            egress.release(sandbox_id, self._needed_on(node_id, needed))
        self.remove_overlay(sandbox_id)

    def _ready_node(self, node_id: str) -> dict[str, Any] | None:
        if not node_id:
            return None
        for node in self.nodes.ready_nodes():
            if node["ID"] == node_id:
                return node
        logger.warning("node %s is not ready: its egress proxy is left to reconcile", node_id)
        return None

    def _needed_on(self, node_id: str, needed: Callable[[], set[str]]) -> Callable[[], set[str]]:
        """`needed`, narrowed to the sandboxes whose overlay belongs to `node_id` (asked under
        the node's proxy lock, like `needed`: an overlay is made before its proxy's lock is
        taken, so a create in progress is never dropped)."""

        def on_node() -> set[str]:
            owners = {
                (entry.get("Labels") or {}).get(labels.CONTAINER_ID, "")
                for entry in overlays(self._api, self._store_id(), node_id)
            }
            return needed() & owners

        return on_node

    def remove_overlay(self, sandbox_id: str) -> None:
        """Remove the sandbox's overlay once its task and the proxy have left it; idempotent."""
        name = network_name(sandbox_id)
        deadline = time.monotonic() + _REMOVE_WAIT
        with docker_errors(f"removing the overlay of sandbox {sandbox_id}"):
            while True:
                try:
                    self._api.remove_network(name)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as exc:
                    # The removed task's attachment is released on its node asynchronously.
                    if "in use" not in str(exc.explanation or exc) or time.monotonic() > deadline:
                        raise
                time.sleep(0.1)

    def leftovers(self) -> list[Leftover]:
        """Every sandbox overlay of this store (a `network` leftover of its sandbox)."""
        return [
            Leftover("network", owner, entry["Name"])
            for entry in overlays(self._api, self._store_id())
            if (owner := (entry.get("Labels") or {}).get(labels.CONTAINER_ID, ""))
        ]

    def remove_leftover(self, sandbox_id: str) -> None:
        """An orphan overlay: unplug the node's proxy if that node is up, then remove it."""
        name = network_name(sandbox_id)
        for entry in overlays(self._api, self._store_id()):
            if entry["Name"] != name:
                continue
            node = self._ready_node((entry.get("Labels") or {}).get(NODE, ""))
            if node is not None:
                self._node_egress(node)[1].disconnect(name)
        self.remove_overlay(sandbox_id)

    def reconcile(self, needed: Callable[[], set[str]]) -> list[str]:
        """Each ready node's proxy up while a sandbox of that node needs it, gone otherwise;
        ended sandboxes' lists and secrets dropped."""
        actions: list[str] = []
        for node in self.nodes.ready_nodes():
            egress = self.for_node(node)
            try:
                done = egress.reconcile(self._needed_on(node["ID"], needed))
            except Exception as exc:  # one node's failure must not stop the others
                logger.warning("egress on node %s not reconciled: %s", node["ID"], exc)
                continue
            name = node["Description"]["Hostname"]
            actions += [f"{action} on {name}" for action in done]
        return actions

    def log(self, sandbox_id: str) -> list[EgressDecision]:
        """The decisions of the proxy serving the sandbox (every ready node's, once its
        overlay is gone)."""
        try:
            with docker_errors(f"inspecting the overlay of sandbox {sandbox_id}"):
                info = self._api.inspect_network(network_name(sandbox_id))
            node_id = (info.get("Labels") or {}).get(NODE, "")
        except NotFoundError:  # no overlay any more: ask every node
            node_id = ""
        decisions: list[EgressDecision] = []
        for node in self.nodes.ready_nodes():
            if node_id in ("", node["ID"]):
                decisions += self.for_node(node).log(sandbox_id)
        return sorted(decisions, key=lambda d: d.time)
