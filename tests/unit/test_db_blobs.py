"""Blobs kept in the store's database (what a shared PostgreSQL store uses, issue 15): what one
server stores another reads back, byte for byte and seekable; a large blob streams in and out
a chunk at a time; a cap, a failure or a duplicate leaves nothing extra; delete and sweep leave
no orphan head or chunk. Each test runs on SQLite and PostgreSQL (the SQL is the same)."""

from __future__ import annotations

import hashlib
import io
import os
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_sandbox._exceptions import NotFoundError, RequestTooLargeError
from jupyter_sandbox.backends.blobs import BlobStore
from jupyter_sandbox.backends.db_blobs import SWEEP_GRACE, DatabaseBlobStore, open_blobs
from jupyter_sandbox.backends.file_store import FileRecord, FileStore
from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.settings import Settings

CHUNK = 1000
OpenStore = Callable[[], Store]


def rows(store: Store) -> tuple[int, int, int]:
    """(heads, chunks, the longest chunk)."""
    with store.reading() as db:
        heads = db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
        chunks, longest = db.execute(
            "SELECT COUNT(*), MAX(LENGTH(data)) FROM blob_chunks"
        ).fetchone()
    return int(heads), int(chunks), int(longest or 0)


class Zeros(io.RawIOBase):
    """`size` zero bytes, produced as read (never held whole), in short reads."""

    def __init__(self, size: int, piece: int = 300_000) -> None:
        self.left, self.piece = size, piece

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left, self.piece)
        memoryview(buffer)[:count] = bytes(count)
        self.left -= count
        return count


def test_what_one_server_stores_another_reads(open_store: OpenStore) -> None:
    data = os.urandom(2 * CHUNK + 345)
    one = DatabaseBlobStore(open_store(), "files", chunk_size=CHUNK)
    two = DatabaseBlobStore(open_store(), "files", chunk_size=CHUNK)
    digest, size = one.put(io.BytesIO(data), limit=10**6)
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    with two.open(digest) as blob:
        assert blob.read() == data
        blob.seek(CHUNK - 5)  # across a chunk boundary, as a zip reader seeks
        assert blob.read(10) == data[CHUNK - 5 : CHUNK + 5]
        assert blob.seek(-3, io.SEEK_END) == len(data) - 3
        assert blob.read() == data[-3:]
    assert rows(one._store) == (1, 3, CHUNK)


def test_a_stored_zip_is_read_in_place(open_store: OpenStore) -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for index in range(20):
            archive.writestr(f"skill/file{index}.txt", os.urandom(200).hex())
    blobs = DatabaseBlobStore(open_store(), "files", chunk_size=CHUNK)
    digest, _ = blobs.put(io.BytesIO(packed.getvalue()), limit=10**6)
    with blobs.open(digest) as blob, zipfile.ZipFile(blob) as archive:
        assert len(archive.namelist()) == 20
        assert archive.testzip() is None


def test_an_empty_blob(open_store: OpenStore) -> None:
    blobs = DatabaseBlobStore(open_store(), "files")
    digest, size = blobs.put(io.BytesIO(b""), limit=10)
    assert (digest, size) == (hashlib.sha256(b"").hexdigest(), 0)
    assert blobs.open(digest).read() == b""


@pytest.mark.parametrize("announced", [None, 5000])
def test_over_the_cap_nothing_is_kept(open_store: OpenStore, announced: int | None) -> None:
    store = open_store()
    blobs = DatabaseBlobStore(store, "files", chunk_size=CHUNK)
    with pytest.raises(RequestTooLargeError, match="size limit of 4000 bytes") as caught:
        blobs.put(io.BytesIO(os.urandom(5000)), limit=4000, size=announced)
    assert caught.value.param == "file"
    assert rows(store) == (0, 0, 0)


