"""Allowlist abuse through the egress proxy: DNS rebinding and slowloris. Every upstream and
the DNS authority are the tests' own (test_network_lab); nothing leaves this machine."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.types.execution import Execution, ExecutionOutput
from jupyter_sandbox.types.params import NetworkPolicyParam
from tests.integration.test_network import prepare, run
from tests.integration.test_network_lab import Lab, egress_client, lab

__all__ = ["egress_client", "lab"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.docker


def test_dns_rebinding_never_reaches_the_private_address(egress_client: Client, lab: Lab) -> None:
    """rebind.test answers with TTL 0, alternating the lab's upstream and a private service
    that the proxy could reach: every request connects only to an address it vetted."""
    client = egress_client
    container = client.containers.create(
        name="rebind", network_policy={"type": "allowlist", "allowed_domains": ["rebind.test"]}
    )
    try:
        prepare(client, container.id, lab)
        results = run(
            client,
            container.id,
            "print(json.dumps([fetch('http://rebind.test/') for _ in range(12)] + "
            "[raw('CONNECT rebind.test:443 HTTP/1.1\\r\\nHost: rebind.test:443\\r\\n\\r\\n') "
            "for _ in range(6)]))",
        )
    finally:
        client.containers.delete(container.id)
    assert lab.dns_queries().count("rebind.test") >= 1
    for status, body in results:
        # Either the vetted upstream answered, or the private answer was refused by name.
        if status == 200:
            assert body.startswith("hello from upstream") or body == "", body
        else:
            assert status == 403, results
            assert "private, loopback, link-local or metadata address" in body
    assert lab.connections("internal") == []  # the private service never saw a connection
    assert lab.requests("internal") == []


SLOWLORIS = """
import socket, time
held, refused = [], 0
for _ in range({count}):
    try:
        sock = socket.create_connection((PROXY_HOST, int(PROXY_PORT)), timeout=5)
        sock.sendall(b"GET http://allowed.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\n")  # no end
        held.append(sock)
    except OSError:
        refused += 1
time.sleep(2)
def still_open(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
held = [sock for sock in held if still_open(sock)]
print("holding", len(held), flush=True)
time.sleep({hold})
print(json.dumps({{"open": len(held), "refused": refused, "own_fetch": fetch("http://allowed.test/")[0]}}))
"""


def test_slowloris_is_capped_per_sandbox_and_the_neighbour_is_unaffected(
    make_client: Callable[..., Client], lab: Lab
) -> None:
    """One sandbox opens 1000 connections that never finish their headers: the proxy keeps at
    most `egress_max_connections` of them, and another sandbox gets through meanwhile."""
    client = make_client(**lab.settings, egress_max_connections=16)
    policy: NetworkPolicyParam = {"type": "allowlist", "allowed_domains": ["allowed.test"]}
    attacker = client.containers.create(name="slowloris", network_policy=policy)
    neighbour = client.containers.create(name="neighbour", network_policy=policy)
    try:
        for container in (attacker, neighbour):
            prepare(client, container.id, lab)
        holding = threading.Event()
        outcome: list[Execution] = []

        def on_output(output: ExecutionOutput) -> None:
            if output.type == "stream" and "holding" in output.text:
                holding.set()

        def attack() -> None:
            code = SLOWLORIS.format(count=1000, hold=20)
            outcome.append(
                client.containers.execute(attacker.id, code, timeout=300, on_output=on_output)
            )

        attacker_thread = threading.Thread(target=attack)
        attacker_thread.start()
        assert holding.wait(240), "the attacker never finished opening its connections"
        during = run(client, neighbour.id, "print(json.dumps(fetch('http://allowed.test/')))")
        attacker_thread.join(300)
    finally:
        client.containers.delete(attacker.id)
        client.containers.delete(neighbour.id)
    assert during[0] == 200  # the neighbour was served while the attacker held its connections
    (execution,) = outcome
    assert execution.status == "ok", execution
    result = json.loads(execution.stdout.strip().splitlines()[-1])
    # Squid counts a connection once accepted, so it keeps the cap plus the one being judged;
    # the other ~980 were closed at once, and the attacker's own new request gets nowhere.
    assert 0 < result["open"] <= 16 + 1, result
    assert result["own_fetch"] != 200, result


SNI_PROBE = """
def tunnel(sni):
    with socket.create_connection((PROXY_HOST, int(PROXY_PORT)), timeout=20) as sock:
        sock.sendall(b"CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n")
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return ["closed", head.decode(errors="replace")]
            head += chunk
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            return [status, ""]
        context = ssl.create_default_context(cafile="/tmp/lab-ca.pem")
        try:
            with context.wrap_socket(sock, server_hostname=sni) as tls:
                request = f"GET / HTTP/1.1\\r\\nHost: {sni}\\r\\nConnection: close\\r\\n\\r\\n"
                tls.sendall(request.encode())
                data = b""
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            return ["ok", data.decode(errors="replace")]
        except OSError as exc:
            return ["refused", type(exc).__name__]
print(json.dumps({
    "same": tunnel("allowed.test"),
    "case": tunnel("ALLOWED.TEST"),
    "fronted": tunnel("other.test"),
    "fronted_sub": tunnel("a.allowed.test.evil.test"),
}))
"""


def test_a_tunnel_reaches_only_the_connect_hosts_address_whatever_its_sni(
    egress_client: Client, lab: Lab
) -> None:
    """Fronting attempts: CONNECT to an allowed host, then a ClientHello naming another server.
    The proxy never reads the SNI (a refused CONNECT must stay a readable plain-HTTP 403, and
    squid would bump every refusal on a peeking port), so what holds is the address: the bytes
    go to the vetted address of the CONNECT host and nowhere else. A shared front end that
    routes by SNI is the residual risk docs/security.md names."""
    client = egress_client
    container = client.containers.create(
        name="fronting",
        network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
    )
    try:
        prepare(client, container.id, lab)
        before = len(lab.connections("upstream"))
        result = run(client, container.id, SNI_PROBE)
        upstream_connections = lab.connections("upstream")[before:]
    finally:
        client.containers.delete(container.id)
    assert result["same"][0] == "ok"
    assert "hello from upstream host=allowed.test" in result["same"][1]
    # Served, but only by the allowed host's own address (whose certificate covers other.test).
    assert result["case"][0] == result["fronted"][0] == "ok", result
    assert "hello from upstream host=other.test" in result["fronted"][1]
    # No certificate there names it, so the client itself gives up after the handshake.
    assert result["fronted_sub"][0] == "refused", result
    # The three completed handshakes were all with the upstream's vetted address.
    assert len(upstream_connections) == 3, upstream_connections
    assert lab.connections("internal") == []
