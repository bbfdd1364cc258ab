"""Allowlist sandboxes on a two-node local Swarm (`Client(backend="swarm")`): each is placed
by us on a node, that node's egress proxy serves it on the sandbox's own internal overlay,
and it reaches its allowed domains through it and nothing else; a domain secret reaches only
its domain; delete and reconcile leave nothing on either node.

The "internet" is a lab on each node (test_network_lab's server, in the kernel image): the
same upstream, with a fake DNS authority for *.test, at the same address on an internal
network of the same name on both nodes, which each proxy joins through the test-only
settings. Nothing here talks to an address outside this machine.
"""

from __future__ import annotations

import io
import ipaddress
import json
import random
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import docker
import docker.errors
import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends.cluster_images import NullLoadProgress, copy_images
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.swarm_egress import NODE
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.params import NetworkPolicyAllowlistParam
from tests.cluster.test_remote_egress import PROBE, SECRET_REQUESTS, SERVE, NodeLab, run_json
from tests.conftest import IMAGE, TEST_LABEL
from tests.integration.test_domain_secrets import PREFIX, SEARCH, new_value
from tests.integration.test_network import PRELUDE
from tests.integration.test_network_lab import SERVER

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(1200)]

ALLOWLIST: NetworkPolicyAllowlistParam = {"type": "allowlist", "allowed_domains": ["allowed.test"]}
FETCH = PRELUDE + 'print(json.dumps(fetch("http://allowed.test/")[0]))'


@pytest.fixture(scope="module")
def nodes(
    two_nodes: LocalCluster, engine: docker.DockerClient
) -> Iterator[dict[str, docker.DockerClient]]:
    """Each node's engine by hostname (the manager first), the egress image loaded in each."""
    clients = {n.name: two_nodes.client_for(n.address) for n in two_nodes.nodes()}
    try:
        copy_images(engine, [Settings().egress_image], clients, NullLoadProgress())
        yield clients
    finally:
        for client in clients.values():
            client.close()


@pytest.fixture(scope="module")
def labs(
    two_nodes: LocalCluster,
    engine: docker.DockerClient,
    nodes: dict[str, docker.DockerClient],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, NodeLab]]:
    """The upstream (HTTP, HTTPS, DNS for *.test) on each node, at one address."""
    folder = tmp_path_factory.mktemp("swarm-lab")
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
    name = f"jsbx-swarm-egress-lab-{uuid4().hex[:8]}"
    labels = {TEST_LABEL: name}
    cluster_subnet = engine.networks.get(two_nodes.network_name).attrs["IPAM"]["Config"][0]
    made: list[docker.DockerClient] = []
    try:
        subnet = ""
        for _ in range(20):
            subnet = f"10.213.{random.randrange(256)}.0/24"
            if subnet == cluster_subnet["Subnet"]:
                continue
            try:
                for node in nodes.values():
                    node.networks.create(
                        name,
                        internal=True,
                        labels=labels,
                        ipam=docker.types.IPAMConfig(
                            pool_configs=[docker.types.IPAMPool(subnet=subnet)]
                        ),
                    )
                    made.append(node)
                break
            except docker.errors.APIError:
                for node in made:
                    node.networks.get(name).remove()
                made.clear()
        upstream_ip = str(ipaddress.ip_network(subnet)[10])
        zone = {"A": {h: [upstream_ip] for h in ("allowed.test", "other.test", "unlisted.test")}}
        files = {
            "lab/server.py": SERVER.encode(),
            "lab/zone.json": json.dumps(zone).encode(),
            "lab/cert.pem": (folder / "cert.pem").read_bytes(),
            "lab/key.pem": (folder / "key.pem").read_bytes(),
        }
        settings = {
            "test_egress_resolver": upstream_ip,
            "test_egress_exempt": [subnet],
            "test_egress_networks": [name],
            "test_egress_upstream_ca": files["lab/cert.pem"].decode(),
            "egress_image": Settings().egress_image,
        }
        started = {}
        for hostname, node in nodes.items():
            node.api.create_container(
                IMAGE,
                name=name,
                entrypoint=["python3"],
                command=["-u", "-c", SERVE, "upstream", "/lab/zone.json"],
                user="0:0",
                labels=labels,
                host_config=node.api.create_host_config(
                    cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"], network_mode=name
                ),
                networking_config=node.api.create_networking_config(
                    {name: node.api.create_endpoint_config(ipv4_address=upstream_ip)}  # type: ignore[arg-type]
                ),
            )
            node.api.put_archive(name, "/", _tar(files))
            node.api.start(name)
            started[hostname] = NodeLab(node, name, upstream_ip, dict(settings))
        for lab in started.values():
            deadline = time.monotonic() + 60
            while not any("READY" in line for line in lab.log()):
                assert time.monotonic() < deadline, lab.log()
                time.sleep(0.2)
            lab.settings["cert_pem"] = files["lab/cert.pem"].decode()
        yield started
    finally:
        for node in made:
            with_lab = node.containers.list(all=True, filters={"label": f"{TEST_LABEL}={name}"})
            for container in with_lab:
                container.remove(force=True)
            node.networks.get(name).remove()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def on_cluster(nodes: dict[str, docker.DockerClient], label: str) -> dict[str, list[str]]:
    """Services and networks (the manager's view), containers, volumes and networks (each
    node's) carrying `label`."""
    selector: dict[str, Any] = {"label": label}
    manager = next(iter(nodes.values()))
    found = {
        "service": [s.name for s in manager.services.list(filters=selector)],
        "swarm network": [
            n.name for n in manager.networks.list(filters=selector) if n.attrs["Scope"] == "swarm"
        ],
    }
    for name, client in nodes.items():
        found[f"container on {name}"] = [
            c.name for c in client.containers.list(all=True, filters=selector)
        ]
        found[f"volume on {name}"] = [v.name for v in client.volumes.list(filters=selector)]
        found[f"network on {name}"] = [
            n.name for n in client.networks.list(filters=selector) if n.attrs["Scope"] == "local"
        ]
    return {kind: names for kind, names in found.items() if names}


