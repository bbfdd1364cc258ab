"""Idle expiry and hard lifetimes on the in-memory backend."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from jupyter_sandbox import APIConnectionError, Client, ConflictError
from tests.unit.core.fake_backend import FakeBackend


def test_an_idle_sandbox_expires_after_its_minutes(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(
        name="idle", expires_after={"anchor": "last_active_at", "minutes": 2}
    )
    assert client._expiry.sweep(force=True) == []
    client._store.update(box.id, last_active_at=time.time() - 2 * 60 + 5)
    assert client._expiry.sweep(force=True) == []  # 5 s to go
    client._store.update(box.id, last_active_at=time.time() - 2 * 60 - 1)
    assert client._expiry.sweep(force=True) == [box.id]
    assert client.containers.retrieve(box.id).status == "expired"
    assert backend.holds() == {}
    with pytest.raises(ConflictError) as caught:
        client.containers.execute(box.id, "1")
    assert caught.value.param == "container_id"


def test_activity_keeps_a_sandbox_alive(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(
        name="busy", expires_after={"anchor": "last_active_at", "minutes": 1}
    )
    client._store.update(box.id, last_active_at=time.time() - 59)
    client.containers.execute(box.id, "1")  # touches last_active_at
    client._store.update(box.id, created_at=time.time())  # (unrelated to idleness)
    record = client._store.get(box.id)
    assert record is not None
    assert time.time() - record.last_active_at < 5
    assert client._expiry.sweep(force=True) == []
    client.containers.delete(box.id)


def test_the_hard_lifetime_ends_even_an_active_sandbox(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="short", lifetime_seconds=60)
    assert int(backend.deadlines[box.id]) == box.expires_at  # the supervisor's deadline too
    client._store.update(box.id, expires_at=time.time() - 1, last_active_at=time.time())
    assert client._expiry.sweep(force=True) == [box.id]
    assert client.containers.retrieve(box.id).status == "expired"
    assert backend.holds() == {}


def test_a_sandbox_stopped_by_its_own_deadline_is_expired(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="deadline", lifetime_seconds=60)
    client._store.update(box.id, expires_at=time.time() - 0.5)
    backend.stop(box.id, exit_code=0)  # sandbox-init obeyed the deadline
    client._expiry._last_sweep = time.time()  # the sweep ran a moment ago: not again yet
    assert client.containers.retrieve(box.id).status == "expired"


def test_sweeps_are_rate_limited_unless_forced(client: Client) -> None:
    box = client.containers.create(name="rate")
    assert client.sweep() == []
    client._store.update(box.id, expires_at=time.time() - 1)
    assert client.sweep() == []  # swept less than a second ago
    assert client._expiry.sweep(force=True) == [box.id]


def test_one_failing_expiry_does_not_stop_the_others(
    make_client: Callable[..., Client], backend: FakeBackend
) -> None:
    client = make_client()
    first = client.containers.create(name="first")
    second = client.containers.create(name="second")
    for box in (first, second):
        client._store.update(box.id, expires_at=time.time() - 1)
    backend.fail_next("remove", APIConnectionError("engine gone"), subject=first.id)
    expired = client._expiry.sweep(force=True)
    assert sorted(expired) == sorted([first.id, second.id])  # both ended; the failure logged
    assert client.containers.retrieve(second.id).status == "expired"
    assert client.containers.retrieve(first.id).status == "expired"
    assert second.id not in backend.sandboxes
    assert first.id in backend.sandboxes  # what failed is left to reconcile
    assert client.reconcile().removed == [first.id]
    assert backend.holds() == {}
