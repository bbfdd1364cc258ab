"""Schema versions, on SQLite and PostgreSQL: a new store is at the latest version, an older
one migrates in order and keeps its rows, a newer one is refused, servers starting together
migrate once; and pool claims from many threads hand each record out once."""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from jupyter_sandbox._exceptions import InternalServerError
from jupyter_sandbox.backends.db_blobs import DatabaseBlobStore
from jupyter_sandbox.backends.migrations import LATEST_VERSION, MIGRATIONS
from jupyter_sandbox.backends.response_store import ResponseRecord, ResponseStore
from jupyter_sandbox.backends.store import Store
from tests.store_specs import make_record, open_spec

_ROW = (
    "INSERT INTO containers (id, project, name, status, created_at, last_active_at, "
    "memory_limit, network_policy, idle_minutes, expires_at, image, kernel_key, socket_dir, "
    "owner_pid, owner_host) VALUES ('cntr_old', 'p', 'n', 'ready', 1, 1, '1g', '{}', 20, 2, "
    "'i', 'k', 's', 1, 'h')"
)


def write_schema(spec: str, version: int, *, recorded: int | None = None) -> None:
    """Leave the store as code whose last migration is `version` would (recording `recorded`,
    default `version`), with one container row."""
    recorded = version if recorded is None else recorded
    statements = [s for m in MIGRATIONS[:version] for s in m.statements]
    if spec.startswith("postgresql://"):
        with psycopg.connect(spec, autocommit=True) as db:
            db.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for statement in statements:
                db.execute(statement.encode())
            db.execute(_ROW.encode())
            for number in range(1, recorded + 1):
                db.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (%s, 'x')",
                    (number,),
                )
        return
    db = sqlite3.connect(spec)
    for statement in statements:
        db.execute(statement)
    db.execute(_ROW)
    db.execute(f"PRAGMA user_version = {recorded}")
    db.commit()
    db.close()


def schema_version(spec: str) -> int:
    """What the store says its version is."""
    if spec.startswith("postgresql://"):
        with psycopg.connect(spec) as db:
            row = db.execute("SELECT MAX(version), COUNT(*) FROM schema_migrations").fetchone()
            assert row is not None
            assert row[0] == row[1]  # each migration recorded once
            return int(row[0])
    db = sqlite3.connect(spec)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == LATEST_VERSION
    assert all(m.statements and m.description for m in MIGRATIONS)


def test_a_new_store_is_at_the_latest_version(open_store: Callable[[], Store], spec: str) -> None:
    open_store()
    assert schema_version(spec) == LATEST_VERSION


@pytest.mark.parametrize("version", range(1, LATEST_VERSION))
def test_an_older_store_migrates_and_keeps_its_rows(
    open_store: Callable[[], Store], spec: str, version: int
) -> None:
    write_schema(spec, version)
    store = open_store()
    assert schema_version(spec) == LATEST_VERSION
    old = store.get("cntr_old")
    assert old is not None
    assert (old.project, old.status) == ("p", "ready")
    responses = ResponseStore(store)  # the table of migration 2
    record = ResponseRecord("resp_1", "alice", 1.0, {"id": "resp_1"}, [], [], {})
    responses.put(record)
    assert responses.get("resp_1", "alice") == record
    with store.transaction() as db:  # the tables of migration 3
        db.execute("INSERT INTO rate_buckets VALUES ('k', 1.0, 2.0)")
    blobs = DatabaseBlobStore(store, "files")  # the tables of migration 5
    digest, _ = blobs.put(io.BytesIO(b"bytes"), limit=10)
    assert blobs.open(digest).read() == b"bytes"
    open_store()  # opening again changes nothing
    assert schema_version(spec) == LATEST_VERSION


def test_a_store_from_before_versioning_migrates(tmp_path: Path) -> None:
    """SQLite files made before versioning say version 0 and hold migrations 1 and 2."""
    spec = str(tmp_path / "old.sqlite3")
    write_schema(spec, 2, recorded=0)
    store = open_spec(spec)
    assert store.get("cntr_old") is not None
    store.close()
    assert schema_version(spec) == LATEST_VERSION


def test_a_store_newer_than_the_code_is_refused(spec: str) -> None:
    write_schema(spec, LATEST_VERSION, recorded=LATEST_VERSION + 1)
    with pytest.raises(InternalServerError, match=r"newer than the \d+ this jupyter-sandbox knows"):
        open_spec(spec)
    assert schema_version(spec) == LATEST_VERSION + 1  # left as it was


def test_servers_starting_together_migrate_once(spec: str) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(open_spec(spec))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in opened:
        store.close()
    assert not errors
    assert len(opened) == 6
    assert schema_version(spec) == LATEST_VERSION


def test_pool_claims_from_many_threads_hand_each_record_out_once(
    open_store: Callable[[], Store],
) -> None:
    seed = open_store()
    for index in range(40):
        seed.insert(make_record(index, project="__pool__"))
    stores = [open_store() for _ in range(8)]  # a connection each, as separate servers
    won: dict[int, list[str]] = {i: [] for i in range(len(stores))}
    start = threading.Barrier(len(stores))

    def claim_all(worker: int) -> None:
        start.wait()
        while (
            record := stores[worker].claim(
                "__pool__", expiring_after=100.0, project=f"t{worker}", name="n"
            )
        ) is not None:
            won[worker].append(record.id)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    claimed = [record_id for ids in won.values() for record_id in ids]
    assert sorted(claimed) == [f"cntr_{i:04d}" for i in range(40)]  # each exactly once
    owners = {r.id: r.project for r in seed.all()}
    assert all(owners[record_id] == f"t{w}" for w, ids in won.items() for record_id in ids)
