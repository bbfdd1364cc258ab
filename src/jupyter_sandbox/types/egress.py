"""One decision of the egress proxy about one request (`client.containers.egress_log`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class EgressDecision(BaseModel):
    """An allowed or refused request from an allowlist sandbox, as the proxy logged it."""

    time: float
    """Unix time the proxy finished with the request (a tunnel: when it closed)."""
    container_id: str
    method: str
    """`CONNECT` for HTTPS, else the HTTP method."""
    host: str
    port: int | None
    decision: Literal["allowed", "denied"]
    reason: str | None
    """Why it was refused, or what the proxy did to an allowed request (a domain secret
    injected, by name); None for a plain allowed request."""
    status: int | None
    """The status the sandbox got (403 on refusal; upstream's status, or 200 for a tunnel)."""
    server_ip: str | None
    """The address the proxy connected to, if it connected at all."""
    secret: str | None = None
    """The name of the domain secret this entry is about (never its value), if any."""
