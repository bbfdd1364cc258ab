"""The Docker backend's network owner: put allowlist sandboxes behind the egress proxy, keep
the proxy alive exactly while some sandbox needs it, and read back its decisions.

Path of an allowed request (see docs/architecture.md, Network):
kernel → HTTP(S)_PROXY = <proxy .2>:3128 on the sandbox's own internal /29 → squid (the
egress-policy helper checks the sandbox's list, squid refuses bad ports and private
addresses) → the proxy's egress bridge → the internet.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.egress import PROXY_PORT, EgressProxy, SandboxNetwork
from jupyter_sandbox.backends.egress_secrets import SecretEntry, new_placeholder
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = [
    "EgressNetworks",
    "NetworkAttachment",
    "parse_access_log",
    "parse_inject_log",
    "proxy_environment",
]

logger = logging.getLogger(__name__)

# egress-policy's reason codes, and squid's own refusal pages, in words.
_REASONS = {
    "not_listed": "the host is not on the sandbox's allowlist",
    "ip_literal": "IP address literals are not allowed",
    "port": "only port 80, and CONNECT to 443, are allowed",
    "bad_host": "not a valid host name",
    "no_host": "the request names no host",
    "unknown_source": "not a sandbox of this proxy",
    "helper_error": "the policy check failed",
    "ERR_JSBX_PORT": "only port 80, and CONNECT to 443, are allowed",
    "ERR_JSBX_ADDRESS": "the name resolves to a private, loopback, link-local or metadata address",
    "ERR_JSBX_LIMIT": "too many open connections",
    "ERR_JSBX_PROXY": "the proxy's own pages (cache manager, internal URLs) are not reachable",
    "ERR_JSBX_SCHEME": "only http:// requests, and CONNECT to 443, are allowed",
    "ERR_JSBX_METHOD": "the request method is not allowed",
}


@dataclass(frozen=True)
class NetworkAttachment:
    """Where an allowlist sandbox sits and what its kernel is told."""

    network: SandboxNetwork
    resolv_conf: str
    """File on the engine's machine bound over /etc/resolv.conf: no nameserver at all."""
    environment: dict[str, str]
    ca_bundle: str | None = None
    """File on the engine's machine bound read-only over the system CA store: the system
    CAs and the sandbox's own CA (domain_secrets only)."""


CA_STORE = "/etc/ssl/certs/ca-certificates.crt"
"""The kernel image's system CA bundle (Debian's path), which `ca_bundle` replaces."""


def proxy_environment(proxy_ip: str) -> dict[str, str]:
    """The proxy variables, in the spellings curl, pip, requests and urllib read."""
    url = f"http://{proxy_ip}:{PROXY_PORT}"
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


def parse_access_log(lines: Sequence[str], container_id: str) -> list[EgressDecision]:
    """The decisions about one sandbox's requests, from squid's `jsbx` log format."""
    decisions: list[EgressDecision] = []
    for line in lines:
        fields = line.split()
        if len(fields) != 9:
            continue
        stamp, _source, tag, method, host, port, status, error, server = fields
        owner, _, reason = tag.replace("%20", " ").partition(" ")
        if owner != container_id:
            continue
        denied = error.startswith("ERR_JSBX_") or reason != "allowed"
        if error.startswith("ERR_JSBX_") and error != "ERR_JSBX_POLICY":
            reason = error
        decisions.append(
            EgressDecision(
                time=float(stamp),
                container_id=owner,
                method=method,
                host=host,
                port=int(port) if port.isdigit() else None,
                decision="denied" if denied else "allowed",
                reason=_REASONS.get(reason, reason) if denied else None,
                status=int(status) if status.isdigit() else None,
                server_ip=None if server == "-" else server,
            )
        )
    return decisions


def parse_inject_log(lines: Sequence[str], container_id: str) -> list[EgressDecision]:
    """egress-inject's lines about one sandbox (`TIME ID injected|placeholder-elsewhere NAME
    HOST`): which secret went into a request, by name; the log never holds a value."""
    decisions: list[EgressDecision] = []
    for line in lines:
        fields = line.split()
        if len(fields) != 5 or fields[1] != container_id:
            continue
        stamp, owner, verb, name, host = fields
        if verb == "injected":
            reason = f"secret {name} injected"
        elif verb == "placeholder-elsewhere":
            reason = f"placeholder of secret {name} sent to another domain, left unchanged"
        else:
            continue
        try:
            when = float(stamp)
        except ValueError:
            continue
        decisions.append(
            EgressDecision(
                time=when,
                container_id=owner,
                method="HTTPS",
                host=host,
                port=443,
                decision="allowed",
                reason=reason,
                status=None,
                server_ip=None,
                secret=name,
            )
        )
    return decisions