@pytest.fixture
def make_api(
    two_nodes: LocalCluster,
    nodes: dict[str, docker.DockerClient],
    labs: dict[str, NodeLab],
    home: Path,
    test_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Client]]:
    """Swarm clients on `home` whose proxies may reach the lab; afterwards nothing they made
    may be left on the manager or either node."""
    for variable, value in two_nodes.env().items():
        monkeypatch.setenv(variable, value)
    settings = {k: v for k, v in next(iter(labs.values())).settings.items() if k != "cert_pem"}
    made: list[Client] = []

    def make(**extra: Any) -> Client:
        client = Client(
            home=home,
            backend="swarm",
            extra_labels={TEST_LABEL: test_label},
            start_timeout=180,  # a loaded 2-core machine; the first proxy on a node starts too
            **settings,
            **extra,
        )
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            try:
                for box in client.containers.list():
                    client.containers.delete(box.id)
            finally:
                client.close()
        leaked = on_cluster(nodes, f"{TEST_LABEL}={test_label}")
        assert not leaked, f"left on the cluster: {leaked}"


@pytest.fixture
def api(make_api: Callable[..., Client]) -> Client:
    return make_api()


def trust_lab(client: Client, container_id: str, lab: NodeLab) -> None:
    """The lab's certificate where PRELUDE's `fetch` looks for it."""
    code = PRELUDE + f"\nopen('/tmp/lab-ca.pem', 'w').write({lab.settings['cert_pem']!r})"
    run_json(client, container_id, code + "\nprint('{}')")


def test_allowlist_sandboxes_on_both_nodes_reach_only_their_domains_via_their_nodes_proxy(
    api: Client,
    nodes: dict[str, docker.DockerClient],
    engine: docker.DockerClient,
    labs: dict[str, NodeLab],
) -> None:
    boxes = [api.containers.create(name=f"allow-{i}", network_policy=ALLOWLIST) for i in range(2)]
    proxy = f"jsbx-egress-{api.settings.store_id}"
    manager = next(iter(nodes.values()))
    placed: dict[str, str] = {}
    for box in boxes:
        state = api._backend.state(box.id)
        assert state is not None
        assert state.running
        assert state.node in nodes
        placed[box.id] = state.node
        node = nodes[state.node]
        node_id = next(
            n.id for n in manager.nodes.list() if n.attrs["Description"]["Hostname"] == state.node
        )

        # Pinned by us to the node whose proxy serves it; the proxy there, not on this host.
        service = manager.services.get(f"jsbx-{box.id}")  # type: ignore[no-untyped-call]
        constraints = service.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
        assert constraints == [f"node.id=={node_id}"]
        assert node.containers.get(proxy).status == "running"
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(proxy)
        overlay = manager.networks.get(f"jsbx-{box.id}-net")
        assert overlay.attrs["Internal"] is True
        assert overlay.attrs["Labels"][NODE] == node_id
        container = node.api.inspect_container(state.docker_id)
        assert list(container["NetworkSettings"]["Networks"]) == [f"jsbx-{box.id}-net"]
        mounts = {m["Destination"]: m for m in container["Mounts"]}
        resolv = mounts["/etc/resolv.conf"]
        assert (resolv["Type"], resolv["RW"]) == ("bind", False)
        config = node.api.inspect_volume(f"{proxy}-config")["Mountpoint"]
        assert resolv["Source"] == f"{config}/resolv.conf"

        lab = labs[state.node]
        trust_lab(api, box.id, lab)
        result = run_json(api, box.id, PROBE.replace("UPSTREAM", repr(lab.upstream_ip)))
        assert result["interfaces"] == ["eth0", "lo"]
        assert "nameserver" not in result["resolv_conf"]
        assert result["http"][0] == 200, result["http"]
        assert "hello from upstream host=allowed.test" in result["http"][1]
        assert result["https"][0] == 200, result["https"]
        assert result["unlisted"][0] == 403, result["unlisted"]
        assert "blocked by network policy" in result["unlisted"][1]
        assert result["unlisted_tls"][0] == 403, result["unlisted_tls"]
        # No way around the proxy: no route to the upstream, no resolver, no other port.
        assert result["resolve"] == "gaierror"
        assert result["direct_tcp"][0] != "open", result["direct_tcp"]
        assert result["direct_dns"][0] != "answer", result["direct_dns"]
        assert result["proxy_other_port"][0] != "open", result["proxy_other_port"]
        requests = [line for line in lab.log() if " REQUEST " in line]
        assert not [line for line in requests if "unlisted.test" in line], requests

        seen = {(d.host, d.decision) for d in api.containers.egress_log(box.id)}
        assert ("allowed.test", "allowed") in seen, seen
        assert ("unlisted.test", "denied") in seen, seen
    assert set(placed.values()) == set(nodes), placed  # the least reserved node each time

    # The first delete leaves the other node's proxy serving its sandbox.
    first, second = boxes
    api.containers.delete(first.id)
    assert not manager.networks.list(names=[f"jsbx-{first.id}-net"])
    with pytest.raises(docker.errors.NotFound):
        nodes[placed[first.id]].containers.get(proxy)
    assert run_json(api, second.id, FETCH) == 200
    api.containers.delete(second.id)
    assert on_cluster(nodes, f"{TEST_LABEL}={api.settings.extra_labels[TEST_LABEL]}") == {}


