"""Blobs kept in the store's database, so that every API server sharing a PostgreSQL store
reads the files, skills and snapshot bundles any of them stored (issue 15).

A blob is a head row in `blobs` (namespace, sha256 -> storage id, size, chunk size) and its
bytes as `bytea` rows of `blob_chunks` (storage id, seq), `chunk_size` bytes each but the last
(migration 5). Chunked rows rather than large objects: they are ordinary rows, so deleting a
blob is a `DELETE` in the same transaction as its head (large objects need `lo_unlink` and
leak when it is forgotten), they need no extra privileges or `vacuumlo`, `pg_dump` and
replication treat them like any table, and a reader needs no transaction held open across
the whole stream (a large object's descriptor lives only inside one).

An upload is one transaction: its chunks go in as they arrive (never more than one chunk in
memory), the head row last; a failure, a size cap or a killed process rolls every chunk back,
so an upload leaves no orphan. Identical content stored twice keeps the first copy. A reader
fetches one chunk per short read-only transaction, so a slow download holds no connection.
`sweep` (run by reconcile and `gc`) deletes heads no record refers to any more (after a grace
that covers an upload between storing its bytes and writing its record) and any chunk without
a head.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, cast, runtime_checkable

from jupyter_sandbox.backends.blobs import CHUNK, Blobs, BlobStore, check_digest, missing, too_large
from jupyter_sandbox.backends.store import Cursor, Store

if TYPE_CHECKING:
    from jupyter_sandbox.settings import Settings

__all__ = ["SWEEP_GRACE", "DatabaseBlobStore", "Namespace", "open_blobs"]

Namespace = Literal["files", "snapshots"]
"""Files and skill versions share one namespace (and so their blobs); snapshot bundles have
theirs, as they have their own folder on disk."""

REFERENCES: dict[Namespace, tuple[str, ...]] = {
    "files": ("files", "skill_versions"),
    "snapshots": ("snapshots",),
}
"""The tables whose `sha256` column holds a namespace's blobs."""

FOLDERS: dict[Namespace, str] = {"files": "blobs", "snapshots": "snapshots"}
"""A namespace's folder in the state folder, when its blobs are files there."""

SWEEP_GRACE = 600.0
"""Seconds a blob stored (or stored again) stays even if no record holds it yet."""


