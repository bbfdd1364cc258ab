"""What `cluster status` shows: each node's container, its Swarm state and its sandboxes."""

from __future__ import annotations

import logging
from contextlib import closing
from typing import NamedTuple

import docker
import docker.errors

from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.labels import MANAGED

__all__ = ["NodeRow", "node_report"]

logger = logging.getLogger(__name__)

_TIMEOUT = 10


class NodeRow(NamedTuple):
    """One node as `cluster status` prints it."""

    name: str
    role: str
    state: str
    """The node container's state."""
    swarm: str
    """`ready`, `down`, ... as the manager sees it, with its availability; `-` if unknown."""
    address: str
    sandboxes: int | None
    """Sandbox containers on this node's engine; None when the engine does not answer."""


def node_report(cluster: LocalCluster) -> list[NodeRow]:
    """The cluster's nodes, manager first; a node that does not answer is shown as such."""
    nodes = cluster.nodes()
    swarm_states: dict[str, str] = {}
    manager = next((n for n in nodes if n.role == "manager" and n.state == "running"), None)
    if manager is not None:
        try:
            with closing(cluster.client_for(manager.address, timeout=_TIMEOUT)) as client:
                for member in client.nodes.list():
                    spec, status = member.attrs["Spec"], member.attrs["Status"]
                    swarm_states[member.attrs["Description"]["Hostname"]] = (
                        f"{status['State']}/{spec.get('Availability', '?')}"
                    )
        except docker.errors.DockerException as exc:
            logger.warning("The manager %s does not answer: %s", manager.name, exc)
    rows = []
    for node in nodes:
        rows.append(
            NodeRow(
                name=node.name,
                role=node.role,
                state=node.state,
                swarm=swarm_states.get(node.name, "-"),
                address=node.address,
                sandboxes=_sandboxes(cluster, node.address) if node.state == "running" else None,
            )
        )
    return rows


def _sandboxes(cluster: LocalCluster, address: str) -> int | None:
    try:
        with closing(cluster.client_for(address, timeout=_TIMEOUT)) as client:
            return len(client.containers.list(filters={"label": f"{MANAGED}=true"}))
    except docker.errors.DockerException as exc:
        logger.warning("The node at %s does not answer: %s", address, exc)
        return None
