"""`Client(backend="swarm")` on a two-node local Swarm with a PostgreSQL store (the cluster's
configuration): the public-API contract, placement on both nodes, the hardening inside a
task's container, and fail-closed refusals.

One cluster for the module (`two_nodes`, kernel image loaded); every client labels what it
makes with a per-test label, and each test fails if a service, container or volume carrying
it is left on the manager or a node.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from jupyter_sandbox import (
    APIError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
)
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.swarm_backend import SwarmBackend
from jupyter_sandbox.backends.swarm_hardening import HardeningError, check
from tests.cluster.conftest import SCRIPT, TIMINGS
from tests.conftest import IMAGE, TEST_LABEL
from tests.contract import test_api as contract

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]

# The public-API contract, run here as written (fixtures `api` and `make_api` below), but for
# its 5-second lifetime, shorter than a Swarm create plus a first execute on this machine
# (3 to 7 s, docs/scale-out.md): `test_the_hard_lifetime_expires_the_task` below is the same
# promise with 20 seconds.
SHORTER_THAN_A_SWARM_CREATE = {"test_the_hard_lifetime_expires_the_sandbox"}
globals().update(
    {
        name: test
        for name, test in vars(contract).items()
        if name.startswith("test_") and name not in SHORTER_THAN_A_SWARM_CREATE
    }
)


@pytest.fixture
def swarm_env(two_nodes: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The cluster's env (DOCKER_HOST = the manager, TLS), as `cluster up --json` prints it."""
    env = two_nodes.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def nodes(two_nodes: LocalCluster) -> Iterator[dict[str, docker.DockerClient]]:
    """Each node's engine by hostname, the manager first."""
    clients = {n.name: two_nodes.client_for(n.address) for n in two_nodes.nodes()}
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def ready_names(manager: docker.DockerClient) -> set[str]:
    """The nodes the manager sees as ready, by hostname."""
    return {
        n.attrs["Description"]["Hostname"]
        for n in manager.nodes.list()
        if n.attrs["Status"]["State"] == "ready"
    }


def on_cluster(nodes: dict[str, docker.DockerClient], label: str) -> dict[str, list[str]]:
    """Services (on the manager), containers and volumes (on every node) carrying `label`."""
    selector: dict[str, str | list[str] | bool] = {"label": label}
    manager = next(iter(nodes.values()))
    found = {"service": [s.name for s in manager.services.list(filters=selector)]}
    ready = ready_names(manager)
    for name, client in nodes.items():
        if name not in ready:  # a node killed by the test: `cluster down` removes it all
            continue
        found[f"container on {name}"] = [
            c.name for c in client.containers.list(all=True, filters=selector)
        ]
        found[f"volume on {name}"] = [v.name for v in client.volumes.list(filters=selector)]
    return {kind: names for kind, names in found.items() if names}


@pytest.fixture
def make_api(
    swarm_env: dict[str, str],
    nodes: dict[str, docker.DockerClient],
    home: Path,
    test_label: str,
    postgres_url: str,
) -> Iterator[Callable[..., Client]]:
    """Swarm clients on `home` and a fresh PostgreSQL store (as the cluster's servers run);
    afterwards nothing they made may be left on the cluster."""
    made: list[Client] = []

    def make(**settings: Any) -> Client:
        client = Client(
            home=home,
            backend="swarm",
            store_url=postgres_url,
            extra_labels={TEST_LABEL: test_label},
            **settings,
        )
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()
        label = f"{TEST_LABEL}={test_label}"
        leaked = on_cluster(nodes, label)
        if leaked:  # clean up for the next test, then fail this one
            manager = next(iter(nodes.values()))
            for service in manager.services.list(filters={"label": label}):
                manager.api.remove_service(service.id)  # type: ignore[no-untyped-call]
            for name, node in nodes.items():
                if name not in ready_names(manager):
                    continue
                for container in node.containers.list(all=True, filters={"label": label}):
                    container.remove(force=True)
                for volume in node.volumes.list(filters={"label": label}):
                    volume.remove(force=True)
        assert not leaked, f"left on the cluster: {leaked}"


@pytest.fixture
def api(make_api: Callable[..., Client]) -> Client:
    return make_api()


