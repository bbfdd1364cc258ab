"""The egress proxy: Debian's squid in a hardened container, and the networks that reach it.

One proxy per store (`jsbx-egress-<store>`), started when the first allowlist sandbox needs it
and removed when the last one ends. Its primary network (`jsbx-egress-<store>`, a plain
bridge) is its only route out. Every allowlist sandbox gets an internal network of its own
(`jsbx-<id>-net`, a /29 with no address on the host's bridge, so no gateway and no host): the
proxy at `.2`, the sandbox at `.3`, nobody else. The image is built offline like the kernel
image (mmdebstrap, then `docker import`, then a small Dockerfile; see `egress_recipe/`).

Built with `python -m jupyter_sandbox.backends.egress_image build`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool, LogConfig, Mount, RestartPolicy

from jupyter_sandbox._exceptions import APIConnectionError, InternalServerError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import labels
from jupyter_sandbox.backends.egress_image import squid_conf_template
from jupyter_sandbox.backends.egress_secrets import BUMP_PORTS, SecretsConfig
from jupyter_sandbox.backends.runtime.docker import docker_errors, network_name
from jupyter_sandbox.settings import Settings

__all__ = [
    "PROXY_PORT",
    "EgressProxy",
    "EgressUnavailableError",
    "SandboxNetwork",
    "network_name",
]

logger = logging.getLogger(__name__)

PROXY_PORT = 3128
PROXY_UID = 13  # Debian's `proxy` user, which squid runs as
# Where the proxy never connects: private, loopback, link-local (metadata 169.254.169.254),
# CGNAT (Alibaba's 100.100.100.200), Azure's 168.63.129.16, benchmarking (our sandbox
# networks), documentation, multicast and reserved ranges; v6 likewise (fd00:ec2::254 is in
# fc00::/7). Not ::ffff:0:0/96: squid holds IPv4 addresses v4-mapped, so that range would
# match every IPv4 address; mapped forms are judged by the IPv4 ranges. The entrypoint
# fences the same IPv4 ranges in the kernel.
BLOCKED_NETWORKS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "168.63.129.16/32",
    "::/128", "::1/128", "64:ff9b::/96", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


def blocked_networks(exempt: list[str]) -> list[str]:
    """BLOCKED_NETWORKS with the (test-only) exempt ranges carved out."""
    result: list[str] = []
    holes = [ipaddress.ip_network(cidr) for cidr in exempt]
    for cidr in BLOCKED_NETWORKS:
        pieces = [ipaddress.ip_network(cidr)]
        for hole in holes:
            next_pieces: list[Any] = []
            for piece in pieces:
                if piece.version == hole.version and hole.subnet_of(piece):  # type: ignore[arg-type]
                    next_pieces.extend(piece.address_exclude(hole))  # type: ignore[arg-type]
                elif not (piece.version == hole.version and piece.subnet_of(hole)):  # type: ignore[arg-type]
                    next_pieces.append(piece)
            pieces = next_pieces
        result.extend(str(piece) for piece in sorted(pieces))
    return result


_SUBNET_PREFIX = 29
_ROLE_PROXY = "egress-proxy"
_ROLE_EGRESS_NETWORK = "egress-network"
_ROLE_SANDBOX_NETWORK = "network"
# Docker lets a container keep only these; the entrypoint needs them to fence the namespace
# and drop to the proxy user, then gives every one of them up before squid starts.
_PROXY_CAPS = ["NET_ADMIN", "SETUID", "SETGID", "SETPCAP"]


class EgressUnavailableError(InternalServerError):
    """The egress proxy could not be started; allowlist sandboxes cannot be created."""


@dataclass(frozen=True)
class SandboxNetwork:
    """One sandbox's internal network and the two addresses on it."""

    name: str
    subnet: str
    proxy_ip: str
    sandbox_ip: str

    @classmethod
    def for_subnet(cls, name: str, subnet: str) -> SandboxNetwork:
        """The fixed layout of a sandbox network: gateway .1 (absent), proxy .2, sandbox .3."""
        network = ipaddress.ip_network(subnet)
        return cls(name, str(network), str(network[2]), str(network[3]))