class EgressNetworks:
    """Allowlist sandboxes' networks: attach at create, release at the end, reconcile.

    Which sandboxes still need the proxy is the caller's knowledge (`needed`, asked under
    this store's proxy lock, so a create attaching meanwhile is never dropped)."""

    def __init__(self, settings: Settings, proxy: EgressProxy) -> None:
        self._settings = settings
        self._proxy = proxy

    def check(self, policy: NetworkPolicyAllowlist) -> None:
        """Refuse what this host cannot enforce (domain secrets need root)."""
        if policy.domain_secrets and os.geteuid() != 0:
            # The secret files must belong to squid's user alone; only root can arrange that.
            raise BadRequestError(
                "Invalid network_policy.domain_secrets: this service does not run as root, so "
                "the egress proxy cannot keep secrets private to itself; leave domain_secrets "
                "out or run the service as root",
                param="network_policy.domain_secrets",
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time decides about the proxy (start, attach, remove)."""
        self._proxy.folder.mkdir(parents=True, exist_ok=True)
        with open(self._proxy.folder / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def attach(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkAttachment:
        """Start the proxy if needed, make the sandbox's network, and register its list.

        Raises:
            EgressUnavailableError: the proxy cannot run (creation must then fail).
        """
        with self._locked():
            self._proxy.ensure_running(self._proxy.sandbox_networks(), deadline)
            network = self._proxy.create_sandbox_network(sandbox_id, labels)
            self._proxy.connect(network)
            self._write_policy(network.sandbox_ip, sandbox_id, policy.allowed_domains)
            environment = proxy_environment(network.proxy_ip)
            if not policy.domain_secrets:
                return NetworkAttachment(network, str(self._proxy.resolv_conf), environment)
            placeholders = {s.name: new_placeholder(s.name) for s in policy.domain_secrets}
            entries = [
                SecretEntry(s.domain, s.name, placeholders[s.name], s.value.get_secret_value())
                for s in policy.domain_secrets
            ]
            days = self._settings.max_lifetime_seconds // 86400 + 2
            self._proxy.secrets.add(sandbox_id, network.sandbox_ip, entries, days)
            self._proxy.reconfigure(deadline)
        environment.update(placeholders)
        environment.update({"SSL_CERT_FILE": CA_STORE, "REQUESTS_CA_BUNDLE": CA_STORE})
        return NetworkAttachment(
            network=network,
            resolv_conf=str(self._proxy.resolv_conf),
            environment=environment,
            ca_bundle=str(self._proxy.secrets.bundle_path(sandbox_id)),
        )

    def _write_policy(self, address: str, container_id: str, domains: list[str]) -> None:
        path = self._proxy.policy_dir / f"{address}.json"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps({"container_id": container_id, "allowed_domains": domains}))
        os.chmod(partial, 0o644)
        partial.replace(path)

    def release(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Forget a sandbox's list and secrets; remove the proxy if no sandbox needs it."""
        with self._locked():
            keep = needed() - {sandbox_id}
            self._drop_policies(keep=keep)
            self._drop_secrets(keep)
            if not keep:
                self._proxy.remove()

    def _drop_policies(self, keep: set[str]) -> None:
        """Remove every policy file whose sandbox is not in `keep`."""
        if not self._proxy.policy_dir.is_dir():
            return
        for path in self._proxy.policy_dir.glob("*.json"):
            try:
                owner = json.loads(path.read_text()).get("container_id")
            except (OSError, ValueError):
                owner = None
            if owner not in keep:
                path.unlink(missing_ok=True)

    def _drop_secrets(self, keep: set[str]) -> bool:
        """Remove the secret files of sandboxes not in `keep`; squid forgets them at once."""
        if not self._proxy.secrets.drop(keep):
            return False
        if keep and self._proxy.state() == "running":
            self._proxy.reconfigure(time.monotonic() + self._settings.egress_start_timeout)
        return True

    def reconcile(self, needed_ids: Callable[[], set[str]]) -> list[str]:
        """Proxy up (restarted if it died) while needed, gone otherwise; stale lists dropped."""
        actions: list[str] = []
        if not self._proxy.folder.exists() and not needed_ids():
            return actions  # this store never ran a proxy: no Docker call on the hot path
        with self._locked():
            needed = needed_ids()
            self._drop_policies(keep=needed)
            if self._drop_secrets(needed):
                actions.append("dropped domain secrets of ended sandboxes")
            state = self._proxy.state()
            if needed and state != "running":
                deadline = time.monotonic() + self._settings.egress_start_timeout
                self._proxy.ensure_running(self._proxy.sandbox_networks(), deadline)
                actions.append(f"restarted egress proxy (was {state or 'absent'})")
            elif not needed and state is not None:
                self._proxy.remove()
                actions.append("removed idle egress proxy")
        return actions

    def log(self, container_id: str) -> list[EgressDecision]:
        """Every decision the proxy logged about one sandbox, oldest first."""
        decisions: list[EgressDecision] = []
        for path, parse in (
            (self._proxy.access_log, parse_access_log),
            (self._proxy.inject_log, parse_inject_log),
        ):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            decisions.extend(parse(text.splitlines(), container_id))
        return sorted(decisions, key=lambda d: d.time)
