"""`network_policy.domain_secrets` end to end (issue 17): the sandbox holds a placeholder, the
egress proxy puts the value into HTTPS requests to the secret's own domain (TLS interception
for that domain only, with the sandbox's own CA), and the value shows nowhere else.

Every upstream is the lab's (test_network_lab); the proxy trusts the lab's certificate through
the test-only `test_egress_upstream_ca`. The secret value is never written into code sent to
the sandbox: the sandbox looks for anything shaped like it (`PREFIX` + 32 hex digits).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.params import NetworkPolicyAllowlistParam
from tests.integration.server_harness import serving
from tests.integration.test_network import PRELUDE, run
from tests.integration.test_network_lab import Lab, lab

__all__ = ["lab"]  # fixture, re-exported for pytest

pytestmark = pytest.mark.docker

PREFIX = "sk-jsbx-test-"

# Looks for the value's shape everywhere the sandbox can read: its environment, every
# process's /proc/<pid>/environ and cmdline, files under every writable or mounted place,
# and the memory of every process it may read (its own kernel included).
SEARCH = (
    PRELUDE
    + r"""
import glob, re
SHAPE = re.compile((PREFIX + "[0-9a-f]{32}").encode())
found = []
for key, value in os.environ.items():
    if SHAPE.search(value.encode()):
        found.append("env " + key)
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        if SHAPE.search(open(path, "rb").read()):
            found.append(path)
    except OSError:
        pass
roots = ["/etc", "/tmp", "/home", "/run", "/mnt", "/workspace", "/var", "/root", "/opt", "/srv"]
for root in roots:
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if os.path.isfile(path) and os.path.getsize(path) < 8 * 2**20:
                    if SHAPE.search(open(path, "rb").read()):
                        found.append(path)
            except OSError:
                pass
scanned = 0
for pid in [p.split("/")[2] for p in glob.glob("/proc/[0-9]*/maps")]:
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        continue
    with mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            if end - start > 256 * 2**20:
                continue
            try:
                mem.seek(start)
                if SHAPE.search(mem.read(end - start)):
                    found.append(f"memory of {pid}")
                scanned += 1
            except (OSError, ValueError, OverflowError):
                pass
print(json.dumps({"found": sorted(set(found)), "regions": scanned}))
""".replace("PREFIX", repr(PREFIX))
)

# Requests to the lab upstream carrying the placeholders in a header and in the query string.
REQUESTS = (
    PRELUDE
    + r"""