def test_identical_content_is_stored_once(open_store: OpenStore) -> None:
    store = open_store()
    blobs = DatabaseBlobStore(store, "files", chunk_size=CHUNK)
    data = os.urandom(3 * CHUNK)
    first = blobs.put(io.BytesIO(data), limit=10**6)
    assert blobs.put(io.BytesIO(data), limit=10**6) == first
    assert rows(store) == (1, 3, CHUNK)
    snapshots = DatabaseBlobStore(store, "snapshots", chunk_size=CHUNK)
    snapshots.put(io.BytesIO(data), limit=10**6)  # another namespace keeps its own
    assert rows(store) == (2, 6, CHUNK)
    blobs.delete(first[0])
    assert snapshots.open(first[0]).read() == data


def test_delete_removes_head_and_chunks(open_store: OpenStore) -> None:
    store = open_store()
    blobs = DatabaseBlobStore(store, "files", chunk_size=CHUNK)
    digest, _ = blobs.put(io.BytesIO(os.urandom(2 * CHUNK)), limit=10**6)
    reader = blobs.open(digest)
    blobs.delete(digest)
    blobs.delete(digest)  # idempotent
    assert rows(store) == (0, 0, 0)
    with pytest.raises(NotFoundError, match=r"content of this object is missing"):
        blobs.open(digest)
    with pytest.raises(NotFoundError):  # deleted while being read
        reader.read()


def test_a_large_blob_streams_in_and_out_a_chunk_at_a_time(open_store: OpenStore) -> None:
    blobs = DatabaseBlobStore(open_store(), "files")  # 1 MiB chunks
    size = 24 << 20
    tracemalloc.start()
    try:
        digest, stored = blobs.put(Zeros(size), limit=size)  # type: ignore[arg-type]
        total, hashed = 0, hashlib.sha256()
        with blobs.open(digest) as blob:
            while piece := blob.read(1 << 20):
                total += len(piece)
                hashed.update(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (stored, total, hashed.hexdigest()) == (size, size, digest)
    assert peak < 8 << 20, f"{peak} bytes held for a {size}-byte blob"


def test_sweep_removes_unheld_blobs_and_headless_chunks(open_store: OpenStore) -> None:
    store = open_store()
    blobs = DatabaseBlobStore(store, "files", chunk_size=CHUNK)
    held, _ = blobs.put(io.BytesIO(b"held by a file"), limit=100)
    unheld, _ = blobs.put(io.BytesIO(b"nobody's"), limit=100)
    FileStore(store).add_file(FileRecord("file-1", "p", "a.txt", "user_data", 14, held, 1.0))
    with store.transaction() as db:  # as a bug or a hand edit would leave
        db.execute("INSERT INTO blob_chunks VALUES ('lost', 0, ?)", (b"x",))
    assert blobs.sweep() == []  # within the grace an upload may still be writing its record
    assert rows(store)[1] == 2
    assert blobs.sweep(time.time() + SWEEP_GRACE + 1) == [unheld]
    assert rows(store)[:2] == (1, 1)
    assert blobs.open(held).read() == b"held by a file"
    assert DatabaseBlobStore(store, "snapshots").sweep(time.time() + SWEEP_GRACE + 1) == []


def test_a_blob_an_older_version_kept_on_disk_is_copied_in(
    open_store: OpenStore, tmp_path: Path
) -> None:
    digest, _ = BlobStore(tmp_path / "blobs").put(io.BytesIO(b"from before"), limit=100)
    store = open_store()
    blobs = DatabaseBlobStore(store, "files", legacy=tmp_path / "blobs")
    assert blobs.open(digest).read() == b"from before"
    assert rows(store)[0] == 1
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(NotFoundError):
        blobs.open(missing)


def test_a_shared_store_keeps_blobs_in_the_database(
    open_store: OpenStore, spec: str, tmp_path: Path
) -> None:
    store = open_store()
    blobs = open_blobs(Settings(home=tmp_path), store, "snapshots")
    if spec.startswith("postgresql://"):
        assert isinstance(blobs, DatabaseBlobStore)
        assert blobs.namespace == "snapshots"
    else:
        assert isinstance(blobs, BlobStore)
        assert blobs.root == tmp_path / "snapshots"
