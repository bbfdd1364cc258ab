"""Allowlist egress on a remote Docker engine (a node): the same squid proxy, run ON that
engine, with every file it and its sandboxes need on the engine's volumes, never on this host.

On the engine, per store (all labelled like the local proxy's objects):

- `jsbx-egress-<store>`: the proxy, hardened as locally, its egress bridge its only route out,
  at `.2` on every sandbox's internal network; /etc/jsbx is the volume
  `jsbx-egress-<store>-config` mounted read-only, /var/log/jsbx the volume `...-log`.
- `jsbx-egress-<store>-files`: the keeper. No network, no capability, a read-only root, it
  runs `sleep` and only holds both volumes writable, so this host can put files there (the
  archive API, with owners and modes set in the tar) and remove them (`rm` by exec, as the
  files' owner: root for lists and bundles, squid's user for secrets).
- The config volume is the local `<home>/egress/config` (squid.conf, `policies/`, `secrets/`
  0700 squid's), plus `resolv.conf` (no nameserver) and `ca/<sandbox id>.pem` (the system CAs
  and the sandbox's own CA, domain_secrets only). A sandbox gets those two files bound
  read-only from the volume's mount point on the engine's machine: a path there, never here.

Isolation is the local design's: one internal /29 per sandbox (proxy `.2`, sandbox `.3`, no
gateway), the proxy the only thing on it, secrets readable by squid's user alone.

For a backend that places sandboxes on nodes (Swarm), the two halves of `attach` are public:
`prepare` before the sandbox exists (proxy up, the proxy on the sandbox's network, environment,
files to bind) and `admit` once its address is known (its list, and its secrets' rules).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import docker

from jupyter_sandbox.backends.egress import EgressUnavailableError, SandboxNetwork
from jupyter_sandbox.backends.egress_network import (
    CA_STORE,
    EgressNetworks,
    NetworkAttachment,
    parse_access_log,
    parse_inject_log,
    proxy_environment,
)
from jupyter_sandbox.backends.egress_secrets import (
    BUMP_PORTS,
    SecretEntry,
    make_ca,
    new_placeholder,
    render_sandbox_conf,
    sandbox_bundle,
    secret_domains,
    secrets_document,
)
from jupyter_sandbox.backends.remote_egress_proxy import PROXY_UID, RemoteEgressProxy, entry
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = ["RemoteEgressNetworks", "RemoteEgressProxy", "remote_egress"]


class RemoteEgressNetworks(EgressNetworks):
    """`EgressNetworks` for a remote engine: lists, secrets and bundles on its volumes."""

    _proxy: RemoteEgressProxy

    def __init__(self, settings: Settings, proxy: RemoteEgressProxy) -> None:
        super().__init__(settings, proxy)

    def check(self, policy: NetworkPolicyAllowlist) -> None:
        """Nothing to refuse: the tar gives the secret files squid's user (no root here)."""

    def attach(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkAttachment:
        """`prepare` on a fresh internal /29 of the engine, then `admit` its `.3`."""
        attachment = self.prepare(sandbox_id, policy, labels, deadline)
        self.admit(sandbox_id, policy, attachment.network.sandbox_ip, deadline)
        return attachment

    def prepare(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
        network: SandboxNetwork | None = None,
    ) -> NetworkAttachment:
        """Before the sandbox exists: the proxy up, the proxy at `network.proxy_ip` on the
        sandbox's network (None: a new internal /29 here), the CA and its bundle.

        The sandbox can reach nothing until `admit` names its address.

        Raises:
            EgressUnavailableError: the proxy cannot run (creation must then fail).
        """
        proxy = self._proxy
        with self._locked():
            proxy.ensure_running(proxy.sandbox_networks(), deadline)
            if network is None:
                network = proxy.create_sandbox_network(sandbox_id, labels)
            proxy.connect(network)
            environment = proxy_environment(network.proxy_ip)
            resolv_conf = proxy.engine_path("resolv.conf")
            if not policy.domain_secrets:
                return NetworkAttachment(network, resolv_conf, environment)
            placeholders = {s.name: new_placeholder(s.name) for s in policy.domain_secrets}
            entries = [
                SecretEntry(s.domain, s.name, placeholders[s.name], s.value.get_secret_value())
                for s in policy.domain_secrets
            ]
            used = {int(port) for port in proxy.state_files()["secrets"]}
            port = next((p for p in BUMP_PORTS if p not in used), None)
            if port is None:
                raise EgressUnavailableError(
                    "Invalid network_policy.domain_secrets: every bump port of the egress "
                    "proxy is in use",
                    param="network_policy.domain_secrets",
                )
            cert, key = make_ca(sandbox_id, self._settings.max_lifetime_seconds // 86400 + 2)
            proxy.put(
                [
                    entry(f"secrets/{port}.pem", (cert + key).encode(), uid=PROXY_UID, mode=0o600),
                    entry(
                        f"secrets/{port}.json",
                        secrets_document(sandbox_id, entries).encode(),
                        uid=PROXY_UID,
                        mode=0o600,
                    ),
                    entry(f"ca/{sandbox_id}.pem", sandbox_bundle(cert).encode(), uid=0, mode=0o644),
                ]
            )
        environment.update(placeholders)
        environment.update({"SSL_CERT_FILE": CA_STORE, "REQUESTS_CA_BUNDLE": CA_STORE})
        return NetworkAttachment(
            network=network,
            resolv_conf=resolv_conf,
            environment=environment,
            ca_bundle=proxy.engine_path(f"ca/{sandbox_id}.pem"),
        )

    def admit(
        self, sandbox_id: str, policy: NetworkPolicyAllowlist, sandbox_ip: str, deadline: float
    ) -> None:
        """Once the sandbox's address is known: its list, and its secrets' bump rules.

        Raises:
            EgressUnavailableError: squid did not take the secrets' rules in time.
        """
        proxy = self._proxy
        with self._locked():
            self._write_policy(sandbox_ip, sandbox_id, policy.allowed_domains)
            if not policy.domain_secrets:
                return
            owned = [
                int(port)
                for port, (owner, _, _) in proxy.state_files()["secrets"].items()
                if owner == sandbox_id
            ]
            if not owned:
                raise EgressUnavailableError(
                    f"Invalid network_policy.domain_secrets: sandbox {sandbox_id} was not "
                    "prepared on this engine",
                    param="network_policy.domain_secrets",
                )
            domains = secret_domains([s.domain for s in policy.domain_secrets])
            rules = render_sandbox_conf(sandbox_id, owned[0], sandbox_ip, domains)
            proxy.put(
                [entry(f"secrets/{owned[0]}.conf", rules.encode(), uid=PROXY_UID, mode=0o600)]
            )
            proxy.reconfigure(deadline)

    def _write_policy(self, address: str, container_id: str, domains: list[str]) -> None:
        document = json.dumps({"container_id": container_id, "allowed_domains": domains})
        self._proxy.put([entry(f"policies/{address}.json", document.encode(), uid=0, mode=0o644)])

    def _drop_policies(self, keep: set[str]) -> None:
        state = self._proxy.state_files()
        names = [f"policies/{n}" for n, owner in state["policies"].items() if owner not in keep]
        self._proxy.unlink(names, as_proxy=False)

    def _drop_secrets(self, keep: set[str]) -> bool:
        proxy = self._proxy
        state = proxy.state_files()
        ports = [port for port, (owner, _, _) in state["secrets"].items() if owner not in keep]
        # The .conf first: squid stops using the port before its key and values go.
        proxy.unlink([f"secrets/{p}.conf" for p in ports], as_proxy=True)
        proxy.unlink(
            [f"secrets/{p}{suffix}" for p in ports for suffix in (".pem", ".json")], as_proxy=True
        )
        proxy.unlink([f"ca/{b}.pem" for b in state["bundles"] if b not in keep], as_proxy=False)
        if ports and keep and proxy.state() == "running":
            proxy.reconfigure(time.monotonic() + self._settings.egress_start_timeout)
        return bool(ports)

    def reconcile(self, needed_ids: Callable[[], set[str]]) -> list[str]:
        """As on one engine; and an idle keeper or volume left without its proxy (a crash
        between the two) goes too."""
        actions = super().reconcile(needed_ids)
        if not self._proxy.folder.exists():
            return actions
        with self._locked():
            if not needed_ids() and self._proxy.state() is None and self._proxy.has_files():
                self._proxy.remove()
                actions.append("removed the idle egress proxy's files")
        return actions

    def log(self, container_id: str) -> list[EgressDecision]:
        """The proxy's decisions about one sandbox (its logs go with the proxy)."""
        access = self._proxy.read_log("access.log").splitlines()
        injected = self._proxy.read_log("inject.log").splitlines()
        decisions = parse_access_log(access, container_id)
        decisions += parse_inject_log(injected, container_id)
        return sorted(decisions, key=lambda d: d.time)


def remote_egress(settings: Settings, engine: docker.DockerClient) -> RemoteEgressNetworks:
    """Allowlist egress for sandboxes on `engine` (a remote engine, or one Swarm node's)."""
    return RemoteEgressNetworks(settings, RemoteEgressProxy(settings, engine))