def test_a_domain_secret_reaches_only_its_domain_and_never_the_sandbox(
    api: Client, nodes: dict[str, docker.DockerClient], labs: dict[str, NodeLab]
) -> None:
    value = new_value()
    box = api.containers.create(
        name="swarm-secret",
        network_policy={
            "type": "allowlist",
            "allowed_domains": ["allowed.test", "other.test"],
            "domain_secrets": [{"domain": "allowed.test", "name": "API_KEY", "value": value}],
        },
    )
    assert value not in box.model_dump_json()
    state = api._backend.state(box.id)
    assert state is not None
    assert state.node is not None
    lab, node = labs[state.node], nodes[state.node]
    container = node.api.inspect_container(state.docker_id)
    assert value not in json.dumps(container)  # not in its env, labels or mounts
    bundle = {m["Destination"]: m for m in container["Mounts"]}[
        "/etc/ssl/certs/ca-certificates.crt"
    ]
    assert (bundle["Type"], bundle["RW"]) == ("bind", False)

    trust_lab(api, box.id, lab)
    result = run_json(api, box.id, SECRET_REQUESTS)
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
    search = run_json(api, box.id, SEARCH)
    assert search["found"] == [], search
    assert search["regions"] > 10, search

    proxy = f"jsbx-egress-{api.settings.store_id}"
    assert value not in bytes(node.api.logs(proxy)).decode(errors="replace")
    reasons = [(d.host, d.reason) for d in api.containers.egress_log(box.id) if d.secret]
    assert ("allowed.test", "secret API_KEY injected") in reasons, reasons
    api.containers.delete(box.id)


def test_reconcile_restores_a_nodes_proxy_and_sweeps_what_a_crash_left(
    api: Client, nodes: dict[str, docker.DockerClient]
) -> None:
    box = api.containers.create(name="swarm-reconcile", network_policy=ALLOWLIST)
    state = api._backend.state(box.id)
    assert state is not None
    assert state.node is not None
    node = nodes[state.node]
    proxy = f"jsbx-egress-{api.settings.store_id}"

    node.api.remove_container(proxy, force=True)
    assert run_json(api, box.id, FETCH) != 200
    report = api.reconcile()  # recreated on its node, back on the sandbox's overlay at .2
    assert report.egress == [f"restarted egress proxy (was absent) on {state.node}"]
    assert run_json(api, box.id, FETCH) == 200

    # A server that died mid-teardown: the record ended, everything else left behind.
    api._store.end(box.id, status="terminated", deleted=True)
    record = api._store.get(box.id)
    assert record is not None
    api._store.update(box.id, extra={k: v for k, v in record.extra.items() if k != "ended_by"})
    label = f"{TEST_LABEL}={api.settings.extra_labels[TEST_LABEL]}"
    assert on_cluster(nodes, label)
    report = api.reconcile()
    assert box.id in report.removed
    assert f"removed idle egress proxy on {state.node}" in report.egress
    assert on_cluster(nodes, label) == {}
