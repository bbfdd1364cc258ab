"""The seed's allowlist example: a refused HTTPS request says what was blocked and why."""

from __future__ import annotations

import pytest

from jupyter_sandbox import Client

pytestmark = pytest.mark.docker

# Unlisted names are refused by the proxy before any DNS lookup, so nothing leaves the host.
_PROBE = """
import urllib.request
for url in ("https://evil.example/", "http://evil.example/"):
    try:
        urllib.request.urlopen(url, timeout=20)
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


def test_refused_https_and_http_show_the_reason(client: Client) -> None:
    container = client.containers.create(
        name="weather",
        network_policy={
            "type": "allowlist",
            "domains": ["api.weatherapi.com", "*.githubusercontent.com"],
        },
    )
    try:
        execution = client.containers.execute(container.id, _PROBE, timeout=60)
        reason = (
            "egress to evil.example blocked by network policy "
            "(allowlist: api.weatherapi.com, *.githubusercontent.com)"
        )
        assert execution.stdout.splitlines() == [
            f"URLError <urlopen error Tunnel connection failed: 403 Forbidden: {reason}>",
            "HTTPError HTTP Error 403: Forbidden",
        ]
        denied = [d for d in client.containers.egress_log(container.id) if d.host == "evil.example"]
        assert [(d.method, d.decision, d.status) for d in denied] == [
            ("CONNECT", "denied", 403),
            ("GET", "denied", 403),
        ]
    finally:
        client.containers.delete(container.id)
