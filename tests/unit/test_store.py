"""The store contract, written once and run against SQLite and PostgreSQL: records, paging in
both orders, tenancy, several processes at once, pool claims handed out exactly once."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jupyter_sandbox.backends.file_store import (
    CURSOR_SECONDS,
    ContainerFileRecord,
    FileRecord,
    FileStore,
    SkillRecord,
    SkillVersionRecord,
)
from jupyter_sandbox.backends.response_store import ResponseRecord, ResponseStore
from jupyter_sandbox.backends.sqlite_store import SqliteStore
from jupyter_sandbox.backends.store import Store
from tests.store_specs import make_record, open_spec


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    store = open_store()
    for index in range(25):
        store.insert(make_record(index))
    store.insert(make_record(99, project="other"))
    return store


def test_store_file_is_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
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
    store = open_spec(path)
    for index in range(start, start + 50):
        store.insert(make_record(index))
        store.touch(f"cntr_{index:04d}")
    store.close()


def test_several_processes_write_at_once(spec: str, open_store: Callable[[], Store]) -> None:
    path = spec
    open_spec(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_insert_many, args=(str(path), 1000 * i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(open_store().all()) == 200


def _claim_many(path: str, project: str, attempts: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = open_spec(path)
    won = []
    for _ in range(attempts):
        record = store.claim("__pool__", expiring_after=100.0, project=project, name=project)
        if record is not None:
            won.append(record.id)
    store.close()
    results.put((project, won))


def test_one_hundred_parallel_claims_hand_each_pooled_record_out_once(
    spec: str, open_store: Callable[[], Store]
) -> None:
    """The warm-pool row of the threat model: 4 processes x 25 claims race for 50 records."""
    path = spec
    store = open_store()
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
    after = open_store()
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
    store = open_spec(path)
    won = [
        f"cntr_{index:04d}"
        for index in range(40)
        if store.end(f"cntr_{index:04d}", status=status, deleted=deleted) is not None  # type: ignore[arg-type]
    ]
    store.close()
    results.put((worker, won))


def test_each_sandbox_ends_once_whoever_races(spec: str, open_store: Callable[[], Store]) -> None:
    """Deletes and expiries in 4 processes race over 40 live records: each record is ended
    by one caller as live (that one tears down); a delete after an expiry only hides it."""
    path = spec
    store = open_store()
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
    after = {r.id: r for r in open_store().all()}
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
    again = open_store()
    assert again.end("cntr_0000", status="terminated", deleted=True) is None  # gone for good
    assert again.end("cntr_9999", status="terminated") is None


def test_another_projects_cursor_is_unknown(store: Store) -> None:
    with pytest.raises(LookupError):
        store.page(project="default", limit=5, order="asc", after="cntr_0099")


# Files, container files, skills and versions: a cursor outlives its row (issue 17).


def _file(index: int, project: str = "p") -> FileRecord:
    return FileRecord(
        f"file-{index:04d}", project, f"f{index}", "user_data", 1, "0" * 64, 1000.0 + index
    )


def _walk_deleting(
    page: Callable[[str | None], tuple[list[Any], bool]], delete: Callable[[Any], None]
) -> list[str]:
    """The SDK's loop: fetch a page, delete each item, ask for the page after the last one."""
    seen: list[str] = []
    after = None
    while True:
        records, more = page(after)
        for record in records:
            delete(record)
        seen += [r.id for r in records]
        if not more or not records:
            return seen
        after = records[-1].id


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_files_page_while_deleting(open_store: Callable[[], Store], order: str) -> None:
    records = FileStore(open_store())
    for index in range(7):
        records.add_file(_file(index))
    records.add_file(_file(50, project="q"))
    seen = _walk_deleting(
        lambda after: records.files_page("p", limit=2, order=order, after=after, purpose=None),
        lambda r: records.delete_file(r.id),
    )
    expected = [f"file-{i:04d}" for i in range(7)]
    assert seen == (expected if order == "asc" else expected[::-1])
    assert records.files_page("p", limit=10, order="asc", after=None, purpose=None) == ([], False)
    with pytest.raises(LookupError):  # another project's id, present or deleted
        records.files_page("p", limit=2, order="asc", after="file-0050", purpose=None)
    with pytest.raises(LookupError):
        records.files_page("q", limit=2, order="asc", after="file-0003", purpose=None)


