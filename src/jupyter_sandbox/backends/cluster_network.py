"""A sandbox's private network on a Swarm: one attachable, internal overlay per sandbox.

The kernel (on whichever node Swarm or the backend picked) and the API servers' side of the
channel join it; nothing else does. `internal` gives it no gateway and no route out (egress
goes through the sandbox's proxy, which also joins it); `attachable` lets plain containers
(not only service tasks) join from any node, which is how a kernel container on a worker and
an API server container on a manager meet without a published port or the default bridge.
The MTU leaves room for VXLAN's 50 bytes inside the node network's own MTU.

A prototype for the Swarm backend (measured in docs/scale-out.md); the kernel channel on it is
the CurveZMQ one.
"""

from __future__ import annotations

import docker
from docker.models.networks import Network

from jupyter_sandbox.backends.cluster_errors import engine_errors
from jupyter_sandbox.backends.cluster_nodes import MTU

__all__ = ["OVERLAY_MTU", "create_sandbox_overlay", "overlay_name"]

OVERLAY_MTU = MTU - 50


def overlay_name(container_id: str) -> str:
    """The sandbox's overlay network name."""
    return f"jsbx-{container_id}-net"


def create_sandbox_overlay(
    manager: docker.DockerClient, container_id: str, labels: dict[str, str]
) -> Network:
    """Create the sandbox's overlay on a Swarm manager.

    Raises:
        ClusterError: the manager refused (not a manager, address pool exhausted...).
        APIConnectionError: the manager is unreachable.
    """
    with engine_errors():
        return manager.networks.create(
            overlay_name(container_id),
            driver="overlay",
            attachable=True,
            internal=True,
            labels=labels,
            options={"com.docker.network.driver.mtu": str(OVERLAY_MTU)},
        )