def call(url, headers):
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return [response.status, response.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read().decode()]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]
key, other = os.environ["API_KEY"], os.environ["OTHER_KEY"]
def steered(connect_host, host_header, path):
    # Inside a tunnel to one secret domain, a request whose Host header names the other one.
    with socket.create_connection((PROXY_HOST, int(PROXY_PORT)), timeout=30) as sock:
        target = f"{connect_host}:443"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert sock.recv(4096).split(b" ")[1] == b"200"
        context = ssl.create_default_context()
        with context.wrap_socket(sock, server_hostname=connect_host) as tls:
            tls.sendall(f"GET {path}?key={other} HTTP/1.1\r\nHost: {host_header}\r\n"
                        f"X-Api-Key: {other}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return [int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2].decode(errors="replace")]
results = {
    "placeholder": key,
    "ssl_cert_file": os.environ.get("SSL_CERT_FILE"),
    "requests_ca_bundle": os.environ.get("REQUESTS_CA_BUNDLE"),
    # The secret's own domain: header and query string (the system store trusts the proxy's CA).
    "own": call(f"https://allowed.test/record/own?key={key}",
                {"Authorization": f"Bearer {key}", "X-Api-Key": key}),
    # Another secret domain (intercepted too): API_KEY's placeholder stays as it is.
    "elsewhere": call(f"https://other.test/headers?key={key}", {"X-Api-Key": key}),
    # An allowed domain with no secret: a plain tunnel, the lab's own certificate.
    "tunnel": fetch("https://a.wild.test/headers?key=" + key),
    # Plain HTTP is never touched, even to the secret's domain.
    "http": call(f"http://allowed.test/record/http?key={key}", {"X-Api-Key": key}),
    # A tunnel to allowed.test whose request names other.test (OTHER_KEY's domain).
    "steered": steered("allowed.test", "other.test", "/record/steered"),
}
print(json.dumps(results))
"""
)

UNLISTED = (
    PRELUDE
    + r"""
print(json.dumps(raw("CONNECT unlisted.test:443 HTTP/1.1\r\nHost: unlisted.test:443\r\n\r\n")))
"""
)


def new_value() -> str:
    return PREFIX + secrets.token_hex(16)


def policy(value: str, other_value: str) -> NetworkPolicyAllowlistParam:
    return {
        "type": "allowlist",
        "allowed_domains": ["allowed.test", "other.test", "*.wild.test"],
        "domain_secrets": [
            {"domain": "allowed.test", "name": "API_KEY", "value": value},
            {"domain": "other.test", "name": "OTHER_KEY", "value": other_value},
        ],
    }


def secret_settings(lab: Lab) -> dict[str, Any]:
    return {
        **lab.settings,
        "test_egress_upstream_ca": lab.cert_pem,
        "egress_image": Settings().egress_image,
    }


@pytest.fixture
def secret_client(make_client: Callable[..., Client], lab: Lab) -> Client:
    return make_client(**secret_settings(lab))


def check_sandbox_and_upstream(
    client: Client, container_id: str, lab: Lab, value: str, other_value: str
) -> None:
    """The requests behave as designed; the sandbox holds no value anywhere it can read."""
    setup = f"\nopen('/tmp/lab-ca.pem', 'w').write({lab.cert_pem!r})\nprint('{{}}')"
    run(client, container_id, PRELUDE + setup)
    result = run(client, container_id, REQUESTS)
    placeholder = result["placeholder"]
    assert placeholder
    assert placeholder != value
    assert PREFIX not in placeholder
    assert result["ssl_cert_file"] == result["requests_ca_bundle"]
    assert result["own"][0] == 200, result["own"]
    assert result["elsewhere"][0] == 200, result["elsewhere"]
    assert result["tunnel"][0] == 200, result["tunnel"]
    assert result["http"][0] == 200, result["http"]
    # The upstream for the secret's domain received the value, in the header and the query.
    own = [line for line in lab.log("upstream") if "/record/own" in line]
    assert any(f"key={value}" in line and " REQUEST " in line for line in own), own
    headers = [json.loads(line.split(" ", 2)[2]) for line in own if " HEADERS " in line]
    assert headers, own
    received = dict((k.lower(), v) for k, v in headers[-1][1:])
    assert received["authorization"] == f"Bearer {value}"
    assert received["x-api-key"] == value
    assert placeholder not in json.dumps(headers)
    # Other domains got the placeholder as it was, through interception or a plain tunnel.
    for case in ("elsewhere", "tunnel"):
        echoed = dict((k.lower(), v) for k, v in json.loads(result[case][1])[1:])
        line = json.loads(result[case][1])[0]
        assert f"key={placeholder}" in line, (case, line)
        assert value not in result[case][1]
        assert other_value not in result[case][1]
        if case == "elsewhere":
            assert echoed["x-api-key"] == placeholder
    # A Host header cannot steer a request inside one secret domain's tunnel to another
    # secret domain (which would get that domain's secret): refused at the bump port.
    assert result["steered"][0] == 403, result["steered"]
    assert not [line for line in lab.log("upstream") if "/record/steered" in line]
    http = [line for line in lab.log("upstream") if "/record/http" in line]
    assert http
    assert all(value not in line for line in http)
    assert any(placeholder in line for line in http)
    # Nothing the sandbox can read holds the value (or the other secret's).
    search = run(client, container_id, SEARCH)
    assert search["found"] == [], search
    assert search["regions"] > 10, search
    # A refused CONNECT is still the readable plain 403.
    refused = run(client, container_id, UNLISTED)
    assert refused[0] == 403, refused
    assert "blocked by network policy" in refused[1], refused


def test_a_secret_reaches_only_its_domain_and_never_the_sandbox(
    secret_client: Client, lab: Lab, home: Path
) -> None:
    value, other_value = new_value(), new_value()
    container = secret_client.containers.create(
        name="secrets", network_policy=policy(value, other_value)
    )
    assert value not in container.model_dump_json()
    check_sandbox_and_upstream(secret_client, container.id, lab, value, other_value)
    # The egress log names the secret that went in, and where a placeholder went unchanged.
    log = secret_client.containers.egress_log(container.id)
    reasons = [(d.host, d.reason) for d in log if d.secret]
    assert ("allowed.test", "secret API_KEY injected") in reasons, reasons
    assert (
        "other.test",
        "placeholder of secret API_KEY sent to another domain, left unchanged",
    ) in reasons, reasons
    assert value not in json.dumps([d.model_dump() for d in log])
    # The value is in the proxy's private folder only: never in the store or any log.
    secrets_dir = home / "egress" / "config" / "secrets"
    assert (secrets_dir.stat().st_mode & 0o777) == 0o700
    holders = [p for p in home.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    assert holders
    assert all(p.parent == secrets_dir for p in holders), holders
    assert all((p.stat().st_mode & 0o777) == 0o600 and p.stat().st_uid == 13 for p in holders)
    proxy_log = _docker_logs(f"jsbx-egress-{secret_client.settings.store_id}")
    assert value not in proxy_log
    # Deleting the sandbox removes its secrets, CA and bundle from the proxy side.
    secret_client.containers.delete(container.id)
    assert not [p for p in home.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    assert not list((home / "egress" / "ca").glob("*.pem"))


def test_the_official_sdk_creates_a_sandbox_with_secrets(
    lab: Lab, home: Path, test_label: str
) -> None:
    """Issue 17's done-when, through `serve` and the official SDK."""
    value, other_value = new_value(), new_value()
    settings = {
        key: json.dumps(item) if isinstance(item, list) else item
        for key, item in secret_settings(lab).items()
    }
    with serving(home, test_label, **settings) as server:
        sdk = server.sdk()
        container = sdk.containers.create(
            name="sdk-secrets",
            network_policy=policy(value, other_value),  # type: ignore[arg-type]
        )
        assert container.id
        assert container.status in ("running", "ready")
        for answer in (
            container.model_dump_json(),
            sdk.containers.retrieve(container.id).model_dump_json(),
            sdk.containers.list().model_dump_json(),
        ):
            assert value not in answer
            assert other_value not in answer
        client = Client(home=home, project="alice", **secret_settings(lab))
        try:
            check_sandbox_and_upstream(client, container.id, lab, value, other_value)
            log = client.containers.egress_log(container.id)
            assert any(d.reason == "secret API_KEY injected" for d in log), log
            assert value not in json.dumps([d.model_dump() for d in log])
        finally:
            client.close()
        # A secret for a domain outside the allowlist: a 400 naming the parameter, no value.
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.containers.create(
                name="bad",
                network_policy={
                    "type": "allowlist",
                    "allowed_domains": ["allowed.test"],
                    "domain_secrets": [  # type: ignore[typeddict-item]
                        {"domain": "unlisted.test", "name": "API_KEY", "value": value}
                    ],
                },
            )
        assert caught.value.param == "network_policy.domain_secrets"
        assert value not in caught.value.response.text
        sdk.containers.delete(container.id)
        log_text = "".join(server.log)
    assert value not in log_text
    assert other_value not in log_text


def _docker_logs(name: str) -> str:
    import subprocess

    out = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return out.stdout + out.stderr


@pytest.fixture(autouse=True)
def _egress_image_present() -> Iterator[None]:
    import subprocess

    image = Settings().egress_image
    probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the egress image {image} is missing")
    return
