"""The container queries of the store, written once for SQLite and PostgreSQL.

A subclass supplies connections and transactions (`transaction`, `reading`) and the row-lock
clauses: PostgreSQL runs concurrent transactions, so a read-then-write takes the row with
`FOR UPDATE`, and a pool claim skips rows another transaction holds (`FOR UPDATE SKIP LOCKED`);
SQLite serialises writers (`BEGIN IMMEDIATE`) and needs neither.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, ClassVar

from jupyter_sandbox._exceptions import NotFoundError
from jupyter_sandbox.backends.store import Connection, ContainerRecord
from jupyter_sandbox.types.container import ContainerStatus

__all__ = ["SqlStore"]


class SqlStore:
    """The `Store` queries over a `Connection`; subclasses own the connection."""

    for_update: ClassVar[str] = ""
    """Appended to a SELECT whose rows the transaction then changes."""
    skip_locked: ClassVar[str] = ""
    """Appended to a SELECT that takes any one free row (a pool claim)."""

    @property
    def location(self) -> str:
        """Where the store is, for messages."""
        raise NotImplementedError

    @property
    def is_shared(self) -> bool:
        """Whether servers on other machines may share this store."""
        return False

    def close(self) -> None:
        """Release connections."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction."""
        raise NotImplementedError

    def reading(self) -> AbstractContextManager[Connection]:
        """A consistent read."""
        raise NotImplementedError

    def insert(self, record: ContainerRecord) -> ContainerRecord:
        """Add a new record."""
        row = _to_row(record)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as db:
            db.execute(f"INSERT INTO containers ({columns}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        return record

    def get(self, container_id: str) -> ContainerRecord | None:
        """The record, or None."""
        with self.reading() as db:
            row = db.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
        return _from_row(row) if row else None

    def update(self, container_id: str, **changes: Any) -> ContainerRecord:
        """Change some fields and return the new record."""
        with self.transaction() as db:
            row = db.execute(
                f"SELECT * FROM containers WHERE id = ?{self.for_update}",  # noqa: S608
                (container_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"No container {container_id!r} in the store")
            return _apply(db, row, changes)

    def claim(self, pool: str, *, expiring_after: float, **changes: Any) -> ContainerRecord | None:
        """Hand the oldest ready record of project `pool` that lives past `expiring_after` to
        one caller, with `changes` applied; None if there is none. Atomic across processes:
        each record is handed out once."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT * FROM containers WHERE project = ? AND status = 'ready' AND deleted = 0 "  # noqa: S608
                f"AND expires_at > ? ORDER BY created_at, id LIMIT 1{self.skip_locked}",
                (pool, expiring_after),
            ).fetchone()
            if row is None:
                return None
            return _apply(db, row, changes)

    def take(self, container_id: str, project: str, **changes: Any) -> ContainerRecord | None:
        """Apply `changes` only if the record is still live in `project`; None otherwise.

        How a pooled sandbox is retired without racing a claim from another process."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT * FROM containers WHERE id = ? AND project = ? AND deleted = 0 "  # noqa: S608
                f"AND status IN ('initializing', 'ready'){self.for_update}",
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
        with self.transaction() as db:
            row = db.execute(
                f"SELECT * FROM containers WHERE id = ?{self.for_update}",  # noqa: S608
                (container_id,),
            ).fetchone()
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
        with self.transaction() as db:
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
        with self.reading() as db:
            if after is not None:
                # Deleted records are kept, so a cursor outlives its sandbox; another
                # project's id is unknown here, as everywhere.
                cursor = db.execute(
                    "SELECT created_at, id FROM containers WHERE id = ? AND project = ?",
                    (after, project),
                ).fetchone()
                if cursor is None:
                    raise LookupError(after)
                compare = "<" if order == "desc" else ">"
                clauses.append(f"(created_at, id) {compare} (?, ?)")
                args.extend([cursor["created_at"], cursor["id"]])
            rows = db.execute(
                f"SELECT * FROM containers WHERE {' AND '.join(clauses)} "  # noqa: S608
                f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        records = [_from_row(r) for r in rows]
        return records[:limit], len(records) > limit

    def all(self, *, statuses: tuple[str, ...] | None = None) -> list[ContainerRecord]:
        """Every record (optionally only some statuses), deleted ones included."""
        with self.reading() as db:
            if statuses:
                marks = ", ".join("?" for _ in statuses)
                rows = db.execute(
                    f"SELECT * FROM containers WHERE status IN ({marks})",  # noqa: S608
                    statuses,
                ).fetchall()
            else:
                rows = db.execute("SELECT * FROM containers").fetchall()
        return [_from_row(r) for r in rows]


def _apply(db: Connection, row: Any, changes: dict[str, Any]) -> ContainerRecord:
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


def _from_row(row: Any) -> ContainerRecord:
    data = dict(row)
    data["network_policy"] = json.loads(data["network_policy"])
    data["extra"] = json.loads(data["extra"])
    data["deleted"] = bool(data["deleted"])
    return ContainerRecord(**data)
