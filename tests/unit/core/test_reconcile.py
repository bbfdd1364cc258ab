"""Reconcile on the in-memory backend: every kind of orphan, every way a record ends."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends.base import SandboxSpec
from jupyter_sandbox.backends.store import ContainerRecord
from tests.unit.core.fake_backend import FakeBackend

ORPHAN = "cntr_" + "0" * 48


def spec(sandbox_id: str, channel: str = "") -> SandboxSpec:
    return SandboxSpec(sandbox_id, "image", 2**30, time.time() + 60, {}, channel)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def record_of(client: Client, sandbox_id: str) -> ContainerRecord:
    record = client._store.get(sandbox_id)
    assert record is not None
    return record


def test_an_orphan_sandbox_is_removed(client: Client, backend: FakeBackend) -> None:
    backend.start(spec(ORPHAN))
    report = client.reconcile()
    assert report.removed == [ORPHAN]
    assert backend.holds() == {}


def test_orphan_channel_storage_and_deadline_are_removed(
    client: Client, backend: FakeBackend
) -> None:
    location = backend.channel_location(ORPHAN)
    backend.create_channel(location, "key")
    backend.create_storage(ORPHAN)
    backend.write_deadline(ORPHAN, time.time())
    report = client.reconcile()
    assert report.socket_dirs == [Path(location).name]
    assert report.storage == [ORPHAN]
    assert backend.holds() == {}
    assert not (backend.root / "s" / ORPHAN).exists()


def test_what_a_live_sandbox_holds_is_kept(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(name="live")
    before = backend.holds()
    report = client.reconcile()
    assert not report
    assert backend.holds() == before
    client.containers.delete(box.id)


def test_a_sandbox_another_server_makes_ready_meanwhile_is_kept(
    client: Client, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server's create completes while this reconcile runs: its container appears
    just as its record is read. Only a look at the backend taken after the read may judge it."""
    box = client.containers.create(name="made-elsewhere")
    hidden = backend.sandboxes.pop(box.id)
    read = client._store.all

    def read_then_appears(**kwargs: object) -> list[ContainerRecord]:
        records = read(**kwargs)  # type: ignore[arg-type]
        backend.sandboxes[box.id] = hidden
        return records

    monkeypatch.setattr(client._store, "all", read_then_appears)
    report = client.reconcile()
    assert box.id not in report.marked
    assert record_of(client, box.id).status == "ready"
    monkeypatch.undo()
    client.containers.delete(box.id)


@pytest.mark.parametrize(
    ("exit_code", "error"),
    [
        (None, "the container stopped outside this store's control"),
        (137, "the sandbox's container exited (code 137)"),
    ],
)
def test_a_record_whose_sandbox_vanished_is_terminated(
    client: Client, backend: FakeBackend, exit_code: int | None, error: str
) -> None:
    box = client.containers.create(name="vanishes")
    backend.sandboxes.pop(box.id)  # gone (the engine's events may still know its exit code)
    backend.exit_code = lambda sandbox_id, since: exit_code  # type: ignore[method-assign]
    report = client.reconcile()
    assert report.marked == [box.id]
    record = record_of(client, box.id)
    assert record.status == "terminated"
    assert record.error == error
    assert backend.holds() == {}  # its channel, deadline and storage went too


def test_a_vanished_sandbox_past_its_lifetime_is_expired(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="old")
    backend.sandboxes.pop(box.id)
    client._store.update(box.id, expires_at=time.time() - 1)
    client.reconcile()
    assert record_of(client, box.id).status == "expired"


def test_a_create_whose_creator_died_is_failed_and_hidden(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="half")
    client._store.update(box.id, status="initializing", owner_pid=dead_pid())
    report = client.reconcile()
    assert report.marked == [box.id]
    record = record_of(client, box.id)
    assert record.status == "failed"
    assert record.deleted
    assert record.error == "its creator stopped before the sandbox was ready"
    assert backend.holds() == {}


def test_a_create_in_progress_is_left_alone_until_it_is_stale(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="starting")
    client._store.update(box.id, status="initializing", owner_pid=os.getpid())
    assert not client.reconcile()
    assert box.id in backend.sandboxes
    stale = time.time() - 2 * client.settings.start_timeout - 1
    client._store.update(box.id, created_at=stale)
    assert client.reconcile().marked == [box.id]
    assert backend.holds() == {}


def test_a_failed_record_left_visible_is_hidden(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(name="old-version")
    client.containers.delete(box.id)
    client._store.update(box.id, status="failed", deleted=False)
    assert client.reconcile().marked == [box.id]
    assert record_of(client, box.id).deleted


def test_a_teardown_in_progress_elsewhere_is_left_to_its_ender(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="ending")
    location = record_of(client, box.id).socket_dir
    # Ended by this (live) process, whose teardown has not run yet.
    assert client._store.end(box.id, status="terminated", deleted=True) is not None
    assert location in backend.holds()["channel"]
    assert client.reconcile().socket_dirs == []  # ended moments ago by a live process
    record = record_of(client, box.id)
    extra = {**record.extra, "ended_by": [socket.gethostname(), dead_pid()]}
    client._store.update(box.id, extra=extra)  # its ender died
    assert client.reconcile().socket_dirs == [Path(location).name]
    assert backend.holds() == {}


def test_stale_uploads_of_a_live_sandbox_are_swept(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(name="uploads")
    stale = backend.root / "s" / box.id / "uploads" / ".jsbx-upload-0123456789abcdef"
    stale.write_bytes(b"half an upload")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = stale.with_name(".jsbx-upload-fedcba9876543210")
    fresh.write_bytes(b"in flight")
    report = client.reconcile()
    assert report.uploads == [f"{box.id}/{stale.name}"]
    assert not stale.exists()
    assert fresh.exists()
    client.containers.delete(box.id)


def test_the_egress_proxy_is_reconciled_with_the_allowlist_sandboxes(
    client: Client, backend: FakeBackend
) -> None:
    assert client.reconcile().egress == []
    allowlist = {"type": "allowlist", "allowed_domains": ["pypi.org"]}
    box = client.containers.create(name="net", network_policy=allowlist)
    assert client.reconcile().egress == ["proxy kept"]
    client.containers.delete(box.id)
    assert backend.networks == set()


def test_gc_reports_what_the_start_up_pass_found(make_client: object, backend: FakeBackend) -> None:
    backend.start(spec(ORPHAN))
    client = make_client()  # type: ignore[operator]
    assert ORPHAN not in backend.sandboxes  # the start-up pass removed it
    expired, report = client.gc()
    assert expired == []
    assert report.removed == [ORPHAN]
    assert f"removed orphan {ORPHAN}" in report.lines()
    assert client.gc()[1].removed == []  # reported once