class EgressProxy:
    """Docker operations on one store's egress proxy and the sandbox networks it serves."""

    def __init__(self, settings: Settings, engine: docker.DockerClient) -> None:
        self._settings = settings
        self._api = engine.api
        self.name = f"jsbx-egress-{settings.store_id}"
        self.folder = settings.home / "egress"
        self.config_dir = self.folder / "config"
        self.policy_dir = self.config_dir / "policies"
        self.log_dir = self.folder / "log"
        self.resolv_conf = self.folder / "resolv.conf"
        self.secrets = SecretsConfig(self.config_dir, self.folder)

    @property
    def access_log(self) -> Path:
        """Squid's access log on the host: one line per decision."""
        return self.log_dir / "access.log"

    @property
    def inject_log(self) -> Path:
        """egress-inject's log: which secret went into which request, by name only."""
        return self.log_dir / "inject.log"

    def _labels(self, role: str) -> dict[str, str]:
        return {
            **self._settings.extra_labels,
            labels.MANAGED: "true",
            labels.STORE: self._settings.store_id,
            labels.VERSION: __version__,
            labels.ROLE: role,
        }

    def prepare_folders(self) -> None:
        """The host folders the proxy mounts, and the resolver-less resolv.conf of sandboxes."""
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # squid (uid 13) reads the config and the lists; nothing in them is secret.
        os.chmod(self.config_dir, 0o755)  # noqa: S103
        os.chmod(self.policy_dir, 0o755)  # noqa: S103
        if os.geteuid() == 0:
            os.chown(self.log_dir, PROXY_UID, PROXY_UID)
            os.chmod(self.log_dir, 0o755)  # noqa: S103
        else:  # squid runs as uid 13 and must write here; the state folder guards the path
            os.chmod(self.log_dir, 0o777)  # noqa: S103
        self.secrets.prepare()
        upstream_ca = self.config_dir / "test-upstream-ca.pem"
        if self._settings.test_egress_upstream_ca:
            _write_atomic(upstream_ca, self._settings.test_egress_upstream_ca, 0o644)
        else:
            upstream_ca.unlink(missing_ok=True)
        _write_atomic(self.config_dir / "squid.conf", self.render_config(), 0o644)
        _write_atomic(
            self.resolv_conf,
            "# jupyter-sandbox: no resolver. HTTP(S) goes through the egress proxy\n"
            "# (HTTP_PROXY); nothing else leaves the sandbox, names included.\n"
            "options timeout:1 attempts:1\n",
            0o644,
        )

    def render_config(self) -> str:
        """squid.conf for this store's settings (test-only overrides included)."""
        settings = self._settings
        return Template(squid_conf_template()).substitute(
            dns_nameservers=(
                f"dns_nameservers {settings.test_egress_resolver}"
                if settings.test_egress_resolver
                else "# dns_nameservers: the container's resolv.conf"
            ),
            max_connections=settings.egress_max_connections,
            blocked_addresses=" ".join(blocked_networks(settings.test_egress_exempt)),
            bump_ports=f"{BUMP_PORTS.start}-{BUMP_PORTS.stop - 1}",
            tls_outgoing=(
                "tls_outgoing_options cafile=/etc/jsbx/test-upstream-ca.pem"
                if settings.test_egress_upstream_ca
                else "# tls_outgoing_options: the system CAs only"
            ),
        )

    def state(self) -> str | None:
        """`running`, another Docker state, or None if there is no proxy container."""
        try:
            info = self._api.inspect_container(self.name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise APIConnectionError(f"Docker engine unreachable: {exc}") from exc
        return str(info["State"]["Status"])

    def ensure_running(self, networks: list[SandboxNetwork], deadline: float) -> None:
        """Start the proxy (creating it, or restarting it if it died) and wait until it listens.

        Raises:
            EgressUnavailableError: the image is missing or the proxy did not come up.
        """
        try:
            state = self.state()
            if state == "running":
                return
            self.prepare_folders()
            if state is None:
                self._create(networks)
            logger.info("starting egress proxy %s (was %s)", self.name, state or "absent")
            with docker_errors(f"starting egress proxy {self.name}"):
                self._api.start(self.name)
            self._wait_listening(deadline)
            self.warm_up(deadline)
        except EgressUnavailableError:
            raise
        except Exception as exc:
            raise EgressUnavailableError(
                f"Invalid network_policy: the egress proxy could not start, so the allowlist "
                f"cannot be enforced ({exc})",
                param="network_policy",
            ) from exc

    def _create(self, networks: list[SandboxNetwork]) -> None:
        settings = self._settings
        image = settings.egress_image
        try:
            self._api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            raise EgressUnavailableError(
                f"Invalid network_policy: {self._image_hint(image)}", param="network_policy"
            ) from None
        with docker_errors(f"creating egress proxy {self.name}"):
            self._ensure_egress_network()
            host_config = self._api.create_host_config(
                cap_drop=["ALL"],
                cap_add=_PROXY_CAPS,
                security_opt=["no-new-privileges:true"],
                read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=16m", "/run": "rw,nosuid,nodev,size=4m"},
                mem_limit="256m",
                memswap_limit="256m",
                pids_limit=128,
                network_mode=self.name,
                sysctls={
                    "net.ipv4.ip_forward": "0",
                    "net.ipv6.conf.all.disable_ipv6": "1",
                },
                log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"}),
                restart_policy=RestartPolicy(condition="on-failure", max_attempts=0),
                mounts=self._mounts(),
            )
            created: dict[str, Any] = self._api.create_container(
                image=image,
                name=self.name,
                labels=self._labels(_ROLE_PROXY),
                environment={"JSBX_EXEMPT": " ".join(settings.test_egress_exempt)},
                host_config=host_config,
            )
            if created.get("Warnings"):
                raise InternalServerError(f"the engine could not apply: {created['Warnings']}")
            for network in networks:
                self.connect(network)
            for extra in settings.test_egress_networks:
                self._api.connect_container_to_network(self.name, extra)

    def _image_hint(self, image: str) -> str:
        """What to do about a missing proxy image."""
        return (
            f"the egress proxy image {image} is missing; build it with "
            "`python -m jupyter_sandbox.backends.egress_image build`"
        )

    def _mounts(self) -> list[Mount]:
        """/etc/jsbx (read-only) and /var/log/jsbx: this host's folders."""
        return [
            Mount("/etc/jsbx", str(self.config_dir), type="bind", read_only=True),
            Mount("/var/log/jsbx", str(self.log_dir), type="bind"),
        ]

    def _ensure_egress_network(self) -> None:
        if self._api.networks(names=[self.name]):
            return
        self._api.create_network(
            self.name,
            driver="bridge",
            labels=self._labels(_ROLE_EGRESS_NETWORK),
            enable_ipv6=False,
            check_duplicate=True,
        )

    def _wait_listening(self, deadline: float) -> None:
        """Connect to squid's port on the egress network until it accepts, or fail."""
        while True:
            info = self._api.inspect_container(self.name)
            if info["State"]["Status"] not in ("running", "restarting", "created"):
                raise EgressUnavailableError(f"the proxy exited: {self._tail()}")
            address = (info["NetworkSettings"]["Networks"].get(self.name) or {}).get("IPAddress")
            if address and self._accepts(address):
                return
            if time.monotonic() > deadline:
                raise EgressUnavailableError(f"the proxy did not listen in time: {self._tail()}")
            time.sleep(0.05)  # squid's start-up writes nothing we could block on

    def _accepts(self, address: str) -> bool:
        """Whether squid accepts a connection at `address` (from this host)."""
        try:
            with socket.create_connection((address, PROXY_PORT), timeout=0.5):
                return True
        except OSError:
            return False

    def _engine_time(self) -> float:
        """Now on the engine's log clock (a local engine's is this host's)."""
        return time.time()

    def _tail(self) -> str:
        try:
            text = self._api.logs(self.name, tail=5).decode(errors="replace")
        except docker.errors.DockerException:
            return "(no log)"
        return " | ".join(line for line in text.splitlines() if line.strip())

    def reconfigure(self, deadline: float) -> None:
        """Make squid re-read its configuration (SIGHUP), then warm up every bump port's peer.

        Raises:
            EgressUnavailableError: squid did not come back in time.
        """
        started = self._engine_time() - 0.5
        with docker_errors(f"reconfiguring egress proxy {self.name}"):
            self._api.kill(self.name, signal="HUP")
            # Warming up before squid has taken the new configuration would warm the old one.
            while b"Accepting HTTP Socket connections" not in self._api.logs(
                self.name, stdout=True, stderr=True, since=started
            ):
                if time.monotonic() > deadline:
                    raise EgressUnavailableError(
                        f"the proxy did not reconfigure in time: {self._tail()}"
                    )
                time.sleep(0.05)
        self.warm_up(deadline)

    def warm_up(self, deadline: float) -> None:
        """Until each bump port's peer answers a CONNECT sent through it (squid counts a peer
        as down until it has probed it, and refuses with a 500 meanwhile); a no-op without
        secrets.

        Raises:
            EgressUnavailableError: a peer did not come up in time.
        """
        targets = self._warm_targets()
        if not targets:
            return
        command = ["python3", "-I", "-c", _WARM_UP, *(f"{port}:{host}" for port, host in targets)]
        while True:
            with docker_errors(f"warming up egress proxy {self.name}"):
                run = self._api.exec_create(self.name, command, user="proxy")
                output = self._api.exec_start(run["Id"]).decode(errors="replace")
                if self._api.exec_inspect(run["Id"]).get("ExitCode") == 0:
                    return
            if time.monotonic() > deadline:
                raise EgressUnavailableError(
                    f"the proxy's secret ports did not come up in time: {output.strip()[-300:]}"
                )
            time.sleep(0.2)

    def _warm_targets(self) -> list[tuple[int, str]]:
        return self.secrets.warm_targets()

    def connect(self, network: SandboxNetwork) -> None:
        """Put the proxy at `.2` on a sandbox network (idempotent)."""
        try:
            self._api.connect_container_to_network(
                self.name, network.name, ipv4_address=network.proxy_ip
            )
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc.explanation or exc):
                raise

    def create_sandbox_network(
        self, container_id: str, sandbox_labels: dict[str, str]
    ) -> SandboxNetwork:
        """An internal /29 for one sandbox, from the configured pool, with no host address."""
        pool = ipaddress.ip_network(self._settings.egress_subnet_pool)
        slots = 2 ** (_SUBNET_PREFIX - pool.prefixlen)
        name = network_name(container_id)
        chooser = random.SystemRandom()
        with docker_errors(f"creating the network of sandbox {container_id}"):
            for _ in range(64):
                start = int(pool.network_address) + chooser.randrange(slots) * 2 ** (
                    32 - _SUBNET_PREFIX
                )
                subnet = ipaddress.ip_network(f"{ipaddress.ip_address(start)}/{_SUBNET_PREFIX}")
                try:
                    self._api.create_network(
                        name,
                        driver="bridge",
                        internal=True,
                        enable_ipv6=False,
                        check_duplicate=True,
                        options={
                            # No address on the host's side of the bridge: no gateway, no host.
                            "com.docker.network.bridge.inhibit_ipv4": "true",
                            "com.docker.network.bridge.enable_ip_masquerade": "false",
                        },
                        ipam=IPAMConfig(
                            pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))]
                        ),
                        labels={**sandbox_labels, labels.ROLE: _ROLE_SANDBOX_NETWORK},
                    )
                except docker.errors.APIError as exc:
                    if "overlap" in str(exc.explanation or exc).lower():
                        continue  # another store or sandbox holds this slot
                    raise
                return SandboxNetwork.for_subnet(name, str(subnet))
        raise InternalServerError(
            f"no free /{_SUBNET_PREFIX} left in egress_subnet_pool {pool}", param="network_policy"
        )

    def sandbox_networks(self) -> list[SandboxNetwork]:
        """Every sandbox network of this store, as the engine has them."""
        selector = {
            "label": [
                f"{labels.MANAGED}=true",
                f"{labels.STORE}={self._settings.store_id}",
                f"{labels.ROLE}={_ROLE_SANDBOX_NETWORK}",
            ]
        }
        with docker_errors("listing sandbox networks"):
            found = self._api.networks(filters=selector)
        networks = []
        for entry in found:
            config = (entry.get("IPAM") or {}).get("Config") or []
            if config and config[0].get("Subnet"):
                networks.append(SandboxNetwork.for_subnet(entry["Name"], config[0]["Subnet"]))
        return networks

    def remove(self) -> None:
        """Remove the proxy container and its egress network; safe on nothing."""
        with docker_errors(f"removing egress proxy {self.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_container(self.name, force=True)
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_network(self.name)
        logger.info("removed egress proxy %s", self.name)


# Run inside the proxy (its loopback): one CONNECT per `port:host` through the front port,
# each sent to that port's peer; exit 1 unless all were answered 200.
_WARM_UP = f"""
import socket, sys
failed = []
for target in sys.argv[1:]:
    port, host = target.split(":", 1)
    try:
        with socket.create_connection(("127.0.0.1", {PROXY_PORT}), 2) as sock:
            sock.settimeout(2)
            sock.sendall(f"CONNECT {{host}}:443 HTTP/1.1\\r\\nHost: {{host}}:443\\r\\n"
                         f"X-Jsbx-Warm: {{port}}\\r\\n\\r\\n".encode())
            status = sock.recv(256).split(b" ")[1:2]
    except OSError as exc:
        status = [repr(exc).encode()]
    if status != [b"200"]:
        failed.append(f"{{target}}: {{status}}")
print(" ".join(failed))
sys.exit(1 if failed else 0)
"""


def _write_atomic(path: Path, text: str, mode: int) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.chmod(partial, mode)
    partial.replace(path)
