"""Show why the sandbox's egress proxy refused an HTTPS tunnel.

Python's http.client reports a refused CONNECT as "Tunnel connection failed: 403 Forbidden"
and drops the body, where the proxy says what was blocked and why. Loaded at start-up by
`sandbox_egress_reason.pth`; urllib, urllib3 and requests all tunnel through http.client.
"""

import http.client

_MAX_REASON = 2048
_original_tunnel = http.client.HTTPConnection._tunnel  # type: ignore[attr-defined]


class _TunnelResponse(http.client.HTTPResponse):
    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if status != 200:
            try:
                http.client.parse_headers(self.fp)
                body = self.fp.read(_MAX_REASON).decode("utf-8", "replace").strip()
            except (OSError, http.client.HTTPException):
                body = ""
            if body:
                reason = f"{reason.strip()}: {body}"
        return version, status, reason


def _tunnel(self: http.client.HTTPConnection) -> None:
    self.response_class = _TunnelResponse  # shadows the class attribute for the tunnel only
    try:
        _original_tunnel(self)
    finally:
        del self.response_class


http.client.HTTPConnection._tunnel = _tunnel  # type: ignore[attr-defined]
