"""Network policy in core: an allowlist must fit the operator's ceiling.

Everything else about networks (the sandbox's own network, the egress proxy, its log) is the
backend's (`Backend.attach_network`, `release_network`, `egress_log`; Docker's is
`backends/egress_network.py`).
"""

from __future__ import annotations

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist

__all__ = ["check_ceiling", "covers"]


def covers(ceiling: str, requested: str) -> bool:
    """Whether one ceiling entry permits one requested entry (both normalized)."""
    if not ceiling.startswith("*."):
        return requested == ceiling
    suffix = ceiling[1:]  # ".example.com"
    bare = requested[2:] if requested.startswith("*.") else requested
    if requested.startswith("*."):
        return bare == ceiling[2:] or bare.endswith(suffix)
    return bare.endswith(suffix)


def check_ceiling(settings: Settings, policy: NetworkPolicyAllowlist) -> None:
    """Refuse an allowlist the operator's ceiling (`egress_allowed_domains`) does not permit."""
    ceiling = settings.egress_allowed_domains
    if ceiling is None:
        return
    outside = [d for d in policy.allowed_domains if not any(covers(c, d) for c in ceiling)]
    if outside:
        raise BadRequestError(
            f"Invalid network_policy: {', '.join(outside)} not permitted on this host "
            f"(the operator allows: {', '.join(ceiling) or 'no domains'})",
            param="network_policy",
        )
