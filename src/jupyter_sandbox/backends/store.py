"""SQLite store (WAL): the records of sandboxes, safe for several processes at once."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import InternalServerError, NotFoundError
from jupyter_sandbox.types.container import ContainerStatus

LIVE_STATUSES: tuple[ContainerStatus, ...] = ("initializing", "ready")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_active_at REAL NOT NULL,
    memory_limit TEXT NOT NULL,
    network_policy TEXT NOT NULL,
    idle_minutes INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    image TEXT NOT NULL,
    kernel_key TEXT NOT NULL,
    socket_dir TEXT NOT NULL,
    docker_id TEXT,
    owner_pid INTEGER NOT NULL,
    owner_host TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS containers_by_project ON containers (project, deleted, created_at);
CREATE INDEX IF NOT EXISTS containers_by_status ON containers (status);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS files_by_project ON files (project, created_at);
CREATE TABLE IF NOT EXISTS container_files (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (container_id, path)
);
CREATE INDEX IF NOT EXISTS container_files_by_time ON container_files (container_id, created_at);
CREATE TABLE IF NOT EXISTS skills (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    default_version TEXT NOT NULL,
    latest_version TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS skills_by_project ON skills (project, created_at);
CREATE TABLE IF NOT EXISTS skill_versions (
    skill_id TEXT NOT NULL,
    version TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (skill_id, version)
);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    created_at REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    messages TEXT NOT NULL,
    containers TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS responses_by_project ON responses (project, created_at);
CREATE TABLE IF NOT EXISTS page_cursors (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    scope TEXT NOT NULL,
    sort_key REAL NOT NULL,
    deleted_at REAL NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS page_cursors_by_age ON page_cursors (deleted_at);
"""


@dataclass(frozen=True)
class ContainerRecord:
    """Everything the store keeps about one sandbox (more than the API shows)."""

    id: str
    project: str
    name: str
    status: ContainerStatus
    created_at: float
    last_active_at: float
    memory_limit: str
    network_policy: dict[str, Any]
    idle_minutes: int
    expires_at: float
    image: str
    kernel_key: str
    socket_dir: str
    owner_pid: int
    owner_host: str
    docker_id: str | None = None
    deleted: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        """Initializing or ready, and not deleted."""
        return self.status in LIVE_STATUSES and not self.deleted

    def idle_deadline(self) -> float:
        """When idle expiry ends this sandbox."""
        return self.last_active_at + self.idle_minutes * 60


