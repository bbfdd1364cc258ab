"""The warm pool on the real engine: claims, refills, lifetimes, parallel claims, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError, Client
from tests.conftest import TEST_LABEL, labelled_objects

pytestmark = pytest.mark.docker

POOL_WAIT = 120.0


def container_exists(container_id: str) -> bool:
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name=^jsbx-{container_id}$"],
        capture_output=True,
        text=True,
        check=True,
    )
    return bool(found.stdout.strip())


def pooled_ids(client: Client) -> set[str]:
    return {r.id for r in client._pool.pooled() if r.status == "ready"}


def test_create_claims_a_pooled_sandbox_and_the_pool_refills(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(pool_size=2)
    assert client.wait_for_pool(POOL_WAIT)
    assert client.containers.list().data == []  # pooled sandboxes belong to nobody yet
    ready = pooled_ids(client)
    assert len(ready) == 2
    before = time.time()
    container = client.containers.create(name="fast", expires_after={"minutes": 5})
    try:
        assert container.id in ready
        assert (container.name, container.status) == ("fast", "ready")
        assert container.created_at >= int(before)
        assert container.expires_after.minutes == 5
        assert container.expires_at == pytest.approx(time.time() + 3600, abs=5)
        execution = client.containers.execute(container.id, "x = 6 * 7\nprint(x)")
        assert (execution.status, execution.stdout) == ("ok", "42\n")
        assert [c.id for c in client.containers.list()] == [container.id]
        assert client.wait_for_pool(POOL_WAIT)  # topped up again, without the claimed one
        assert container.id not in pooled_ids(client)
        assert len(pooled_ids(client)) == 2
    finally:
        client.containers.delete(container.id)
    pooled = pooled_ids(client)
    client.close()
    assert not any(container_exists(i) for i in pooled)  # closing removes the pool


def test_other_configurations_boot_cold(make_client: Callable[..., Client]) -> None:
    client = make_client(pool_size=1)
    assert client.wait_for_pool(POOL_WAIT)
    ready = pooled_ids(client)
    small = client.containers.create(name="small", memory_limit="512m")
    try:
        assert small.id not in ready
        assert small.memory_limit == "512m"
        assert pooled_ids(client) == ready  # nothing was taken
    finally:
        client.containers.delete(small.id)


def test_a_claimed_sandbox_ends_at_its_own_hard_lifetime(
    make_client: Callable[..., Client],
) -> None:
    """The pooled container was started for an hour; the claim moves its deadline to 5 s."""
    client = make_client(pool_size=1)
    assert client.wait_for_pool(POOL_WAIT)
    ready = pooled_ids(client)
    container = client.containers.create(name="brief", lifetime_seconds=5)
    assert container.id in ready
    assert container.expires_at - container.created_at == 5
    end = time.monotonic() + 60
    while container_exists(container.id) and time.monotonic() < end:
        time.sleep(0.5)
    assert not container_exists(container.id), "the container outlived its claimed lifetime"
    client.sweep()
    assert client.containers.retrieve(container.id).status in ("expired", "terminated")


def test_parallel_creates_hand_each_pooled_sandbox_out_once(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(pool_size=3)
    assert client.wait_for_pool(POOL_WAIT)
    ready = pooled_ids(client)
    with ThreadPoolExecutor(max_workers=8) as workers:
        made = list(workers.map(lambda i: client.containers.create(name=f"p{i}").id, range(8)))
    try:
        assert len(set(made)) == 8
        assert len(ready & set(made)) == 3  # the three pooled ones, each once; the rest cold
        for container_id in made:
            assert client.containers.execute(container_id, "print('me')").stdout == "me\n"
    finally:
        for container_id in made:
            client.containers.delete(container_id)


def test_the_pool_project_is_reserved(home: Path) -> None:
    with pytest.raises(BadRequestError, match="reserved") as failure:
        Client(home=home, project="__warm_pool__")
    assert failure.value.param == "project"


_POOL_OWNER = """
import json, sys, time
from jupyter_sandbox import Client
client = Client(home=sys.argv[1], extra_labels=json.loads(sys.argv[2]), pool_size=2)
assert client.wait_for_pool(120)
print(json.dumps(sorted(r.id for r in client._pool.pooled())), flush=True)
time.sleep(600)
"""


def test_a_crashed_pools_sandboxes_are_reaped(home: Path, test_label: str) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _POOL_OWNER, str(home), json.dumps({TEST_LABEL: test_label})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pooled = json.loads(owner.stdout.readline())
        assert len(pooled) == 2
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    assert all(container_exists(i) for i in pooled)
    with Client(home=home, extra_labels={TEST_LABEL: test_label}) as survivor:
        assert survivor._unreported is not None
        assert sorted(survivor._unreported.marked) == pooled
        assert not any(container_exists(i) for i in pooled)
        assert survivor.containers.list().data == []
    assert labelled_objects(f"{TEST_LABEL}={test_label}") == {}


def test_the_server_serves_creates_from_its_warm_pool(tmp_path: Path, test_label: str) -> None:
    """`serve` with JUPYTER_SANDBOX_POOL_SIZE: the openai SDK's create claims a pooled one;
    stopping the server removes the pool (serving() fails the test on any leftover)."""
    from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
    from jupyter_sandbox.core.pool import POOL_PROJECT
    from jupyter_sandbox.settings import Settings
    from tests.integration.server_harness import serving

    home = tmp_path / "home"
    with serving(home, test_label, pool_size=1) as server:
        store = Store(Settings(home=home).store_path)
        try:
            end = time.monotonic() + POOL_WAIT
            pooled: set[str] = set()
            while not pooled and time.monotonic() < end:
                pooled = {
                    r.id
                    for r in store.all(statuses=("ready",))
                    if r.project == POOL_PROJECT and not r.deleted
                }
                time.sleep(0.1)
            assert pooled, "the server's pool never filled"
            sdk = server.sdk()
            container = sdk.containers.create(name="from-the-pool")
            assert container.id in pooled
            assert sdk.containers.retrieve(container.id).status == "ready"
            execution = sdk.post(
                f"/containers/{container.id}/execute",
                body={"code": "print(6 * 7)"},
                cast_to=dict,
            )
            assert (execution["status"], execution["stdout"]) == ("ok", "42\n")
            assert [c.id for c in sdk.containers.list()] == [container.id]
            assert list(server.sdk("bob").containers.list()) == []
        finally:
            store.close()
