"""Short option spellings shared by the Jupyter surfaces (kernelspec, provisioner, magics).

`--network disabled`, `--network allow=a.com,b.com` (also `allowlist:a.com,b.com`) and
`--memory 1G` become the API's shapes here; the Client validates the values themselves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from jupyter_sandbox._exceptions import BadRequestError

NETWORK_HELP = "'disabled', or 'allow=DOMAIN[,DOMAIN...]' (HTTP(S) to those domains only)"


def parse_network(value: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A `network_policy` object from `disabled`, `allow=a.com,b.com`, or a policy dict.

    Raises:
        BadRequestError: the spelling is not one of those.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    text = value.strip()
    if text.lower() in ("disabled", "none", "off"):
        return {"type": "disabled"}
    for prefix in ("allow=", "allowlist=", "allowlist:", "allow:"):
        if text.lower().startswith(prefix):
            domains = [d.strip() for d in text[len(prefix) :].split(",") if d.strip()]
            if domains:
                return {"type": "allowlist", "allowed_domains": domains}
    raise BadRequestError(
        f"Invalid network policy {value!r}: use {NETWORK_HELP}", param="network_policy"
    )


def parse_memory(value: str | None) -> str | None:
    """`1G`, `1gb` or `1g` as the API's `1g` (the Client checks the tier)."""
    if value is None:
        return None
    text = value.strip().lower()
    return text[:-1] if text.endswith(("gb", "mb")) else text


def describe_network(policy: Mapping[str, Any]) -> str:
    """`disabled`, or `allow=a.com,b.com`: the short form of a policy."""
    if policy.get("type") == "allowlist":
        domains = policy.get("allowed_domains") or policy.get("domains") or []
        return "allow=" + ",".join(str(d) for d in domains)
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
