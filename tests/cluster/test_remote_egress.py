"""Allowlist sandboxes on a remote Docker engine (a Docker-in-Docker node over mutual TLS):
the egress proxy runs on that node, its files on the node's volumes; the sandbox reaches an
allowed domain through it and nothing else, and a domain secret reaches only its domain.

The "internet" is a lab on the node itself (test_network_lab's server, in the kernel image):
an upstream with a fake DNS authority on an internal network of the node, which the proxy
joins through the test-only settings. Nothing here talks to an address outside this machine.
"""

from __future__ import annotations

import io
import ipaddress
import json
import random
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import docker
import docker.errors
import pytest

from jupyter_sandbox import APIError, Client
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.settings import Settings
from tests.cluster.test_remote_engine import on_node
from tests.conftest import IMAGE, TEST_LABEL
from tests.integration.test_domain_secrets import PREFIX, SEARCH, new_value
from tests.integration.test_network import PRELUDE
from tests.integration.test_network_lab import SERVER

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]

# Everything an allowlist sandbox might try, as JSON.
PROBE = (
    PRELUDE
    + r"""
def resolve(name):
    try:
        socket.getaddrinfo(name, 80)
        return "resolved"
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "resolv_conf": open("/etc/resolv.conf").read(),
    "http": fetch("http://allowed.test/"),
    "https": fetch("https://allowed.test/"),
    "unlisted": fetch("http://unlisted.test/"),
    "unlisted_tls": raw("CONNECT unlisted.test:443 HTTP/1.1\r\nHost: unlisted.test:443\r\n\r\n"),
    "resolve": resolve("allowed.test"),
    "direct_tcp": tcp(UPSTREAM, 80, 3),
    "direct_dns": dns_query("allowed.test", UPSTREAM),
    "proxy_other_port": tcp(PROXY_HOST, 22, 3),
}))
"""
)

# With API_KEY's placeholder: to the secret's own domain, and to another allowed domain.
SECRET_REQUESTS = (
    PRELUDE
    + r"""
def call(url, headers, context=None):
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return [response.status, response.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.read().decode()]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]
key = os.environ["API_KEY"]
print(json.dumps({
    "placeholder": key,
    "own": call(f"https://allowed.test/record/own?key={key}", {"X-Api-Key": key}),
    # No secret there: a plain tunnel, the lab's own certificate.
    "elsewhere": call(f"https://other.test/headers?key={key}", {"X-Api-Key": key},
                      ssl.create_default_context(cafile="/tmp/lab-ca.pem")),
}))
"""
)
SERVE = "exec(open('/lab/server.py').read())"


@dataclass
class NodeLab:
    """The lab's upstream on the node, and the settings that let the proxy reach it."""

    node: docker.DockerClient
    container: str
    upstream_ip: str
    settings: dict[str, Any]

    def log(self) -> list[str]:
        return bytes(self.node.api.logs(self.container)).decode(errors="replace").splitlines()