def test_container_files_page_while_deleting_and_keep_ids(open_store: Callable[[], Store]) -> None:
    records = FileStore(open_store())
    for index in range(5):
        records.put_container_file(
            ContainerFileRecord(
                f"cfile_{index}", "cntr_a", f"/mnt/data/{index}", 1, "user", 1.0 + index
            )
        )
    replaced = records.put_container_file(
        ContainerFileRecord("cfile_new", "cntr_a", "/mnt/data/2", 9, "user", 99.0)
    )
    assert (replaced.id, replaced.created_at, replaced.bytes) == ("cfile_2", 3.0, 9)
    seen = _walk_deleting(
        lambda after: records.container_files_page("cntr_a", limit=2, order="desc", after=after),
        lambda r: records.delete_container_file("cntr_a", r.id),
    )
    assert seen == [f"cfile_{i}" for i in (4, 3, 2, 1, 0)]
    with pytest.raises(LookupError):  # a cursor of another sandbox
        records.container_files_page("cntr_b", limit=2, order="desc", after="cfile_3")
    records.delete_container_files("cntr_a")  # the sandbox went: so do its cursors
    with pytest.raises(LookupError):
        records.container_files_page("cntr_a", limit=2, order="desc", after="cfile_3")


def test_skills_and_versions_page_while_deleting(open_store: Callable[[], Store]) -> None:
    records = FileStore(open_store())
    for index in range(5):
        skill = SkillRecord(f"skill_{index}", "p", f"s{index}", "d", "1", "4", 10.0 + index)
        for version in range(1, 5):
            records.add_skill_version(
                SkillVersionRecord(skill.id, str(version), f"skv_{index}_{version}", "s", "d",
                                   "0" * 64, 1, 10.0 + version),
                skill,
            )  # fmt: skip
    versions = _walk_deleting(
        lambda after: records.skill_versions_page("skill_0", limit=1, order="asc", after=after),
        lambda r: records.delete_skill_version("skill_0", r.version),
    )
    assert versions == [f"skv_0_{v}" for v in range(1, 5)]
    seen = _walk_deleting(
        lambda after: records.skills_page("p", limit=2, order="asc", after=after),
        lambda r: records.delete_skill(r.id),
    )
    assert seen == [f"skill_{i}" for i in range(5)]


def test_cursors_of_deleted_rows_expire(
    open_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = FileStore(open_store())
    records.add_file(_file(1))
    records.add_file(_file(2))
    records.delete_file("file-0001")
    assert records.files_page("p", limit=5, order="asc", after="file-0001", purpose=None)[0]
    later = time.time() + CURSOR_SECONDS + 1
    monkeypatch.setattr(time, "time", lambda: later)
    records.delete_file("file-0002")  # each delete also forgets cursors past their age
    with pytest.raises(LookupError):
        records.files_page("p", limit=5, order="asc", after="file-0001", purpose=None)


def test_responses_are_seen_only_by_their_project(open_store: Callable[[], Store]) -> None:
    responses = ResponseStore(open_store())
    mine = ResponseRecord("resp_1", "alice", 1.0, {"id": "resp_1"}, [], [{"role": "user"}], {})
    responses.put(mine)
    responses.put(replace(mine, messages=[{"role": "user"}, {"role": "assistant"}]))  # upsert
    assert responses.get("resp_1", "alice") == replace(
        mine, messages=[{"role": "user"}, {"role": "assistant"}]
    )
    assert responses.get("resp_1", "bob") is None
    assert not responses.delete("resp_1", "bob")
    assert ResponseStore(open_store()).get("resp_1", "alice") is not None  # another server
    assert responses.delete("resp_1", "alice")
    assert responses.get("resp_1", "alice") is None
