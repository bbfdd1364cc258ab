"""The egress tests' own little internet: an upstream HTTP/HTTPS server with a fake DNS
authority, and a private "internal service", each in a container on the tests' own internal
Docker networks. Nothing here ever talks to an address outside this machine.

The proxy reaches the lab only through the test-only settings (`test_egress_resolver`,
`test_egress_exempt`, `test_egress_networks`), which sandbox code cannot set.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from tests.conftest import IMAGE, SESSION_RUN, TEST_LABEL

SERVER = r"""
import http.server, json, socket, socketserver, ssl, struct, sys, threading
role, zone_file = sys.argv[1], sys.argv[2]
zone = json.load(open(zone_file))
counters = {}
def log(*parts):
    print(role, *parts, flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get("Host")
        log("REQUEST", self.command, self.path, "host=%s" % host)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/keepalive"):  # this answer keeps the connection open
            self.protocol_version, self.close_connection = "HTTP/1.1", False
        if self.path.startswith("/headers"):  # what the proxy forwarded, as JSON pairs
            body = json.dumps([self.requestline, *self.headers.items()]).encode()
        else:
            body = ("hello from %s host=%s\n" % (role, host)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_GET
    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    def process_request(self, request, address):
        log("TCP", self.server_address[1], address[0])
        super().process_request(request, address)

def serve(port, tls):
    server = Server(("0.0.0.0", port), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain("/lab/cert.pem", "/lab/key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()

def answer(query):
    ident, flags, qd = struct.unpack(">HHH", query[:6])
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1 : i + 1 + query[i]].decode(errors="replace"))
        i += query[i] + 1
    qtype = struct.unpack(">H", query[i + 1 : i + 3])[0]
    question = query[12 : i + 5]
    name = ".".join(labels).lower()
    kind = {1: "A", 28: "AAAA"}.get(qtype, str(qtype))
    log("DNS", name, kind)
    records = zone.get(kind, {}).get(name)
    known = any(name in zone.get(k, {}) for k in ("A", "AAAA"))
    answers = b""
    ttl = 0 if name in zone.get("rebind", []) else 5
    if records:
        if name in zone.get("rebind", []):
            counters[name] = counters.get(name, -1) + 1
            records = [records[counters[name] % len(records)]]
        for address in records:
            family = socket.AF_INET if kind == "A" else socket.AF_INET6
            data = socket.inet_pton(family, address)
            answers += struct.pack(">HHHIH", 0xC00C, qtype, 1, ttl, len(data)) + data
    rcode = 0 if known else 3
    count = len(records) if records else 0
    header = struct.pack(">HHHHHH", ident, 0x8400 | rcode, 1, count, 0, 0)
    return header + question + answers

def dns():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 53))
    while True:
        query, address = sock.recvfrom(512)
        try:
            sock.sendto(answer(query), address)
        except Exception as exc:
            log("DNS-ERROR", repr(exc))

threads = [threading.Thread(target=serve, args=(port, port == 443)) for port in (80, 443)]
if role == "upstream":
    threads.append(threading.Thread(target=dns))
for thread in threads:
    thread.daemon = True
    thread.start()