@runtime_checkable
class BinaryResults(Protocol):
    """A connection that can return `bytea` in the binary format (PostgreSQL's)."""

    def execute_binary(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        """Run one statement; its results in the binary format."""


def open_blobs(settings: Settings, store: Store, namespace: Namespace) -> Blobs:
    """Where `namespace`'s blobs live: in a shared store's database (so every server sees
    them), else as files in the state folder."""
    folder = settings.home / FOLDERS[namespace]
    if store.is_shared:
        return DatabaseBlobStore(store, namespace, legacy=folder)
    return BlobStore(folder)


class DatabaseBlobStore:
    """Blobs of one namespace in the `blobs` and `blob_chunks` tables of `store`.

    Args:
        legacy: a folder blobs were kept in before (a state folder of an older version): a
            blob missing from the database but found there is copied in when first read.
    """

    def __init__(
        self,
        store: Store,
        namespace: Namespace,
        *,
        chunk_size: int = CHUNK,
        legacy: Path | None = None,
    ) -> None:
        if namespace not in REFERENCES:
            raise ValueError(f"unknown blob namespace {namespace!r}")
        self._store = store
        self.namespace: Namespace = namespace
        self._chunk_size = chunk_size
        self._legacy = legacy

    def put(self, source: IO[bytes], *, limit: int, size: int | None = None) -> tuple[str, int]:
        """Stream `source` in, one chunk at a time, in one transaction; return (sha256, bytes).

        Raises:
            RequestTooLargeError: the content is longer than `limit` bytes (nothing is kept).
        """
        if size is not None and size > limit:
            raise too_large(limit)
        storage_id = secrets.token_hex(16)
        digest = hashlib.sha256()
        total = 0
        with self._store.transaction() as db:
            for seq, chunk in enumerate(_chunks(source, self._chunk_size)):
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)  # the transaction rolls every chunk back
                digest.update(chunk)
                db.execute(
                    "INSERT INTO blob_chunks (storage_id, seq, data) VALUES (?, ?, ?)",
                    (storage_id, seq, chunk),
                )
            name = digest.hexdigest()
            # Stored again: keep the first copy, and restart its grace (a record follows).
            kept = db.execute(
                "INSERT INTO blobs (namespace, sha256, storage_id, bytes, chunk_size, stored_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, sha256) DO UPDATE "
                "SET stored_at = excluded.stored_at RETURNING storage_id",
                (self.namespace, name, storage_id, total, self._chunk_size, time.time()),
            ).fetchone()[0]
            if kept != storage_id:
                db.execute("DELETE FROM blob_chunks WHERE storage_id = ?", (storage_id,))
        return name, total

    def open(self, digest: str) -> BinaryIO:
        """The blob, seekable, read a chunk at a time.

        Raises:
            NotFoundError: no such blob (here, or in the legacy folder).
        """
        check_digest(digest)
        with self._store.reading() as db:
            row = db.execute(
                "SELECT storage_id, bytes, chunk_size FROM blobs "
                "WHERE namespace = ? AND sha256 = ?",
                (self.namespace, digest),
            ).fetchone()
        if row is None:
            if not self._import_legacy(digest):
                raise missing(digest)
            return self.open(digest)
        reader = _ChunkReader(self._store, digest, row[0], int(row[1]), int(row[2]))
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=64 << 10))

    def delete(self, digest: str) -> None:
        """Remove a blob and its chunks; idempotent."""
        check_digest(digest)
        with self._store.transaction() as db:
            row = db.execute(
                "DELETE FROM blobs WHERE namespace = ? AND sha256 = ? RETURNING storage_id",
                (self.namespace, digest),
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM blob_chunks WHERE storage_id = ?", (row[0],))

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete this namespace's blobs no record holds (stored before the grace) and every
        chunk without a head; return the digests deleted."""
        cutoff = (time.time() if now is None else now) - SWEEP_GRACE
        unreferenced = " ".join(
            f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE {table}.sha256 = blobs.sha256)"  # noqa: S608
            for table in REFERENCES[self.namespace]
        )
        with self._store.transaction() as db:
            rows = db.execute(
                f"DELETE FROM blobs WHERE namespace = ? AND stored_at < ? {unreferenced} "  # noqa: S608
                "RETURNING sha256",
                (self.namespace, cutoff),
            ).fetchall()
            # An upload in progress is not committed, so its chunks are invisible here.
            db.execute(
                "DELETE FROM blob_chunks WHERE NOT EXISTS "
                "(SELECT 1 FROM blobs WHERE blobs.storage_id = blob_chunks.storage_id)"
            )
        return sorted(row[0] for row in rows)

    def _import_legacy(self, digest: str) -> bool:
        """Copy a blob an older version kept in the state folder into the database."""
        if self._legacy is None:
            return False
        path = self._legacy / digest[:2] / digest
        try:
            source = path.open("rb")
        except FileNotFoundError:
            return False
        with source:
            stored, _ = self.put(source, limit=2**62)
        return stored == digest


def _chunks(source: IO[bytes], size: int) -> Iterator[bytes]:
    """`source` in pieces of exactly `size` bytes (the last may be shorter, none empty)."""
    buffer = bytearray()
    while piece := source.read(size - len(buffer)):
        buffer += piece
        if len(buffer) == size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


class _ChunkReader(io.RawIOBase):
    """A blob's bytes, fetched a chunk at a time (the current chunk is kept for small reads)."""

    def __init__(
        self, store: Store, digest: str, storage_id: str, size: int, chunk_size: int
    ) -> None:
        super().__init__()
        self._store = store
        self._digest = digest
        self._storage_id = storage_id
        self._size = size
        self._chunk_size = chunk_size
        self._position = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._position >= self._size:
            return 0
        index, offset = divmod(self._position, self._chunk_size)
        chunk = self._chunk(index)
        count = min(len(buffer), len(chunk) - offset)
        memoryview(buffer)[:count] = chunk[offset : offset + count]
        self._position += count
        return count

    def _chunk(self, index: int) -> bytes:
        if self._cached is None or self._cached[0] != index:
            with self._store.reading() as db:
                run = db.execute_binary if isinstance(db, BinaryResults) else db.execute
                row = run(
                    "SELECT data FROM blob_chunks WHERE storage_id = ? AND seq = ?",
                    (self._storage_id, index),
                ).fetchone()
            if row is None:
                raise missing(self._digest)  # deleted while being read
            self._cached = (index, bytes(row[0]))
        return self._cached[1]
