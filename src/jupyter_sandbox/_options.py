"""Short option spellings shared by every surface (CLI, kernelspec, provisioner, magics, panel).

`--network disabled`, `--network allowlist:a.com,b.com` (also `allow=a.com,b.com`) and
`--memory 1G` become the API's shapes here; the Client validates the values themselves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.types.container import Container, normalize_memory
from jupyter_sandbox.types.params import NetworkPolicyParam

MEMORY_HELP = (
    "Memory limit: 512m, 1g, 2g or 4g (16g and 64g only where the operator allows them); "
    "1G, 1GB and 1024m mean 1g."
)
NETWORK_HELP = (
    "'disabled' or 'allowlist:DOMAIN[,DOMAIN...]' (HTTP(S) to those domains only; "
    "'allow=DOMAIN,...' is the same)"
)
_ALLOWLIST_PREFIXES = ("allowlist:", "allowlist=", "allow=", "allow:")


def parse_network_option(text: str) -> NetworkPolicyParam:
    """The one `--network` grammar: `disabled` (or `none`, `off`), or `allowlist:a.com,b.com`
    (or `allow=a.com,b.com`), as a `network_policy` object.

    Raises:
        BadRequestError: the spelling is not one of those (`param="network_policy"`).
    """
    text = text.strip()
    if text.lower() in ("disabled", "none", "off"):
        return {"type": "disabled"}
    for prefix in _ALLOWLIST_PREFIXES:
        if text.lower().startswith(prefix):
            domains = [d.strip() for d in text[len(prefix) :].split(",") if d.strip()]
            if domains:
                return {"type": "allowlist", "allowed_domains": domains}
    raise BadRequestError(
        f"Invalid network policy {text!r}: use {NETWORK_HELP}", param="network_policy"
    )


def parse_network(value: str | Mapping[str, Any] | None) -> NetworkPolicyParam | None:
    """`parse_network_option` for a string; a policy object (a kernelspec's config) as it is,
    for the Client to validate; None stays None.

    Raises:
        BadRequestError: the string is not a `--network` spelling.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        return cast(NetworkPolicyParam, dict(value))
    return parse_network_option(value)


def parse_memory(value: str | None) -> str | None:
    """`1G`, `1gb`, `1024m` or `1g` as the API's `1g`; anything else is passed on as given
    for the Client to refuse with the tiers this host allows."""
    if value is None:
        return None
    try:
        return normalize_memory(value)
    except ValueError:
        return value


def describe_network(policy: Mapping[str, Any]) -> str:
    """`disabled`, or `allowlist:a.com,b.com`: a policy as `--network` spells it."""
    if policy.get("type") == "allowlist":
        domains = policy.get("allowed_domains") or policy.get("domains") or []
        return "allowlist:" + ",".join(str(d) for d in domains)
    return str(policy.get("type", "disabled"))


def describe_seconds(seconds: float) -> str:
    """`1h 05m`, `12m 30s` or `45s`; `expired` when not positive."""
    if seconds <= 0:
        return "expired"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def seconds_left(
    last_active_at: float, idle_minutes: int, expires_at: float, now: float | None = None
) -> float:
    """Seconds until a sandbox ends: the sooner of its idle and hard deadlines."""
    current = time.time() if now is None else now
    return min(last_active_at + idle_minutes * 60, expires_at) - current


def time_left(container: Container, now: float | None = None) -> float:
    """Seconds until the sandbox ends (idle or hard deadline, whichever is sooner)."""
    return seconds_left(
        container.last_active_at,
        container.expires_after.minutes,
        container.expires_at,
        time.time() if now is None else now,
    )