class Store:
    """Thread-safe access to the SQLite file; each call is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            os.chmod(path, 0o600)  # it holds the kernels' HMAC keys
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)  # idempotent, commits by itself
        except (sqlite3.Error, OSError) as exc:
            raise InternalServerError(f"cannot open the store {path}: {exc}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This connection, for one thread; a database failure leaves as an API error."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise InternalServerError(f"the store {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._locked():
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, for the record tables other modules own (files, skills)."""
        with self._transaction() as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for a read."""
        with self._locked():
            yield self._db

    def insert(self, record: ContainerRecord) -> ContainerRecord:
        """Add a new record."""
        row = _to_row(record)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._transaction() as db:
            db.execute(f"INSERT INTO containers ({columns}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        return record

    def get(self, container_id: str) -> ContainerRecord | None:
        """The record, or None."""
        with self._locked():
            row = self._db.execute(
                "SELECT * FROM containers WHERE id = ?", (container_id,)
            ).fetchone()
        return _from_row(row) if row else None

    def update(self, container_id: str, **changes: Any) -> ContainerRecord:
        """Change some fields and return the new record."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"No container {container_id!r} in the store")
            return _apply(db, row, changes)

    def claim(self, pool: str, *, expiring_after: float, **changes: Any) -> ContainerRecord | None:
        """Hand the oldest ready record of project `pool` that lives past `expiring_after` to
        one caller, with `changes` applied; None if there is none. Atomic across processes:
        each record is handed out once."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM containers WHERE project = ? AND status = 'ready' AND deleted = 0 "
                "AND expires_at > ? ORDER BY created_at, id LIMIT 1",
                (pool, expiring_after),
            ).fetchone()
            if row is None:
                return None
            return _apply(db, row, changes)

    def take(self, container_id: str, project: str, **changes: Any) -> ContainerRecord | None:
        """Apply `changes` only if the record is still live in `project`; None otherwise.

        How a pooled sandbox is retired without racing a claim from another process."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM containers WHERE id = ? AND project = ? AND deleted = 0 "
                "AND status IN ('initializing', 'ready')",
                (container_id, project),
            ).fetchone()
            if row is None:
                return None
            return _apply(db, row, changes)

    def end(
        self,
        container_id: str,
        *,
        status: ContainerStatus,
        deleted: bool = False,
        error: str | None = None,
        project: str | None = None,
    ) -> ContainerRecord | None:
        """Move a record to an end status, once: atomic across threads and processes.

        Returns the record as it was before, or None when there is nothing to do here: no
        such record (in `project`, if given), already deleted, or already ended and this is
        no delete. Only the caller that saw it live tears the sandbox down; `extra.ended_at`
        and `extra.ended_by` (host, pid) let reconcile leave a teardown in progress alone.
        """
        with self._transaction() as db:
            row = db.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
            if row is None:
                return None
            before = _from_row(row)
            if (project is not None and before.project != project) or before.deleted:
                return None
            if not before.is_live and not deleted:
                return None
            changes: dict[str, Any] = {
                "status": status if before.is_live else before.status,
                "deleted": deleted,
            }
            if before.is_live:
                changes["extra"] = {
                    **before.extra,
                    "ended_at": time.time(),
                    "ended_by": [socket.gethostname(), os.getpid()],
                }
                if error is not None:
                    changes["error"] = error[:2000]
            _apply(db, row, changes)
            return before

    def touch(self, container_id: str, now: float | None = None) -> None:
        """Move `last_active_at` to now."""
        with self._transaction() as db:
            db.execute(
                "UPDATE containers SET last_active_at = ? WHERE id = ?",
                (now if now is not None else time.time(), container_id),
            )

    def page(
        self,
        *,
        project: str,
        limit: int,
        order: str,
        after: str | None,
        name: str | None = None,
    ) -> tuple[list[ContainerRecord], bool]:
        """One page of a project's visible records, by creation time, and whether more follow."""
        clauses = ["project = ?", "deleted = 0"]
        args: list[Any] = [project]
        if name is not None:
            clauses.append("name = ?")
            args.append(name)
        direction = "DESC" if order == "desc" else "ASC"
        with self._locked():
            if after is not None:
                # Deleted records are kept, so a cursor outlives its sandbox; another
                # project's id is unknown here, as everywhere.
                cursor = self._db.execute(
                    "SELECT created_at, id FROM containers WHERE id = ? AND project = ?",
                    (after, project),
                ).fetchone()
                if cursor is None:
                    raise LookupError(after)
                compare = "<" if order == "desc" else ">"
                clauses.append(f"(created_at, id) {compare} (?, ?)")
                args.extend([cursor["created_at"], cursor["id"]])
            rows = self._db.execute(
                f"SELECT * FROM containers WHERE {' AND '.join(clauses)} "  # noqa: S608
                f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        records = [_from_row(r) for r in rows]
        return records[:limit], len(records) > limit

    def all(self, *, statuses: tuple[str, ...] | None = None) -> list[ContainerRecord]:
        """Every record (optionally only some statuses), deleted ones included."""
        with self._locked():
            if statuses:
                marks = ", ".join("?" for _ in statuses)
                rows = self._db.execute(
                    f"SELECT * FROM containers WHERE status IN ({marks})",  # noqa: S608
                    statuses,
                ).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM containers").fetchall()
        return [_from_row(r) for r in rows]


def _apply(db: sqlite3.Connection, row: sqlite3.Row, changes: dict[str, Any]) -> ContainerRecord:
    """Write `changes` to the record in `row` (inside the caller's transaction)."""
    record = replace(_from_row(row), **changes)
    new_row = _to_row(record)
    assignments = ", ".join(f"{k} = ?" for k in changes)
    db.execute(
        f"UPDATE containers SET {assignments} WHERE id = ?",  # noqa: S608
        (*(new_row[k] for k in changes), record.id),
    )
    return record


def _to_row(record: ContainerRecord) -> dict[str, Any]:
    row = dict(record.__dict__)
    row["network_policy"] = json.dumps(record.network_policy)
    row["extra"] = json.dumps(record.extra)
    row["deleted"] = int(record.deleted)
    return row


def _from_row(row: sqlite3.Row) -> ContainerRecord:
    data = dict(row)
    data["network_policy"] = json.loads(data["network_policy"])
    data["extra"] = json.loads(data["extra"])
    data["deleted"] = bool(data["deleted"])
    return ContainerRecord(**data)
