"""A local Swarm cluster made of Docker-in-Docker node containers on one engine.

`LocalCluster.up` makes a private bridge network for the cluster, starts N node
containers (the `node_image`), each running dockerd on TCP 2376 behind mutual TLS (certificates
from `cluster_certs`, copied into the node before it starts), then forms a Swarm: the first
node initialises it as manager, the others join as workers with the join token. Every object
carries `CLUSTER` = the cluster's name, so `down` removes exactly what `up` made, and the
cluster is read back from the engine (labels and inspect), not from a state file.

The TLS client files live under `<home>/clusters/<name>/client/` (`home` defaults to
`jupyter_data_dir()/sandbox`), in the layout `DOCKER_CERT_PATH` expects.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import docker
import docker.errors
import docker.tls
from docker.models.containers import Container

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.cluster_certs import CertificateAuthority, write_private
from jupyter_sandbox.backends.cluster_errors import ClusterError, engine_errors
from jupyter_sandbox.backends.cluster_ssh import ClusterSsh
from jupyter_sandbox.backends.labels import PREFIX

__all__ = [
    "CLUSTER",
    "ClusterError",
    "ClusterNode",
    "LocalCluster",
    "check_name",
]

logger = logging.getLogger(__name__)

CLUSTER = f"{PREFIX}.cluster"
"""Label on every object a local cluster makes: the cluster's name."""
NODE_ROLE = f"{PREFIX}.cluster-role"
ENGINE_PORT = 2376
NODE_API_VERSION = "1.41"
"""The engine API of the node image (Debian bookworm's docker.io 20.10)."""
SWARM_PORT = 2377
# The nodes' own subnet, and the pool Swarm carves overlay networks from (a /26 each: one
# per sandbox leaves room for the kernel, its egress proxy, the API servers and Swarm's
# per-node load-balancer addresses). Disjoint, so a node's eth0 never overlaps an overlay.
NODE_SUBNETS = tuple(f"10.213.{third}.0/24" for third in range(256))
OVERLAY_POOL = "10.128.0.0/9"
OVERLAY_SUBNET_SIZE = 26
MTU = 1400
START_TIMEOUT = 90.0
StorageDriver = Literal["overlay2", "fuse-overlayfs", "vfs"]
# What the node gets instead of --privileged: every capability but CAP_SYS_RESOURCE (engines
# that run inside a VM's container, like this project's CI, lack it, and runc then refuses
# --privileged outright; dockerd only warns without it), no seccomp or AppArmor profile, and
# /proc unmasked. The node is the operator's own machine, not a sandbox: its sandboxes get
# every hardening from the node's engine.
NODE_CAP_DROP = ["SYS_RESOURCE"]
NODE_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_READY_LINE = f"API listen on [::]:{ENGINE_PORT}"


@dataclass(frozen=True)
class ClusterNode:
    """One node container, as `cluster status` names it."""

    name: str
    address: str
    role: Literal["manager", "worker"]
    state: str
    """The node container's state (running, exited, ...)."""

    @property
    def docker_host(self) -> str:
        """The `DOCKER_HOST` that reaches this node's engine."""
        return f"tcp://{self.address}:{ENGINE_PORT}"


@dataclass
class Timings:
    """Seconds spent per step of `up`, for the CLI and the docs."""

    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[step] = round(time.monotonic() - started, 2)
            logger.info("%s: %.2f s", step, self.steps[step])


