"""What only the PostgreSQL store has: it survives a server restart with nothing lost, it is
chosen by `store_url`, and its password never reaches a message."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from jupyter_sandbox._exceptions import (
    BadRequestError,
    InternalServerError,
    StoreUnavailableError,
)
from jupyter_sandbox.backends.file_store import FileRecord, FileStore
from jupyter_sandbox.backends.open_store import open_store
from jupyter_sandbox.backends.postgres_store import PostgresStore
from jupyter_sandbox.backends.sqlite_store import SqliteStore
from jupyter_sandbox.backends.store import describe_url, store_location
from jupyter_sandbox.settings import Settings
from tests.pg_cluster import PostgresCluster
from tests.store_specs import make_record

pytestmark = pytest.mark.postgres


def test_the_store_reconnects_after_a_restart_and_loses_nothing(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url)
    files = FileStore(store)
    try:
        for index in range(10):
            store.insert(make_record(index))
        files.add_file(FileRecord("file-1", "p", "a.txt", "user_data", 3, "0" * 64, 1.0))
        with ThreadsHoldingConnections(store, 4):  # several idle connections, all dropped
            pass
        postgres_cluster.restart()
        assert sorted(r.id for r in store.all()) == [f"cntr_{i:04d}" for i in range(10)]
        assert files.get_file("file-1") is not None
        store.insert(make_record(10))
        assert store.update("cntr_0010", status="expired").status == "expired"
        claimed = store.claim("default", expiring_after=0.0, project="t")
        assert claimed is not None
    finally:
        store.close()


def test_a_stopped_database_is_unavailable_at_once_then_used_again(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """While the server is down, every call fails quickly as StoreUnavailableError (a 503
    with Retry-After over HTTP, not a 500 and not a hang); once it is back, calls work."""
    store = PostgresStore(postgres_url, connect_timeout=5)
    try:
        store.insert(make_record(0))
        postgres_cluster.stop()
        try:
            for call in (lambda: store.get("cntr_0000"), lambda: store.insert(make_record(1))):
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError) as caught:
                    call()
                assert time.monotonic() - started < 5
                assert caught.value.status_code == 503
                assert postgres_cluster.password not in caught.value.message
        finally:
            postgres_cluster.start()
        assert [r.id for r in store.all()] == ["cntr_0000"]
    finally:
        store.close()


def test_writes_racing_a_restart_are_done_or_refused_never_half_done(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Writers keep inserting while the server restarts: each insert either returned (and
    its row is there afterwards) or raised an API error; then writing works again."""
    store = PostgresStore(postgres_url)
    done: list[str] = []
    refused: list[BaseException] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        index = 0
        while not stop.is_set():
            record = replace(make_record(index), id=f"cntr_{worker}_{index}")
            index += 1
            try:
                store.insert(record)
            except InternalServerError as exc:
                refused.append(exc)
                continue
            done.append(record.id)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    try:
        for writer in writers:
            writer.start()
        while len(done) < 30:  # writing is under way
            time.sleep(0.01)
        postgres_cluster.restart()
        written = len(done)
        deadline = time.monotonic() + 30
        while len(done) < written + 30 and time.monotonic() < deadline:  # and resumes
            time.sleep(0.01)
    finally:
        stop.set()
        for writer in writers:
            writer.join(30)
    try:
        assert len(done) >= written + 30, "writes did not resume after the restart"
        stored = {r.id for r in store.all()}
        assert set(done) <= stored  # nothing that returned was lost
        assert all("the store postgresql://" in str(exc) for exc in refused)
    finally:
        store.close()


class ThreadsHoldingConnections:
    """Run `count` reads at once, so the store keeps that many idle connections after."""

    def __init__(self, store: PostgresStore, count: int) -> None:
        self._store = store
        self._count = count

    def __enter__(self) -> None:
        barrier = threading.Barrier(self._count)

        def read() -> None:
            with self._store.reading() as db:
                barrier.wait(10)
                db.execute("SELECT 1")

        threads = [threading.Thread(target=read) for _ in range(self._count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_password_never_reaches_a_message(postgres_cluster: PostgresCluster) -> None:
    good = postgres_cluster.url()
    wrong = good.replace(postgres_cluster.password, "not-the-password-123")
    with pytest.raises(InternalServerError) as caught:
        PostgresStore(wrong)
    assert "not-the-password-123" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)  # but it says which server
    store = PostgresStore(good)
    try:
        assert postgres_cluster.password not in store.location
        assert store.location.startswith("postgresql://jsbx@127.0.0.1:")
    finally:
        store.close()


def test_store_url_chooses_postgres_and_the_default_is_sqlite(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_STORE_URL", postgres_url)
    shared = open_store(Settings(home=tmp_path))
    try:
        assert isinstance(shared, PostgresStore)
        assert shared.is_shared
    finally:
        shared.close()
    monkeypatch.delenv("JUPYTER_SANDBOX_STORE_URL")
    local = open_store(Settings(home=tmp_path))
    try:
        assert isinstance(local, SqliteStore)
        assert not local.is_shared
        assert local.path == tmp_path / "store.sqlite3"
    finally:
        local.close()


def test_a_store_url_that_is_not_postgres_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, store_url="mysql://u:secret-pw@h/db")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError) as caught:
        open_store(settings)
    assert caught.value.param == "store_url"
    assert "secret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db.example:6543/fleet", "postgresql://u@db.example:6543/fleet"),
        ("postgresql://db/fleet?sslmode=verify-full", "postgresql://db:5432/fleet"),
        ("postgres://:pw@/fleet", "postgresql://localhost:5432/fleet"),
        ("postgresql://u:pw@h:notaport/x", "postgresql://(unparsable url)"),
    ],
)
def test_a_store_is_named_without_its_password(url: str, shown: str) -> None:
    assert describe_url(url) == shown
    settings = Settings(store_url=url)  # type: ignore[arg-type]
    assert store_location(settings) == shown


def test_servers_sharing_a_database_label_their_objects_alike(tmp_path: Path) -> None:
    """Reconcile judges a sandbox by the objects labelled with the store's id: servers on
    other machines (other state folders, maybe other passwords) must agree on it."""
    url = "postgresql://jsbx:{}@db.internal:5432/fleet"
    one = Settings(home=tmp_path / "one", store_url=url.format("first"))
    two = Settings(home=tmp_path / "two", store_url=url.format("second"))
    assert one.store_id == two.store_id
    assert one.store_id != Settings(home=tmp_path / "one").store_id
    assert one.store_id != Settings(home=tmp_path / "one", store_url=url + "2").store_id


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pa%zzss-secret@127.0.0.1:1/db",  # libpq quotes the bad token
        "postgresql://u:pw-secret@[::1:1/db",  # ... or the whole URL
        "postgresql://u@127.0.0.1:1/db?password=pw-secret&port=zz",
        "postgresql://u@127.0.0.1:1/db?sslpassword=pw%zz-secret",
        "postgresql://u:pw%2Dsecret@127.0.0.1:1/db?bogus=1",
        "postgresql://u:pw-secret@127.0.0.1:notaport/db",
    ],
)
def test_a_malformed_store_url_never_echoes_its_password(url: str) -> None:
    """libpq's parse errors quote what they cannot parse: the message keeps none of it."""
    with pytest.raises(InternalServerError) as caught:
        PostgresStore(url, connect_timeout=1)
    message = str(caught.value)
    assert "secret" not in message, message
    assert "cannot connect to the store" in message
