"""The egress proxy itself is no destination (issue 12): its cache manager and internal URLs in
every spelling, schemes other than http, methods other than a short list, extra listening
services, and headers that would name the sandbox or the proxy. One sandbox runs every probe
once (module fixture); each test checks one promise against what the sandbox, the lab's
upstream and the egress log saw. Every upstream is the tests' own (test_network_lab)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest

from jupyter_sandbox.types.egress import EgressDecision
from tests.conftest import SESSION_RUN, TEST_LABEL, labelled_client, remove_labelled
from tests.integration.test_network import prepare, run
from tests.integration.test_network_lab import Lab, lab

__all__ = ["lab"]  # fixture, re-exported for pytest

pytestmark = pytest.mark.docker

PROXY_PAGE = "the proxy's own pages (cache manager, internal URLs) are not available"
SCHEME_PAGE = "the {scheme} scheme is not allowed, only http:// requests and CONNECT to port 443"
METHOD_PAGE = "the {method} method is not allowed"
# What a manager page would show: its menu, client_list's heading, squid's info page.
MANAGER_WORDS = (
    "Cache Manager Interface",
    "Cache Clients:",
    "Squid Object Cache",
    "Currently established connections",
)

# `exchange` sends raw requests on one connection and returns [status, head, body] for each;
# `{ip}`, `{name}` and `{port}` in a request stand for the proxy's address, hostname and port.
PROBE = r"""
def read_response(sock, head_only=False):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return ["closed", data.decode(errors="replace"), ""]
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lower = head.lower()
    length = None
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
    if head_only or head.startswith(b"HTTP/1.1 200 Connection established"):
        length = 0
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    status = head.split(b" ", 2)[1].decode()
    return [int(status) if status.isdigit() else status, head.decode(errors="replace"),
            body.decode(errors="replace")]

def exchange(*requests, head_only=False):
    answers = []
    with socket.create_connection((PROXY_HOST, int(PROXY_PORT)), timeout=20) as sock:
        for request in requests:
            request = request.replace("{ip}", PROXY_HOST).replace("{port}", PROXY_PORT)
            sock.sendall(request.replace("{name}", "jupyter-sandbox-egress").encode())
            try:
                answers.append(read_response(sock, head_only))
            except OSError as exc:
                answers.append(["error", type(exc).__name__, ""])
    return answers if len(answers) > 1 else answers[0]

def one(request_line, *headers):
    return exchange(request_line + "\r\n" + "".join(h + "\r\n" for h in headers)
                    + "Connection: close\r\n\r\n")

def udp_answer(port, payload):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    try:
        sock.sendto(payload, (PROXY_HOST, port))
        return sock.recv(2048).hex()
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()