log("READY")
threading.Event().wait()
"""


@dataclass
class Lab:
    """Where the lab's pieces are, and what they saw."""

    network: str
    subnet: str
    private_network: str
    upstream_ip: str
    internal_ip: str
    cert_pem: str
    settings: dict[str, object]

    def log(self, role: str) -> list[str]:
        """Lines the upstream (with its DNS) or the internal service printed so far."""
        out = subprocess.run(
            ["docker", "logs", f"{self.network}-{role}"], capture_output=True, text=True, check=True
        )
        return [line for line in out.stdout.splitlines() if line.startswith(role)]

    def dns_queries(self) -> list[str]:
        return [line.split()[2] for line in self.log("upstream") if line.split()[1] == "DNS"]

    def requests(self, role: str) -> list[str]:
        return [line for line in self.log(role) if " REQUEST " in line]

    def connections(self, role: str) -> list[str]:
        return [line for line in self.log(role) if " TCP " in line]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def _network(name: str, label: str, second_octet: int) -> str:
    """An internal network with a /24 of our choosing (fixed addresses need one)."""
    for _ in range(20):
        subnet = f"10.{second_octet}.{random.randrange(256)}.0/24"
        created = subprocess.run(
            ["docker", "network", "create", "--internal", "--label", label,
             "--subnet", subnet, name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if created.returncode == 0:
            return subnet
    raise AssertionError(f"no free subnet for the lab: {created.stderr}")


@contextmanager
def running_lab(folder: Path) -> Iterator[Lab]:
    """Start the lab (files in `folder`); remove every piece afterwards."""
    name = f"jsbx-lab-{uuid.uuid4().hex[:8]}"
    label = f"{TEST_LABEL}={SESSION_RUN}-lab"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
            "-subj", "/CN=allowed.test",
            "-addext", "subjectAltName=DNS:allowed.test,DNS:*.wild.test,DNS:other.test",
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    (folder / "key.pem").chmod(0o644)
    (folder / "server.py").write_text(SERVER)
    try:
        subnet = _network(name, label, 213)
        private_subnet = _network(f"{name}-private", label, 214)
        upstream_ip = str(ipaddress.ip_network(subnet)[10])
        internal_ip = str(ipaddress.ip_network(private_subnet)[20])
        zone = {
            "A": {
                "allowed.test": [upstream_ip],
                "a.wild.test": [upstream_ip],
                "deep.a.wild.test": [upstream_ip],
                "wild.test": [upstream_ip],
                "other.test": [upstream_ip],
                "private.test": ["10.0.0.1"],
                "loopback.test": ["127.0.0.1"],
                "metadata.test": ["169.254.169.254"],
                "cgnat.test": ["100.100.100.200"],
                "azure.test": ["168.63.129.16"],
                "internal.test": [internal_ip],
                "mixed.test": [upstream_ip, internal_ip],
                "rebind.test": [upstream_ip, internal_ip],
            },
            "AAAA": {"v6meta.test": ["fd00:ec2::254"]},
            "rebind": ["rebind.test"],
        }
        (folder / "zone.json").write_text(json.dumps(zone))
        for role, network, address in (
            ("upstream", name, upstream_ip),
            ("internal", f"{name}-private", internal_ip),
        ):
            _docker(
                "run", "-d", "--name", f"{name}-{role}", "--label", label,
                "--network", network, "--ip", address, "--user", "0:0",
                "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
                "-v", f"{folder}:/lab:ro", "--entrypoint", "python3", IMAGE,
                "-u", "-c", "exec(open('/lab/server.py').read())", role, "/lab/zone.json",
            )  # fmt: skip
        deadline = time.monotonic() + 20
        result = Lab(
            network=name,
            subnet=subnet,
            private_network=f"{name}-private",
            upstream_ip=upstream_ip,
            internal_ip=internal_ip,
            cert_pem=(folder / "cert.pem").read_text(),
            settings={
                "test_egress_resolver": upstream_ip,
                "test_egress_exempt": [subnet],
                "test_egress_networks": [name, f"{name}-private"],
            },
        )
        while not all(
            any("READY" in line for line in result.log(r)) for r in ("upstream", "internal")
        ):
            assert time.monotonic() < deadline, "the lab did not start"
            time.sleep(0.1)
        yield result
    finally:
        for role in ("upstream", "internal"):
            subprocess.run(
                ["docker", "rm", "-f", f"{name}-{role}"], capture_output=True, check=False
            )
        for network in (name, f"{name}-private"):
            subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab, once per module."""
    with running_lab(tmp_path_factory.mktemp("lab")) as started:
        yield started


@pytest.fixture
def egress_client(make_client: Callable[..., Client], lab: Lab) -> Client:
    """A client whose proxy resolves with the lab's DNS and may reach the lab's upstream."""
    return make_client(**lab.settings)