def test_the_hard_lifetime_expires_the_task(api: Client) -> None:
    box = api.containers.create(name="short", lifetime_seconds=20)
    assert api.containers.execute(box.id, "print(1)").stdout == "1\n"
    assert contract.wait_until(lambda: api.containers.retrieve(box.id).status == "expired", 60)
    with pytest.raises(ConflictError) as caught:
        api.containers.execute(box.id, "print(1)")
    assert caught.value.param == "container_id"
    api.containers.delete(box.id)


def test_the_swarm_backend_is_chosen_by_name(api: Client) -> None:
    assert isinstance(api._backend, SwarmBackend)
    assert api._backend.engine.api.base_url.startswith("https://")


def test_sandboxes_land_on_both_nodes_and_get_json_names_the_node(
    api: Client,
    nodes: dict[str, docker.DockerClient],
    home: Path,
    swarm_env: dict[str, str],
    postgres_url: str,
) -> None:
    started = time.monotonic()
    first = api.containers.create(name="a")
    first_result = api.containers.execute(first.id, "print(6 * 7)")
    create_to_result = time.monotonic() - started
    assert first_result.stdout == "42\n"
    boxes = [first, *(api.containers.create(name=n) for n in "bcd")]
    placed: dict[str, str] = {}
    for box in boxes:
        state = api._backend.state(box.id)
        assert state is not None
        assert state.running
        assert state.node in nodes
        placed[box.id] = state.node
        hostname = api.containers.execute(box.id, "import socket; print(socket.gethostname())")
        assert hostname.status == "ok"
    assert set(placed.values()) == set(nodes), placed  # Swarm spread them over both nodes

    shown = subprocess.run(
        [str(SCRIPT), "--home", str(home), "get", first.id, "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            **swarm_env,
            "JUPYTER_SANDBOX_BACKEND": "swarm",
            "JUPYTER_SANDBOX_STORE_URL": postgres_url,
        },
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert printed["node"] == placed[first.id]
    assert printed["id"] == first.id
    assert printed["status"] == "ready"
    for box in boxes:
        api.containers.delete(box.id)
    with TIMINGS.open("a") as log:
        log.write(json.dumps({"swarm create to first result s": round(create_to_result, 2)}) + "\n")


HARDENING_PROBE = r"""
import json, os, resource
status = dict(line.split(":", 1) for line in open("/proc/1/status"))
def cgroup(*names):
    for name in names:
        try:
            return open(name).read().strip()
        except OSError:
            pass
try:
    open("/usr/escape", "w")
    root = "writable"
except OSError as exc:
    root = exc.strerror
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "interfaces": sorted(l.split(":")[0].strip() for l in list(open("/proc/net/dev"))[2:]),
    "root": root,
    "memory": cgroup("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "memsw": cgroup("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
    "pids": cgroup("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "setuid": [p for p in os.popen("find / -xdev -type f -perm /6000 2>/dev/null").read().split()],
}))
"""


def test_the_hardening_is_applied_inside_the_task_container(
    api: Client, nodes: dict[str, docker.DockerClient]
) -> None:
    box = api.containers.create(name="hardened", memory_limit="1g")
    seen = json.loads(api.containers.execute(box.id, HARDENING_PROBE).stdout)
    assert (seen["uid"], seen["gid"]) == (1000, 1000)
    assert set(seen["caps"].values()) == {"0" * 16}
    assert seen["interfaces"] == ["lo"]
    assert seen["root"] == "Read-only file system"
    assert int(seen["memory"]) == 2**30
    assert seen["memsw"] in (None, str(2**30))  # no swap beyond memory (v1 with accounting)
    assert seen["pids"] == str(api.settings.pids_limit)
    assert seen["nofile"] == [4096, 4096]
    assert seen["setuid"] == []
    state = api._backend.state(box.id)
    assert state is not None
    assert state.node is not None
    host = nodes[state.node].api.inspect_container(state.docker_id)["HostConfig"]
    assert host["MemorySwap"] == host["Memory"] == 2**30
    assert host["CpuShares"] == api.settings.cpu_shares
    assert host["Init"] in (None, False)  # sandbox-init is PID 1, as on one host
    api.containers.delete(box.id)


def test_a_runtime_the_nodes_do_not_default_to_is_refused_by_name(
    make_api: Callable[..., Client],
) -> None:
    api = make_api(runtime="runsc")
    with pytest.raises(BadRequestError) as caught:
        api.containers.create(name="gvisor")
    assert caught.value.param == "runtime"
    assert "default runtime of every node" in caught.value.message
    assert list(api.containers.list()) == []


def test_an_allowlist_without_the_egress_image_on_its_node_says_how_to_load_it(
    make_api: Callable[..., Client], nodes: dict[str, docker.DockerClient]
) -> None:
    """Allowlists work on the swarm (test_swarm_egress.py); a node without the proxy's image
    fails the create by name, and leaves nothing (the module's nodes have no egress image)."""
    api = make_api(egress_image="jupyter-sandbox-egress:not-loaded")
    with pytest.raises(APIError) as caught:
        api.containers.create(
            name="egress", network_policy={"type": "allowlist", "allowed_domains": ["pypi.org"]}
        )
    assert caught.value.param == "network_policy"
    assert "docker save jupyter-sandbox-egress:not-loaded | docker load" in caught.value.message
    assert list(api.containers.list()) == []
    manager = next(iter(nodes.values()))
    label = f"{TEST_LABEL}={api.settings.extra_labels[TEST_LABEL]}"
    assert manager.networks.list(filters={"label": label}) == []  # its overlay went too


def test_a_sandbox_no_node_can_hold_fails_closed_with_swarms_reason(
    make_api: Callable[..., Client],
) -> None:
    api = make_api(allow_large_memory=True, start_timeout=5)
    with pytest.raises(InternalServerError) as caught:
        api.containers.create(name="huge", memory_limit="64g")
    assert "insufficient resources" in caught.value.message
    assert list(api.containers.list()) == []


def test_a_container_without_the_hardening_is_refused_by_the_check(
    api: Client, nodes: dict[str, docker.DockerClient]
) -> None:
    """The check that guards every create, against a container made without the spec:
    capabilities kept, writable root, on a bridge."""
    node = next(iter(nodes.values()))
    container = node.containers.run(
        IMAGE, entrypoint=["sleep", "120"], labels={TEST_LABEL: "swarm-check"}, detach=True
    )
    try:
        info = node.api.inspect_container(str(container.id))
        with pytest.raises(HardeningError) as caught:
            check(node.api, info, api.settings, 2**30, None)
    finally:
        container.remove(force=True)
    message = caught.value.message
    assert "not as asked" in message
    for missing in ("CapDrop", "ReadonlyRootfs", "Memory", "PidsLimit", "Networks"):
        assert missing in message, message


# Last in the module: it kills the worker node of the module's cluster (for good: a killed
# Docker-in-Docker node does not come back here, so its volumes go with `cluster down`).
def test_a_stopped_node_ends_its_sandboxes_with_the_reason(
    api: Client, engine: docker.DockerClient, nodes: dict[str, docker.DockerClient]
) -> None:
    manager_name, worker_name = list(nodes)
    boxes = [api.containers.create(name=f"n{index}") for index in range(2)]
    placed = {box.id: api._backend.state(box.id) for box in boxes}
    on_worker = [b for b in boxes if (s := placed[b.id]) is not None and s.node == worker_name]
    survivors = [b for b in boxes if b not in on_worker]
    assert on_worker, f"nothing was placed on the worker: {placed}"
    engine.containers.get(worker_name).kill()
    stopped = time.monotonic()
    ended = contract.wait_until(
        lambda: api.containers.retrieve(on_worker[0].id).status == "terminated", 60
    )
    assert ended, "the sandbox on the stopped node was not marked terminated in 60 s"
    with TIMINGS.open("a") as log:
        took = round(time.monotonic() - stopped, 1)
        log.write(json.dumps({"swarm node kill to terminated s": took}) + "\n")
    record = api._store.get(on_worker[0].id)
    assert record is not None
    assert str(record.error).startswith(f"its node {worker_name} is "), record.error
    for box in survivors:
        assert api.containers.execute(box.id, "print('still here')").stdout == "still here\n"
    fresh = api.containers.create(name="after")
    state = api._backend.state(fresh.id)
    assert state is not None
    assert state.node == manager_name
    started = time.monotonic()
    api.reconcile()  # the node that is down is not dialled
    assert time.monotonic() - started < 20
    for box in [*survivors, fresh]:
        api.containers.delete(box.id)