MANAGER = {
    "cache_object_listed": "GET cache_object://allowed.test/client_list HTTP/1.1",
    "cache_object_listed_port": "GET cache_object://allowed.test:80/client_list HTTP/1.1",
    "cache_object_upper": "GET CACHE_OBJECT://allowed.test/menu HTTP/1.1",
    "cache_object_proxy_name": "GET cache_object://{name}/client_list HTTP/1.1",
    "cache_object_proxy_name_port": "GET cache_object://{name}:{port}/client_list HTTP/1.1",
    "cache_object_proxy_ip": "GET cache_object://{ip}/client_list HTTP/1.1",
    "cache_object_proxy_ip_port": "GET cache_object://{ip}:{port}/client_list HTTP/1.1",
    "internal_mgr_listed": "GET http://allowed.test/squid-internal-mgr/client_list HTTP/1.1",
    "internal_mgr_listed_port": "GET http://allowed.test:80/squid-internal-mgr/menu HTTP/1.1",
    "internal_mgr_proxy_name": "GET http://{name}/squid-internal-mgr/client_list HTTP/1.1",
    "internal_mgr_proxy_name_port": "GET http://{name}:{port}/squid-internal-mgr/menu HTTP/1.1",
    "internal_mgr_proxy_ip": "GET http://{ip}/squid-internal-mgr/client_list HTTP/1.1",
    "internal_mgr_proxy_ip_port": "GET http://{ip}:{port}/squid-internal-mgr/client_list HTTP/1.1",
    "internal_mgr_origin_form": "GET /squid-internal-mgr/client_list HTTP/1.1",
    "internal_mgr_escaped": "GET http://allowed.test/%73quid-internal-mgr/menu HTTP/1.1",
}
MANAGER_UNPARSED = {
    "mgr_scheme": "GET mgr:client_list HTTP/1.1",
    "mgr_scheme_host": "GET mgr://allowed.test/client_list HTTP/1.1",
    "internal_mgr_origin_form_upper": "GET /SQUID-INTERNAL-MGR/menu HTTP/1.1",
}
INTERNAL = {
    "static_listed": "GET http://allowed.test/squid-internal-static/icons/SN.png HTTP/1.1",
    "static_proxy": "GET http://{ip}:{port}/squid-internal-static/icons/SN.png HTTP/1.1",
    "static_origin_form": "GET /squid-internal-static/icons/SN.png HTTP/1.1",
    "dynamic_listed": "GET http://allowed.test/squid-internal-dynamic/netdb HTTP/1.1",
    "dynamic_origin_form": "GET /squid-internal-dynamic/netdb HTTP/1.1",
    "periodic_origin_form": "GET /squid-internal-periodic/store_digest HTTP/1.1",
}
SCHEMES = {
    "ftp": "GET ftp://allowed.test:80/ HTTP/1.1",
    "ftp_default_port": "GET ftp://allowed.test/ HTTP/1.1",
    "whois": "GET whois://allowed.test:80/ HTTP/1.1",
    "wais": "GET wais://allowed.test:80/ HTTP/1.1",
    "urn": "GET urn:isbn:0451450523 HTTP/1.1",
    "https_without_connect": "GET https://allowed.test/ HTTP/1.1",
    "ftp_upper": "GET FTP://allowed.test:80/ HTTP/1.1",
}
METHODS = {
    "TRACE": ("TRACE http://allowed.test/ HTTP/1.1",),
    "TRACE_max_forwards_0": ("TRACE http://allowed.test/ HTTP/1.1", "Max-Forwards: 0"),
    "PURGE": ("PURGE http://allowed.test/ HTTP/1.1",),
    "PROPFIND": ("PROPFIND http://allowed.test/ HTTP/1.1",),
    "TRACK": ("TRACK http://allowed.test/ HTTP/1.1",),
    "BREW": ("BREW http://allowed.test/ HTTP/1.1",),
}
PASSING = {
    method: (f"{method} http://allowed.test/ok-{method.lower()} HTTP/1.1", "Content-Length: 0")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
result = {
    "address": socket.gethostbyname(socket.gethostname()),
    "manager": {k: one(v) for k, v in MANAGER.items()},
    "manager_unparsed": {k: one(v) for k, v in MANAGER_UNPARSED.items()},
    "internal": {k: one(v) for k, v in INTERNAL.items()},
    "schemes": {k: one(v) for k, v in SCHEMES.items()},
    "gopher": one("GET gopher://allowed.test:80/ HTTP/1.1"),
    "methods": {k: one(*v) for k, v in METHODS.items()},
    "options_max_forwards": [
        one("OPTIONS http://allowed.test/ok-options-mf0 HTTP/1.1", "Max-Forwards: 0"),
        one("OPTIONS http://allowed.test/ok-options-mf1 HTTP/1.1", "Max-Forwards: 1"),
    ],
    "passing": {k: one(*v) for k, v in PASSING.items()},
    "connect": exchange("CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n",
                        head_only=True),
    "headers": one("GET http://allowed.test/headers HTTP/1.1", "X-Forwarded-For: 203.0.113.9"),
    "keepalive": exchange(
        "GET http://allowed.test/first HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "GET http://other.test/second HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "GET cache_object://allowed.test/client_list HTTP/1.1\r\n\r\n",
        "GET http://allowed.test/third HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    ),
    # ICP (3130), HTCP (4827) and SNMP (3401) queries: squid would answer if it listened.
    "udp": {
        "icp": udp_answer(3130, bytes.fromhex("0102002c0000000100000000000000000000000000000000")
                          + b"http://allowed.test/\0"),
        "htcp": udp_answer(4827, bytes.fromhex("0014000000100000000000000000000000000000")),
        "snmp": udp_answer(3401, bytes.fromhex("302902010004067075626c6963a01c0204000000010201"
                                               "0002010030")),
    },
}
print(json.dumps(result))
"""


@dataclass
class Probed:
    """What one allowlist sandbox saw, and what the upstream, the log and the proxy show."""

    result: dict[str, Any]
    log: list[EgressDecision]
    upstream: list[str]
    container_id: str
    listening: dict[str, list[int]]
    shared_connections: list[str]
    """The upstream's accepted connections while two sandboxes fetched /keepalive in turn."""


def _listening(proxy: str) -> dict[str, list[int]]:
    """The proxy's listening TCP ports and bound UDP ports, from its own /proc/net; not
    Docker's embedded DNS (127.0.0.11, on a random port in every container's namespace).
    TCP listeners on 127.0.0.1 (unreachable from any sandbox) are listed apart."""
    found: dict[str, list[int]] = {"tcp_loopback": []}
    for kind in ("tcp", "udp"):
        text = subprocess.run(
            ["docker", "exec", proxy, "cat", f"/proc/net/{kind}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ports = []
        for line in text.splitlines()[1:]:
            fields = line.split()
            address, port = (int(part, 16) for part in fields[1].split(":"))
            if address == 0x0B00007F:  # 127.0.0.11, little-endian
                continue
            if kind == "tcp" and fields[3] == "0A" and address == 0x0100007F:  # 127.0.0.1
                found["tcp_loopback"].append(port)
            elif kind == "udp" or fields[3] == "0A":  # TCP LISTEN
                ports.append(port)
        found[kind] = sorted(ports)
    return found


@pytest.fixture(scope="module")
def probed(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probed]:
    label = f"{TEST_LABEL}={SESSION_RUN}-proxy-{uuid4().hex[:8]}"
    client = labelled_client(
        tmp_path_factory.mktemp("proxy-home"), label.partition("=")[2], **lab.settings
    )
    try:
        container = client.containers.create(
            name="proxy-probe",
            network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
        )
        neighbour = client.containers.create(
            name="proxy-neighbour",
            network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
        )
        try:
            prepare(client, container.id, lab)
            prepare(client, neighbour.id, lab)
            before = len(lab.requests("upstream"))
            result = run(client, container.id, PROBE)
            listening = _listening(f"jsbx-egress-{client.settings.store_id}")
            time.sleep(0.5)  # squid writes a tunnel's line when the client's side has closed
            log = client.containers.egress_log(container.id)
            upstream = lab.requests("upstream")[before:]
            # The upstream keeps /keepalive connections open; would the proxy hand one
            # sandbox's server connection to the next sandbox's request?
            connections_before = len(lab.connections("upstream"))
            for sandbox, path in ((container, "a1"), (neighbour, "b1"), (container, "a2")):
                fetched = run(
                    client,
                    sandbox.id,
                    f'print(json.dumps(fetch("http://allowed.test/keepalive-{path}")))',
                )
                assert fetched[0] == 200, fetched
            shared = lab.connections("upstream")[connections_before:]
        finally:
            client.containers.delete(container.id)
            client.containers.delete(neighbour.id)
        yield Probed(result, log, upstream, container.id, listening, shared)
    finally:
        client.close()
        leaked = remove_labelled(label)
        assert not leaked, f"leaked Docker objects: {leaked}"


def _refused(answer: list[Any], page: str) -> None:
    status, _head, body = answer
    assert status == 403, answer
    assert page in body, answer
    assert not any(word in body for word in MANAGER_WORDS), answer


def test_the_cache_manager_is_refused_in_every_spelling(probed: Probed) -> None:
    """cache_object:// and /squid-internal-mgr/, on the listed host and on the proxy's own
    name and address, with and without a port, origin-form and escaped: a readable 403."""
    for key, answer in probed.result["manager"].items():
        assert answer[0] == 403, (key, answer)
        _refused(answer, PROXY_PAGE)
    # Spellings squid cannot even parse as a manager request never reach it either.
    for key, answer in probed.result["manager_unparsed"].items():
        assert answer[0] in (400, 403), (key, answer)
        assert not any(word in answer[2] for word in MANAGER_WORDS), (key, answer)
    assert probed.result["address"] not in json.dumps(probed.result["manager"])


def test_squid_internal_urls_are_refused(probed: Probed) -> None:
    """Static icons, netdb and digests: the proxy answers none of them, for any host."""
    for key, answer in probed.result["internal"].items():
        assert answer[0] == 403, (key, answer)
        _refused(answer, PROXY_PAGE)


def test_only_http_and_connect_to_443_pass(probed: Probed) -> None:
    """ftp, whois, wais, urn, and https without CONNECT: a readable 403 naming the scheme;
    squid 5.7 refuses gopher itself (501, it has no gopher client any more)."""
    expected = {"ftp_upper": "ftp", "ftp_default_port": "ftp", "https_without_connect": "https"}
    for key, answer in probed.result["schemes"].items():
        _refused(answer, SCHEME_PAGE.format(scheme=expected.get(key, key)))
    status, _, body = probed.result["gopher"]
    assert status == 501, probed.result["gopher"]
    assert "Unsupported Request" in body
    assert probed.result["connect"][0] == 200, probed.result["connect"]
    assert probed.result["passing"]["GET"][0] == 200


def test_trace_purge_and_unlisted_methods_are_refused(probed: Probed) -> None:
    """TRACE (which the proxy would answer itself), PURGE and any method outside GET, HEAD,
    POST, PUT, PATCH, DELETE, OPTIONS and CONNECT: a readable 403. OPTIONS with Max-Forwards 0
    is not answered by the proxy either (squid 5.7 refuses it itself: 501); with a count left
    it goes to the allowed origin."""
    for key, answer in probed.result["methods"].items():
        _refused(answer, METHOD_PAGE.format(method=key.partition("_")[0]))
    at_zero, at_one = probed.result["options_max_forwards"]
    assert at_zero[0] == 501, at_zero
    assert "Unsupported Request" in at_zero[2]
    assert at_one[0] == 200, at_one
    for key, answer in probed.result["passing"].items():
        assert answer[0] == 200, (key, answer)
        assert answer[2] == "hello from upstream host=allowed.test\n", (key, answer)


def test_nothing_refused_reaches_the_upstream(probed: Probed) -> None:
    """Only the allowed requests were forwarded: the passing methods, the header probe and
    the two allowed requests of the keep-alive connection (nothing refused, no TRACE)."""
    seen = sorted(" ".join(line.split()[2:4]) for line in probed.upstream)
    allowed = sorted(
        [f"{m} /ok-{m.lower()}" for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")]
        + ["GET /headers", "GET /first", "GET /third", "OPTIONS /ok-options-mf1"]
    )
    assert seen == allowed, seen


def test_forwarded_requests_name_neither_the_sandbox_nor_the_proxy(probed: Probed) -> None:
    """No Via, X-Forwarded-For or Forwarded (a client's own X-Forwarded-For is dropped too),
    and nothing holding the sandbox's address or the proxy's name reaches the upstream."""
    status, _, body = probed.result["headers"]
    assert status == 200
    _request_line, *pairs = json.loads(body)
    names = {name.lower() for name, _ in pairs}
    assert not names & {"via", "x-forwarded-for", "forwarded", "x-squid-error"}, pairs
    text = json.dumps(pairs).lower()
    for leak in (probed.result["address"], "jupyter-sandbox-egress", "squid", "203.0.113.9"):
        assert leak.lower() not in text, (leak, pairs)


def test_replies_carry_no_proxy_headers(probed: Probed) -> None:
    """Neither refusals nor forwarded replies carry Via, X-Cache, X-Cache-Lookup or
    X-Squid-Error; the proxy's own pages show no version in Server."""
    refusals = [
        probed.result["methods"]["TRACE"],
        probed.result["manager"]["cache_object_listed"],
        probed.result["schemes"]["ftp"],
    ]
    forwarded = [probed.result["passing"]["GET"], probed.result["headers"]]
    for _status, head, _ in refusals + forwarded:
        lines = [line.lower() for line in head.split("\r\n")[1:]]
        names = {line.partition(":")[0] for line in lines}
        assert not names & {"via", "x-cache", "x-cache-lookup", "x-squid-error"}, head
    for _status, head, _ in refusals:
        assert "server: squid\r\n" in head.lower() + "\r\n", head


def test_each_request_on_one_connection_is_judged_alone(probed: Probed) -> None:
    """Keep-alive to the proxy: an allowed request, then an unlisted host (with the allowed
    Host header), then a manager page, then an allowed one again on the same connection."""
    first, unlisted, manager, third = probed.result["keepalive"]
    assert first[0] == 200, probed.result["keepalive"]
    assert third[0] == 200, probed.result["keepalive"]
    assert unlisted[0] == 403
    assert "egress to other.test blocked by network policy" in unlisted[2]
    _refused(manager, PROXY_PAGE)


def test_the_proxy_listens_on_its_port_only(probed: Probed) -> None:
    """No ICP, HTCP or SNMP service: nothing answers their queries from the sandbox, and the
    proxy's own socket table holds TCP 3128 as its only listener and none of their ports.
    On loopback only: the domain_secrets ICAP adapter (1344) and bump ports (none here)."""
    for service, answer in probed.result["udp"].items():
        assert answer in ("TimeoutError", "ConnectionRefusedError"), (service, answer)
    assert probed.listening["tcp"] == [3128], probed.listening
    assert probed.listening["tcp_loopback"] == [1344], probed.listening
    assert not set(probed.listening["udp"]) & {3130, 4827, 3401, 161}, probed.listening


def test_every_refusal_of_the_proxy_itself_is_logged_with_its_reason(probed: Probed) -> None:
    reasons = {(d.method, d.host, d.reason) for d in probed.log if d.decision == "denied"}
    assert ("GET", "allowed.test", "the proxy's own pages (cache manager, internal URLs) "
            "are not reachable") in reasons  # fmt: skip
    assert ("GET", "allowed.test", "only http:// requests, and CONNECT to 443, are allowed") in (
        reasons
    )
    assert ("TRACE", "allowed.test", "the request method is not allowed") in reasons
    assert all(d.container_id == probed.container_id for d in probed.log)


def test_no_server_connection_is_shared_between_requests(probed: Probed) -> None:
    """The upstream keeps /keepalive connections open, yet each of three requests (sandbox A,
    its neighbour B, A again) arrives on a connection of its own: the proxy keeps no server
    connection for the next request (`server_persistent_connections off`), so nothing one
    sandbox left on a connection serves another."""
    assert len(probed.shared_connections) == 3, probed.shared_connections