@pytest.fixture(scope="module")
def node(one_node: LocalCluster) -> Iterator[docker.DockerClient]:
    client = one_node.client_for(one_node.nodes()[0].address)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def lab(node: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLab]:
    """The upstream (HTTP, HTTPS, DNS for *.test) on an internal network of the node."""
    folder = tmp_path_factory.mktemp("node-lab")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
            "-subj", "/CN=allowed.test",
            "-addext", "subjectAltName=DNS:allowed.test,DNS:other.test",
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    name = f"jsbx-remote-egress-lab-{uuid4().hex[:8]}"
    labels = {TEST_LABEL: f"{name}"}
    subnet = ""
    for _ in range(20):
        subnet = f"10.213.{random.randrange(256)}.0/24"
        try:
            node.networks.create(
                name,
                internal=True,
                labels=labels,
                ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
            )
            break
        except docker.errors.APIError:
            continue
    upstream_ip = str(ipaddress.ip_network(subnet)[10])
    zone = {"A": {host: [upstream_ip] for host in ("allowed.test", "other.test", "unlisted.test")}}
    files = {
        "server.py": SERVER.encode(),
        "zone.json": json.dumps(zone).encode(),
        "cert.pem": (folder / "cert.pem").read_bytes(),
        "key.pem": (folder / "key.pem").read_bytes(),
    }
    try:
        node.api.create_container(
            IMAGE,
            name=name,
            entrypoint=["python3"],
            command=[
                "-u",
                "-c",
                "exec(open('/lab/server.py').read())",
                "upstream",
                "/lab/zone.json",
            ],
            user="0:0",
            labels=labels,
            host_config=node.api.create_host_config(
                cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"], network_mode=name
            ),
            networking_config=node.api.create_networking_config(
                {name: node.api.create_endpoint_config(ipv4_address=upstream_ip)}  # type: ignore[arg-type]
            ),
        )
        node.api.put_archive(name, "/", _tar({f"lab/{k}": v for k, v in files.items()}))
        node.api.start(name)
        started = NodeLab(
            node,
            name,
            upstream_ip,
            {
                "test_egress_resolver": upstream_ip,
                "test_egress_exempt": [subnet],
                "test_egress_networks": [name],
                "test_egress_upstream_ca": files["cert.pem"].decode(),
                "egress_image": Settings().egress_image,
            },
        )
        deadline = time.monotonic() + 60
        while not any("READY" in line for line in started.log()):
            assert time.monotonic() < deadline, started.log()
            time.sleep(0.2)
        started.settings["cert_pem"] = files["cert.pem"].decode()
        yield started
    finally:
        node.api.remove_container(name, force=True)
        node.networks.get(name).remove()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def remote(
    one_node: LocalCluster,
    node: docker.DockerClient,
    lab: NodeLab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Client]:
    """A client on the node's engine (DOCKER_HOST=tcp://...), whose proxy may reach the lab;
    on exit nothing labelled for it may be left on the node."""
    for variable, value in one_node.env().items():
        monkeypatch.setenv(variable, value)
    run = f"r{uuid4().hex[:8]}"
    settings = {k: v for k, v in lab.settings.items() if k != "cert_pem"}
    client = Client(home=tmp_path / "home", extra_labels={TEST_LABEL: run}, **settings)
    try:
        yield client
    finally:
        try:
            for box in client.containers.list():
                client.containers.delete(box.id)
        finally:
            client.close()
        leaked = on_node(node, f"{TEST_LABEL}={run}")
        for name in leaked.get("container", []):
            node.api.remove_container(name, force=True, v=True)
        assert not leaked, f"left on the node: {leaked}"


def run_json(client: Client, container_id: str, code: str) -> Any:
    execution = client.containers.execute(container_id, code, timeout=120)
    assert execution.status == "ok", execution
    return json.loads(execution.stdout.strip().splitlines()[-1])


def trust_lab(client: Client, container_id: str, lab: NodeLab) -> None:
    """The lab's certificate where PRELUDE's `fetch` looks for it."""
    code = PRELUDE + f"\nopen('/tmp/lab-ca.pem', 'w').write({lab.settings['cert_pem']!r})"
    run_json(client, container_id, code + "\nprint('{}')")


def test_an_allowlist_sandbox_reaches_only_its_domains_through_the_nodes_proxy(
    remote: Client, node: docker.DockerClient, engine: docker.DockerClient, lab: NodeLab
) -> None:
    box = remote.containers.create(
        name="remote-allowlist",
        network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
    )
    proxy = f"jsbx-egress-{remote.settings.store_id}"
    assert node.containers.get(proxy).status == "running"
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(proxy)  # not on this machine's engine
    config = next(
        m for m in node.api.inspect_container(proxy)["Mounts"] if m["Destination"] == "/etc/jsbx"
    )
    assert (config["Type"], config["RW"]) == ("volume", False)
    sandbox_mounts = {
        m["Destination"]: m for m in node.api.inspect_container(f"jsbx-{box.id}")["Mounts"]
    }
    resolv = sandbox_mounts["/etc/resolv.conf"]
    assert (resolv["Type"], resolv["RW"]) == ("bind", False)
    assert resolv["Source"].startswith(node.api.inspect_volume(config["Name"])["Mountpoint"])

    trust_lab(remote, box.id, lab)
    result = run_json(remote, box.id, PROBE.replace("UPSTREAM", repr(lab.upstream_ip)))
    assert result["interfaces"] == ["eth0", "lo"]
    assert "nameserver" not in result["resolv_conf"]
    assert result["http"][0] == 200, result["http"]
    assert "hello from upstream host=allowed.test" in result["http"][1]
    assert result["https"][0] == 200, result["https"]
    assert result["unlisted"][0] == 403, result["unlisted"]
    assert "blocked by network policy" in result["unlisted"][1]
    assert result["unlisted_tls"][0] == 403, result["unlisted_tls"]
    # No way around the proxy: no route to the upstream, no resolver, no other proxy port.
    assert result["resolve"] == "gaierror"
    assert result["direct_tcp"][0] != "open", result["direct_tcp"]
    assert result["direct_dns"][0] != "answer", result["direct_dns"]
    assert result["proxy_other_port"][0] != "open", result["proxy_other_port"]
    requests = [line for line in lab.log() if " REQUEST " in line]
    assert not [line for line in requests if "unlisted.test" in line], requests

    decisions = remote.containers.egress_log(box.id)
    seen = {(d.host, d.decision) for d in decisions}
    assert ("allowed.test", "allowed") in seen, decisions
    assert ("unlisted.test", "denied") in seen, decisions

    remote.containers.delete(box.id)
    assert on_node(node, f"{TEST_LABEL}={remote.settings.extra_labels[TEST_LABEL]}") == {}


