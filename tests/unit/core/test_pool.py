"""The warm pool on the in-memory backend: claim, refill, retire, recycle, crash."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from jupyter_sandbox import APIConnectionError, Client
from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from jupyter_sandbox.core.pool import POOL_PROJECT
from tests.unit.core.fake_backend import FakeBackend


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def pooled_ids(client: Client) -> list[str]:
    return [r.id for r in client._pool.pooled() if r.status == "ready"]


def test_a_default_create_claims_the_pooled_sandbox_and_the_pool_refills(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client(pool_size=1, start_timeout=2.0)
    assert client.wait_for_pool(10)
    (pooled,) = pooled_ids(client)
    record = client._store.get(pooled)
    assert record is not None
    assert record.project == POOL_PROJECT
    box = client.containers.create(name="claimed", lifetime_seconds=600)
    assert box.id == pooled
    claimed = client._store.get(box.id)
    assert claimed is not None
    assert claimed.project == "default"
    assert claimed.name == "claimed"
    assert backend.deadlines[box.id] == claimed.expires_at  # the claimed lifetime holds
    assert abs(claimed.expires_at - time.time() - 600) < 5
    assert wait_until(lambda: len(pooled_ids(client)) == 1)
    assert pooled_ids(client) != [box.id]
    client.containers.delete(box.id)


def test_a_create_the_pool_cannot_serve_boots_its_own(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client(pool_size=1, start_timeout=2.0)
    assert client.wait_for_pool(10)
    (pooled,) = pooled_ids(client)
    allowlist = {"type": "allowlist", "allowed_domains": ["pypi.org"]}
    box = client.containers.create(name="own", network_policy=allowlist)
    assert box.id != pooled
    assert pooled_ids(client) == [pooled]
    client.containers.delete(box.id)


def test_a_claim_whose_deadline_cannot_be_moved_is_destroyed_and_a_fresh_one_boots(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client(pool_size=1, start_timeout=2.0)
    assert client.wait_for_pool(10)
    (pooled,) = pooled_ids(client)
    backend.fail_next("write_deadline", APIConnectionError("deadline"), subject=pooled)
    box = client.containers.create(name="fallback")
    assert box.id != pooled
    assert pooled not in backend.sandboxes
    gone = client._store.get(pooled)
    assert gone is not None
    assert gone.deleted
    client.containers.delete(box.id)


def test_closing_the_client_retires_its_pooled_sandboxes(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client(pool_size=2, start_timeout=2.0)
    assert client.wait_for_pool(10)
    pooled = pooled_ids(client)
    assert len(pooled) == 2
    store = client._store
    records_before = {r.id: r for r in store.all()}
    client.close()
    assert backend.holds() == {}
    assert set(records_before) == set(pooled)
    reopened = Store(client.settings.store_path)
    try:
        assert all(reopened.get(i).deleted for i in pooled)  # type: ignore[union-attr]
    finally:
        reopened.close()


def test_a_boot_that_crashes_is_rolled_back_and_retried(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    backend.fail_next("start", APIConnectionError("engine hiccup"))
    client = make_client(pool_size=1, start_timeout=2.0)
    assert client.wait_for_pool(10)  # after a backoff of about a second
    failed = [r for r in client._store.all() if r.status == "failed"]
    assert len(failed) == 1
    assert failed[0].error == "engine hiccup"
    assert sorted(backend.sandboxes) == pooled_ids(client)


def test_a_pooled_sandbox_near_its_pool_deadline_is_replaced(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client(pool_size=1, start_timeout=2.0)
    assert client.wait_for_pool(10)
    (old,) = pooled_ids(client)
    client._store.update(old, expires_at=time.time() + 10)
    client._pool._wake.set()
    assert wait_until(lambda: pooled_ids(client) not in ([], [old]))
    assert old not in backend.sandboxes


def test_the_pool_of_a_dead_process_is_retired_by_reconcile(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    owner = make_client(pool_size=1, start_timeout=2.0)
    assert owner.wait_for_pool(10)
    (orphan,) = pooled_ids(owner)
    child = subprocess.Popen(["true"])
    child.wait()
    owner._store.update(orphan, owner_pid=child.pid)  # as if its process had crashed
    report = owner.reconcile()
    assert orphan in report.marked
    assert orphan not in backend.sandboxes
    record = owner._store.get(orphan)
    assert record is not None
    assert record.status == "terminated"
    assert record.error == "its warm pool's process stopped"
