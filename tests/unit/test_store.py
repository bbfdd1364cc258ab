"""The SQLite store: records, paging in both orders, several processes at once."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest

from jupyter_sandbox.backends.store import ContainerRecord, Store


def make_record(index: int, project: str = "default", name: str | None = None) -> ContainerRecord:
    return ContainerRecord(
        id=f"cntr_{index:04d}",
        project=project,
        name=name or f"box-{index}",
        status="ready",
        created_at=1000.0 + index,
        last_active_at=1000.0 + index,
        memory_limit="1g",
        network_policy={"type": "disabled"},
        idle_minutes=20,
        expires_at=5000.0,
        image="img",
        kernel_key="k",
        socket_dir="/tmp/x",
        owner_pid=1,
        owner_host="h",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store.sqlite3")
    for index in range(25):
        store.insert(make_record(index))
    store.insert(make_record(99, project="other"))
    return store


def test_store_file_is_private(store: Store) -> None:
    assert store.path.stat().st_mode & 0o077 == 0


def test_round_trip_and_update(store: Store) -> None:
    assert store.get("cntr_0003") == make_record(3)
    updated = store.update("cntr_0003", status="expired", error="gone")
    assert updated.status == "expired"
    assert store.get("cntr_0003") == updated
    assert store.get("cntr_nope") is None


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_paging_walks_every_record_once(store: Store, order: str) -> None:
    seen: list[str] = []
    after = None
    while True:
        records, has_more = store.page(project="default", limit=7, order=order, after=after)
        seen += [r.id for r in records]
        if not has_more:
            break
        after = records[-1].id
    expected = [f"cntr_{i:04d}" for i in range(25)]
    assert seen == (expected if order == "asc" else expected[::-1])


def test_paging_is_scoped_by_project_and_name(store: Store) -> None:
    records, has_more = store.page(project="other", limit=20, order="desc", after=None)
    assert [r.id for r in records] == ["cntr_0099"]
    assert not has_more
    records, _ = store.page(project="default", limit=20, order="desc", after=None, name="box-4")
    assert [r.id for r in records] == ["cntr_0004"]


def test_unknown_cursor_is_reported(store: Store) -> None:
    with pytest.raises(LookupError):
        store.page(project="default", limit=5, order="asc", after="cntr_missing")


def _insert_many(path: str, start: int) -> None:
    store = Store(Path(path))
    for index in range(start, start + 50):
        store.insert(make_record(index))
        store.touch(f"cntr_{index:04d}")
    store.close()


def test_several_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    Store(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_insert_many, args=(str(path), 1000 * i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(Store(path).all()) == 200


def _claim_many(path: str, project: str, attempts: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = Store(Path(path))
    won = []
    for _ in range(attempts):
        record = store.claim("__pool__", expiring_after=100.0, project=project, name=project)
        if record is not None:
            won.append(record.id)
    store.close()
    results.put((project, won))


def test_one_hundred_parallel_claims_hand_each_pooled_record_out_once(tmp_path: Path) -> None:
    """The warm-pool row of the threat model: 4 processes x 25 claims race for 50 records."""
    path = tmp_path / "pool.sqlite3"
    store = Store(path)
    for index in range(50):
        store.insert(make_record(index, project="__pool__"))
    store.insert(replace(make_record(60, project="__pool__"), expires_at=10.0))
    store.close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_claim_many, args=(str(path), f"tenant-{i}", 25, results))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    won = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    claimed = [record_id for _, ids in won for record_id in ids]
    assert len(claimed) == 50  # every fresh pooled record was handed out...
    assert len(set(claimed)) == 50  # ...exactly once
    assert "cntr_0060" not in claimed  # one too near its deadline is never handed out
    after = Store(path)
    owners = {r.id: r.project for r in after.all()}
    for tenant, ids in won:
        assert all(owners[record_id] == tenant for record_id in ids)
    assert after.take("cntr_0001", "__pool__", status="terminated") is None  # claimed already
    assert after.take("cntr_0060", "__pool__", status="terminated") is not None


def _end_many(
    path: str,
    worker: int,
    status: str,
    deleted: bool,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    store = Store(Path(path))
    won = [
        f"cntr_{index:04d}"
        for index in range(40)
        if store.end(f"cntr_{index:04d}", status=status, deleted=deleted) is not None  # type: ignore[arg-type]
    ]
    store.close()
    results.put((worker, won))


def test_each_sandbox_ends_once_whoever_races(tmp_path: Path) -> None:
    """Deletes and expiries in 4 processes race over 40 live records: each record is ended
    by one caller as live (that one tears down); a delete after an expiry only hides it."""
    path = tmp_path / "end.sqlite3"
    store = Store(path)
    for index in range(40):
        store.insert(make_record(index))
    store.close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    kinds = [("terminated", True), ("terminated", True), ("expired", False), ("expired", False)]
    workers = [
        context.Process(target=_end_many, args=(str(path), i, *kind, results))
        for i, kind in enumerate(kinds)
    ]
    for worker in workers:
        worker.start()
    won = [ids for _, ids in sorted(results.get(timeout=60) for _ in workers)]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    after = {r.id: r for r in Store(path).all()}
    for index in range(40):
        record_id = f"cntr_{index:04d}"
        record = after[record_id]
        assert not record.is_live
        assert record.extra["ended_by"][1] > 0  # who tore it down (reconcile reads it)
        winners = [i for i, ids in enumerate(won) if record_id in ids]
        # Exactly one winner saw it live; a delete may also win after an expiry (hiding it).
        assert 1 <= len(winners) <= 2, (record_id, winners)
        assert sum(1 for i in winners if kinds[i][1]) <= 1  # never two deletes
        assert record.deleted == any(kinds[i][1] for i in winners)
    again = Store(path)
    assert again.end("cntr_0000", status="terminated", deleted=True) is None  # gone for good
    assert again.end("cntr_9999", status="terminated") is None
