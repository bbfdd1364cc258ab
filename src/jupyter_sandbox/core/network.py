"""Network policy: check allowlists against the operator's ceiling, put allowlist sandboxes
behind the egress proxy, keep the proxy alive exactly while some sandbox needs it, and read
back its decisions.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.egress import PROXY_PORT, EgressProxy, SandboxNetwork
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = ["EgressService", "NetworkAttachment", "covers", "parse_access_log", "proxy_environment"]

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
    """Host file bound over /etc/resolv.conf: no nameserver at all."""
    environment: dict[str, str]


def covers(ceiling: str, requested: str) -> bool:
    """Whether one ceiling entry permits one requested entry (both normalized)."""
    if not ceiling.startswith("*."):
        return requested == ceiling
    suffix = ceiling[1:]  # ".example.com"
    bare = requested[2:] if requested.startswith("*.") else requested
    if requested.startswith("*."):
        return bare == ceiling[2:] or bare.endswith(suffix)
    return bare.endswith(suffix)


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


class EgressService:
    """Allowlist sandboxes' side of create, destroy and reconcile."""

    def __init__(self, settings: Settings, store: Store, proxy: EgressProxy) -> None:
        self._settings = settings
        self._store = store
        self._proxy = proxy

    def check(self, policy: NetworkPolicyAllowlist) -> None:
        """Refuse an allowlist the operator's ceiling does not permit."""
        ceiling = self._settings.egress_allowed_domains
        if ceiling is None:
            return
        outside = [d for d in policy.allowed_domains if not any(covers(c, d) for c in ceiling)]
        if outside:
            raise BadRequestError(
                f"Invalid network_policy: {', '.join(outside)} not permitted on this host "
                f"(the operator allows: {', '.join(ceiling) or 'no domains'})",
                param="network_policy",
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
        record: ContainerRecord,
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
            network = self._proxy.create_sandbox_network(record.id, labels)
            self._proxy.connect(network)
            self._write_policy(network.sandbox_ip, record.id, policy.allowed_domains)
        return NetworkAttachment(
            network=network,
            resolv_conf=str(self._proxy.resolv_conf),
            environment=proxy_environment(network.proxy_ip),
        )

    def _write_policy(self, address: str, container_id: str, domains: list[str]) -> None:
        path = self._proxy.policy_dir / f"{address}.json"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps({"container_id": container_id, "allowed_domains": domains}))
        os.chmod(partial, 0o644)
        partial.replace(path)

    def release(self, record: ContainerRecord) -> None:
        """Forget a sandbox's list; remove the proxy if no other sandbox needs it."""
        if record.network_policy.get("type") != "allowlist":
            return
        with self._locked():
            self._drop_policies(keep=self._live_allowlist_ids(exclude=record.id))
            if not self._live_allowlist_ids(exclude=record.id):
                self._proxy.remove()

    def _live_allowlist_ids(self, exclude: str | None = None) -> set[str]:
        return {
            r.id
            for r in self._store.all(statuses=("initializing", "ready"))
            if not r.deleted and r.id != exclude and r.network_policy.get("type") == "allowlist"
        }

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

    def reconcile(self) -> list[str]:
        """Proxy up (restarted if it died) while needed, gone otherwise; stale lists dropped."""
        actions: list[str] = []
        if not self._proxy.folder.exists() and not self._live_allowlist_ids():
            return actions  # this store never ran a proxy: no Docker call on the hot path
        with self._locked():
            needed = self._live_allowlist_ids()
            self._drop_policies(keep=needed)
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
        try:
            text = self._proxy.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return parse_access_log(text.splitlines(), container_id)
