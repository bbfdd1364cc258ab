"""Snapshot records (the store's `snapshots` table) and their bundles (blobs).

A bundle is sandbox-made bytes: it is stored and copied, never parsed or unpickled here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jupyter_sandbox.backends.store import Store


@dataclass(frozen=True)
class SnapshotRecord:
    """One stored snapshot."""

    id: str
    project: str
    container_id: str
    name: str | None
    created_at: float
    expires_at: float
    bytes: int
    sha256: str
    report: dict[str, Any]


class SnapshotStore:
    """Snapshot records, in the shared store's database."""

    def __init__(self, store: Store) -> None:
        self._store = store  # its table is migration 4 (backends/migrations.py)

    def insert(self, record: SnapshotRecord) -> SnapshotRecord:
        """Add a record."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO snapshots (id, project, container_id, name, created_at, expires_at,"
                " bytes, sha256, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.project,
                    record.container_id,
                    record.name,
                    record.created_at,
                    record.expires_at,
                    record.bytes,
                    record.sha256,
                    json.dumps(record.report),
                ),
            )
        return record

    def get(self, snapshot_id: str) -> SnapshotRecord | None:
        """The record, or None."""
        with self._store.reading() as db:
            row = db.execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        return _from_row(row) if row else None

    def for_container(self, container_id: str, project: str) -> list[SnapshotRecord]:
        """A sandbox's snapshots, oldest first."""
        with self._store.reading() as db:
            rows = db.execute(
                "SELECT * FROM snapshots WHERE container_id = ? AND project = ? "
                "ORDER BY created_at, id",
                (container_id, project),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def delete(self, snapshot_id: str) -> SnapshotRecord | None:
        """Remove a record; return it, or None if it was already gone (one caller wins)."""
        with self._store.transaction() as db:
            row = db.execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
        return _from_row(row)

    def expired(self, now: float) -> list[SnapshotRecord]:
        """Records whose expiry has passed."""
        with self._store.reading() as db:
            rows = db.execute("SELECT * FROM snapshots WHERE expires_at <= ?", (now,)).fetchall()
        return [_from_row(r) for r in rows]

    def uses_blob(self, sha256: str) -> bool:
        """Whether any record still points at this bundle (identical bundles are stored once)."""
        with self._store.reading() as db:
            row = db.execute("SELECT 1 FROM snapshots WHERE sha256 = ? LIMIT 1", (sha256,))
            return row.fetchone() is not None


def _from_row(row: Any) -> SnapshotRecord:
    data = dict(row)
    data["report"] = json.loads(data["report"])
    return SnapshotRecord(**data)