class LocalCluster:
    """The cluster `name` on the engine `engine`: create, inspect and remove it."""

    def __init__(
        self,
        engine: docker.DockerClient,
        name: str,
        *,
        home: Path,
        extra_labels: dict[str, str] | None = None,
        storage_driver: StorageDriver | None = None,
    ) -> None:
        check_name(name)
        self.engine, self.name = engine, name
        self.folder = home / "clusters" / name
        self.labels = {**(extra_labels or {}), CLUSTER: name}
        self.timings = Timings()
        self.storage_driver = storage_driver
        """The nodes' storage driver; None lets each node pick (overlay2, else vfs)."""

    @property
    def network_name(self) -> str:
        return f"jsbx-cluster-{self.name}"

    @property
    def client_cert_path(self) -> Path:
        """`DOCKER_CERT_PATH` for this cluster: ca.pem, cert.pem, key.pem."""
        return self.folder / "client"

    @property
    def ssh(self) -> ClusterSsh:
        """The cluster's ssh keys (`DOCKER_HOST=ssh://root@<node>`), in `<folder>/ssh`."""
        return ClusterSsh(self.folder / "ssh")

    def node_name(self, index: int) -> str:
        return f"jsbx-{self.name}-node-{index}"

    # -- up ------------------------------------------------------------------------------

    def up(self, nodes: int, image: str) -> list[ClusterNode]:
        """Start `nodes` nodes from `image` and form a Swarm.

        Raises:
            BadRequestError: `nodes` out of range, or a cluster with this name already exists.
            ClusterError: a node did not start, or the Swarm did not form (nothing is left).
        """
        if not 1 <= nodes <= 16:
            raise BadRequestError(f"nodes={nodes}: between 1 and 16", param="nodes")
        exists = BadRequestError(
            f"cluster {self.name!r} exists already: `jupyter-sandbox cluster down` first",
            param="name",
        )
        if self._containers():
            raise exists
        with self.timings.measure("network"):
            try:
                subnet = self._make_network()  # the name's claim: another `up` fails here
            except ClusterError as error:
                if "already exists" in error.message:
                    raise exists from error
                raise
        try:
            ca = self._make_tls()
            hosts = list(ipaddress.ip_network(subnet).hosts())
            with self.timings.measure("node start"):
                started = [
                    self._start_node(index, str(hosts[index + 1]), image, ca)
                    for index in range(1, nodes + 1)
                ]
                for container in started:
                    self._wait_ready(container)
            with self.timings.measure("swarm form"):
                self._form_swarm([str(hosts[index + 1]) for index in range(1, nodes + 1)])
        except BaseException:
            self.down()
            raise
        return self.nodes()

    def _make_tls(self) -> CertificateAuthority:
        ca = CertificateAuthority.create(self.name)
        ca.save(self.folder)
        client = ca.issue_client(f"{self.name}-client")
        write_private(self.client_cert_path / "ca.pem", ca.cert_pem)
        write_private(self.client_cert_path / "cert.pem", client.cert_pem)
        write_private(self.client_cert_path / "key.pem", client.key_pem)
        return ca

    def _make_network(self) -> str:
        """A private bridge network on the first free subnet of `NODE_SUBNETS`."""
        for subnet in NODE_SUBNETS:
            pool = docker.types.IPAMPool(subnet=subnet)
            try:
                with engine_errors():
                    self.engine.networks.create(
                        self.network_name,
                        driver="bridge",
                        check_duplicate=True,
                        ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                        options={"com.docker.network.driver.mtu": str(MTU)},
                        labels={**self.labels, NODE_ROLE: "network"},
                    )
            except ClusterError as exc:
                if "overlap" in exc.message:
                    continue
                raise
            return subnet
        raise ClusterError("no free subnet for the cluster network in 10.213.0.0/16")

    def _start_node(
        self, index: int, address: str, image: str, ca: CertificateAuthority
    ) -> Container:
        name = self.node_name(index)
        server = ca.issue_server(name, [address, "localhost", "127.0.0.1"])
        labels = {**self.labels, NODE_ROLE: "manager" if index == 1 else "worker"}
        with engine_errors():
            volume = self.engine.volumes.create(f"{name}-data", labels=labels)
            endpoint = self.engine.api.create_endpoint_config(ipv4_address=address)
            created = self.engine.api.create_container(
                image,
                name=name,
                hostname=name,
                labels=labels,
                environment={
                    "JSBX_MTU": str(MTU),
                    "JSBX_STORAGE_DRIVER": self.storage_driver or "",
                },
                host_config=self._node_host_config(str(volume.name)),
                networking_config=self.engine.api.create_networking_config(
                    {self.network_name: endpoint}  # type: ignore[arg-type]  # the stub is wrong
                ),
            )
            container = self.engine.containers.get(created["Id"])
            secrets = {
                "ca.pem": ca.cert_pem,
                "cert.pem": server.cert_pem,
                "key.pem": server.key_pem,
                **self.ssh.node_files(address),
            }
            container.put_archive("/etc/jsbx-node", _tar(secrets))
            container.start()
        return container

    def _node_host_config(self, volume: str) -> dict[str, object]:
        config: dict[str, object] = self.engine.api.create_host_config(
            cap_add=["ALL"],
            cap_drop=NODE_CAP_DROP,
            security_opt=NODE_SECURITY_OPT,
            devices=["/dev/fuse"] if self.storage_driver == "fuse-overlayfs" else None,
            binds={volume: {"bind": "/var/lib/docker", "mode": "rw"}},
            network_mode=self.network_name,
        )
        # The CLI's `--security-opt systempaths=unconfined`: /proc unmasked and writable.
        config["MaskedPaths"], config["ReadonlyPaths"] = [], []
        return config

    def _wait_ready(self, container: Container) -> None:
        """Block until dockerd logs that it listens on TCP, or the node exits, or timeout."""
        ready = threading.Event()
        tail: list[str] = []
        stream = container.logs(stream=True, follow=True)

        def follow() -> None:
            for chunk in stream:
                line = chunk.decode(errors="replace")
                tail[:] = [*tail[-20:], line]
                if _READY_LINE in line:
                    ready.set()
                    return

        with self.timings.measure(f"ready {container.name}"):
            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            reader.join(START_TIMEOUT)
            stream.close()  # also ends a reader still waiting for a line
            # docker-py's close() leaves the response's socket wrapper open (a ResourceWarning)
            stream._response.close()  # type: ignore[attr-defined]
        if not ready.is_set():
            container.reload()
            raise ClusterError(
                f"node {container.name} ({container.status}) did not start its engine within "
                f"{START_TIMEOUT:.0f} s:\n" + "".join(tail)
            )

    def _form_swarm(self, addresses: list[str]) -> None:
        manager = self.client_for(addresses[0])
        with engine_errors():
            manager.swarm.init(
                advertise_addr=addresses[0],
                listen_addr=f"0.0.0.0:{SWARM_PORT}",
                default_addr_pool=[OVERLAY_POOL],
                subnet_size=OVERLAY_SUBNET_SIZE,
            )
            manager.swarm.reload()
            token = manager.swarm.attrs["JoinTokens"]["Worker"]
            for address in addresses[1:]:
                self.client_for(address).swarm.join(
                    remote_addrs=[f"{addresses[0]}:{SWARM_PORT}"],
                    join_token=token,
                    listen_addr=f"0.0.0.0:{SWARM_PORT}",
                    advertise_addr=address,
                )

    # -- reading the cluster back ----------------------------------------------------------

    def _containers(self) -> list[Container]:
        with engine_errors():
            found = self.engine.containers.list(
                all=True, filters={"label": f"{CLUSTER}={self.name}"}
            )
        return sorted(found, key=lambda container: str(container.name))

    def nodes(self) -> list[ClusterNode]:
        """The cluster's nodes, manager first (empty if there is no such cluster)."""
        nodes = []
        for container in self._containers():
            networks = container.attrs["NetworkSettings"]["Networks"] or {}
            address = (networks.get(self.network_name) or {}).get("IPAddress") or ""
            if not address:  # a stopped node keeps its configured address
                config = (networks.get(self.network_name) or {}).get("IPAMConfig") or {}
                address = config.get("IPv4Address", "")
            role = container.labels.get(NODE_ROLE)
            if role not in ("manager", "worker"):
                continue  # the servers' sandboxes carry the cluster's label too
            nodes.append(
                ClusterNode(
                    name=str(container.name),
                    address=address,
                    role="manager" if role == "manager" else "worker",
                    state=str(container.status),
                )
            )
        return nodes

    def client_for(self, address: str, timeout: int = 120) -> docker.DockerClient:
        """A docker-py client for the node at `address`, over mutual TLS."""
        folder = self.client_cert_path
        tls = docker.tls.TLSConfig(
            client_cert=(str(folder / "cert.pem"), str(folder / "key.pem")),
            ca_cert=str(folder / "ca.pem"),
            verify=True,
        )
        client = docker.DockerClient(
            base_url=f"tcp://{address}:{ENGINE_PORT}",
            tls=tls,
            timeout=timeout,
            version=NODE_API_VERSION,  # "auto" would ask before trust_env is off
        )
        # requests lets REQUESTS_CA_BUNDLE replace the cluster's CA, and *_PROXY route to the
        # node through a proxy: neither may apply to a node's engine.
        client.api.trust_env = False
        return client

    def env(self) -> dict[str, str]:
        """Environment variables that point docker, docker-py and `Client()` at the manager."""
        managers = [node for node in self.nodes() if node.role == "manager"]
        if not managers:
            return {}
        return {
            "DOCKER_HOST": managers[0].docker_host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.client_cert_path),
        }

    # -- down ------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove every container, volume and network labelled with this cluster, and its
        certificates; returns what was removed. Idempotent."""
        removed: list[str] = []
        selector: dict[str, str | list[str] | bool] = {"label": f"{CLUSTER}={self.name}"}
        with engine_errors(), ThreadPoolExecutor(max_workers=4) as pool:
            # side by side: each removal mostly waits for the engine to delete a node's files
            containers = self.engine.containers.list(all=True, filters=selector)
            for container in containers:
                removed.append(f"container {container.name}")
            list(pool.map(lambda container: container.remove(force=True, v=True), containers))
            volumes = self.engine.volumes.list(filters=selector)
            for volume in volumes:
                removed.append(f"volume {volume.name}")
            list(pool.map(lambda volume: volume.remove(force=True), volumes))
            for network in self.engine.networks.list(filters=selector):
                network.remove()
                removed.append(f"network {network.name}")
        if self.folder.exists():
            shutil.rmtree(self.folder)
            removed.append(f"folder {self.folder}")
        return removed


def check_name(name: str) -> str:
    """`name` if it can name a cluster (it becomes part of Docker object names).

    Raises:
        BadRequestError: it cannot (param `name`).
    """
    if not _NAME.fullmatch(name):
        raise BadRequestError(
            f"cluster name {name!r}: lowercase letters, digits and '-', at most 40",
            param="name",
        )
    return name


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