def test_a_domain_secret_reaches_only_its_domain_and_never_the_sandbox(
    remote: Client, node: docker.DockerClient, lab: NodeLab
) -> None:
    value = new_value()
    box = remote.containers.create(
        name="remote-secret",
        network_policy={
            "type": "allowlist",
            "allowed_domains": ["allowed.test", "other.test"],
            "domain_secrets": [{"domain": "allowed.test", "name": "API_KEY", "value": value}],
        },
    )
    assert value not in box.model_dump_json()
    trust_lab(remote, box.id, lab)
    result = run_json(remote, box.id, SECRET_REQUESTS)
    placeholder = result["placeholder"]
    assert placeholder
    assert PREFIX not in placeholder
    assert result["own"][0] == 200, result["own"]
    assert result["elsewhere"][0] == 200, result["elsewhere"]
    own = [line for line in lab.log() if "/record/own" in line and " REQUEST " in line]
    assert any(f"key={value}" in line for line in own), own
    echoed = json.loads(result["elsewhere"][1])
    assert f"key={placeholder}" in echoed[0]
    assert dict((k.lower(), v) for k, v in echoed[1:])["x-api-key"] == placeholder
    assert value not in result["elsewhere"][1]
    search = run_json(remote, box.id, SEARCH)
    assert search["found"] == [], search
    assert search["regions"] > 10, search

    proxy = f"jsbx-egress-{remote.settings.store_id}"
    logs = bytes(node.api.logs(proxy)).decode(errors="replace")
    assert value not in logs
    reasons = [(d.host, d.reason) for d in remote.containers.egress_log(box.id) if d.secret]
    assert ("allowed.test", "secret API_KEY injected") in reasons, reasons

    remote.containers.delete(box.id)
    assert on_node(node, f"{TEST_LABEL}={remote.settings.extra_labels[TEST_LABEL]}") == {}


def test_a_node_without_the_egress_image_says_how_to_load_it(
    one_node: LocalCluster,
    node: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in one_node.env().items():
        monkeypatch.setenv(variable, value)
    run = f"r{uuid4().hex[:8]}"
    client = Client(
        home=tmp_path / "home",
        extra_labels={TEST_LABEL: run},
        egress_image="jupyter-sandbox-egress:not-loaded",
    )
    try:
        with pytest.raises(APIError) as caught:
            client.containers.create(
                name="no-egress-image",
                network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
            )
    finally:
        client.close()
    assert caught.value.param == "network_policy"
    assert "docker save jupyter-sandbox-egress:not-loaded | docker load" in caught.value.message
    assert one_node.env()["DOCKER_HOST"].removeprefix("tcp://").split(":")[0] in (
        caught.value.message
    )
    assert on_node(node, f"{TEST_LABEL}={run}") == {}


def test_reconcile_restarts_or_recreates_the_nodes_proxy_and_sweeps_its_files(
    remote: Client, node: docker.DockerClient, lab: NodeLab
) -> None:
    box = remote.containers.create(
        name="remote-restart",
        network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
    )
    proxy = f"jsbx-egress-{remote.settings.store_id}"
    fetch = PRELUDE + 'print(json.dumps(fetch("http://allowed.test/")[0]))'
    node.api.kill(proxy)
    report = remote.reconcile()
    assert report.egress[0].startswith("restarted egress proxy"), report.egress
    assert run_json(remote, box.id, fetch) == 200
    node.api.remove_container(proxy, force=True)
    remote.reconcile()  # recreated from the node's volumes, on the sandbox's network again
    assert run_json(remote, box.id, fetch) == 200
    remote.containers.delete(box.id)
    run = remote.settings.extra_labels[TEST_LABEL]
    assert on_node(node, f"{TEST_LABEL}={run}") == {}

    # A crash between the proxy's files and the proxy: reconcile removes the files.
    remote._backend.egress._proxy.prepare_folders()  # type: ignore[attr-defined]
    assert on_node(node, f"{TEST_LABEL}={run}")["volume"]
    assert "removed the idle egress proxy's files" in remote.reconcile().egress
    assert on_node(node, f"{TEST_LABEL}={run}") == {}
