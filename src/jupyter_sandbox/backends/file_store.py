"""Records of files, container files and skills, in the same store as the sandboxes (SQL that
SQLite and PostgreSQL both accept)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jupyter_sandbox.backends.store import Connection, Store


@dataclass(frozen=True)
class FileRecord:
    """An uploaded file; its bytes are the blob `sha256`."""

    id: str
    project: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: float
    expires_at: float | None = None


@dataclass(frozen=True)
class ContainerFileRecord:
    """A file known to be in a sandbox at `path`."""

    id: str
    container_id: str
    path: str
    bytes: int
    source: str
    created_at: float


@dataclass(frozen=True)
class SkillRecord:
    """A skill; its versions hold the files."""

    id: str
    project: str
    name: str
    description: str
    default_version: str
    latest_version: str
    created_at: float


@dataclass(frozen=True)
class SkillVersionRecord:
    """One version of a skill: a zip blob `sha256`."""

    skill_id: str
    version: str
    id: str
    name: str
    description: str
    sha256: str
    bytes: int
    created_at: float


def _insert(db: Connection, table: str, record: Any, *, replace_on: tuple[str, ...] = ()) -> None:
    """Insert a record; with `replace_on` (its key columns), overwrite the row of that key."""
    row = dict(record.__dict__)
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"  # noqa: S608
    if replace_on:
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in replace_on)
        sql += f" ON CONFLICT ({', '.join(replace_on)}) DO UPDATE SET {updates}"
    db.execute(sql, tuple(row.values()))


CURSOR_SECONDS = 7 * 24 * 3600
"""How long the id of a deleted file, container file, skill or version stays a valid cursor."""


def _keep_cursors(db: Connection, kind: str, rows: Iterable[tuple[str, str, float]]) -> None:
    """Remember deleted rows' sort keys (id, scope, key), so a page `after` them still works."""
    now = time.time()
    db.execute("DELETE FROM page_cursors WHERE deleted_at < ?", (now - CURSOR_SECONDS,))
    db.executemany(
        "INSERT INTO page_cursors (kind, id, scope, sort_key, deleted_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, id) DO UPDATE SET scope = excluded.scope, "
        "sort_key = excluded.sort_key, deleted_at = excluded.deleted_at",
        [(kind, row_id, scope, key, now) for row_id, scope, key in rows],
    )


class FileStore:
    """Typed queries over the files, container_files, skills and skill_versions tables."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _page(
        self,
        table: str,
        where: dict[str, Any],
        *,
        scope: str,
        limit: int,
        order: str,
        after: str | None,
    ) -> tuple[list[Any], bool]:
        """One page by (created_at, id); `after` must be a row of this `scope` (the first
        column of `where`), present or deleted (its sort key outlives it in `page_cursors`)."""
        clauses = [f"{column} = ?" for column in where]
        args: list[Any] = list(where.values())
        direction = "DESC" if order == "desc" else "ASC"
        scope_column, scope_value = next(iter(where.items()))
        with self._store.reading() as db:
            if after is not None:
                cursor = db.execute(
                    f"SELECT created_at, id FROM {table} WHERE id = ? AND {scope_column} = ? "  # noqa: S608
                    "UNION ALL SELECT sort_key, id FROM page_cursors "
                    "WHERE kind = ? AND id = ? AND scope = ? LIMIT 1",
                    (after, scope_value, scope, after, scope_value),
                ).fetchone()
                if cursor is None:
                    raise LookupError(after)
                clauses.append(f"(created_at, id) {'<' if order == 'desc' else '>'} (?, ?)")
                args.extend([cursor[0], cursor[1]])
            rows = db.execute(
                f"SELECT * FROM {table} WHERE {' AND '.join(clauses) or '1 = 1'} "  # noqa: S608
                f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return rows[:limit], len(rows) > limit

    # files

    def add_file(self, record: FileRecord) -> FileRecord:
        """Insert a file record."""
        with self._store.transaction() as db:
            _insert(db, "files", record)
        return record

    def get_file(self, file_id: str) -> FileRecord | None:
        """A file record, or None."""
        with self._store.reading() as db:
            row = db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileRecord(**dict(row)) if row else None

    def files_page(
        self, project: str, *, limit: int, order: str, after: str | None, purpose: str | None
    ) -> tuple[list[FileRecord], bool]:
        """One page of a project's files."""
        where = {"project": project, **({"purpose": purpose} if purpose else {})}
        rows, more = self._page("files", where, scope="file", limit=limit, order=order, after=after)
        return [FileRecord(**dict(r)) for r in rows], more

    def delete_file(self, file_id: str) -> None:
        """Forget a file (its id stays a valid cursor)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT id, project, created_at FROM files WHERE id = ?", (file_id,)
            ).fetchall()
            _keep_cursors(db, "file", [tuple(row) for row in rows])
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def blob_in_use(self, digest: str) -> bool:
        """Whether any file or skill version still holds this blob."""
        with self._store.reading() as db:
            row = db.execute(
                "SELECT 1 FROM files WHERE sha256 = ? UNION ALL "
                "SELECT 1 FROM skill_versions WHERE sha256 = ? LIMIT 1",
                (digest, digest),
            ).fetchone()
        return row is not None

    # container files

    def put_container_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        """Record a file at its path; a file already recorded there keeps its id and
        creation time (the id is stable while a file stays at its path)."""
        with self._store.transaction() as db:
            row = db.execute(
                "INSERT INTO container_files (id, container_id, path, bytes, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (container_id, path) DO UPDATE "
                "SET bytes = excluded.bytes, source = excluded.source RETURNING id, created_at",
                tuple(record.__dict__.values()),
            ).fetchone()
            record = ContainerFileRecord(
                row["id"], record.container_id, record.path, record.bytes, record.source,
                row["created_at"],
            )  # fmt: skip
        return record

    def get_container_file(self, container_id: str, file_id: str) -> ContainerFileRecord | None:
        """A container file record, or None."""
        with self._store.reading() as db:
            row = db.execute(
                "SELECT * FROM container_files WHERE id = ? AND container_id = ?",
                (file_id, container_id),
            ).fetchone()
        return ContainerFileRecord(**dict(row)) if row else None

    def container_files(self, container_id: str) -> dict[str, ContainerFileRecord]:
        """Every record of a sandbox, by path."""
        with self._store.reading() as db:
            rows = db.execute(
                "SELECT * FROM container_files WHERE container_id = ?", (container_id,)
            ).fetchall()
        return {row["path"]: ContainerFileRecord(**dict(row)) for row in rows}

    def sync_container_files(
        self,
        container_id: str,
        *,
        add: Iterable[ContainerFileRecord],
        resize: Iterable[tuple[str, int]],
        drop: Iterable[str],
    ) -> None:
        """Apply one listing's differences in a single transaction."""
        with self._store.transaction() as db:
            self._forget_container_files(db, container_id, list(drop))
            db.executemany(
                "UPDATE container_files SET bytes = ? WHERE id = ?",
                [(size, file_id) for file_id, size in resize],
            )
            db.executemany(
                "INSERT INTO container_files (id, container_id, path, bytes, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r.id, r.container_id, r.path, r.bytes, r.source, r.created_at) for r in add],
            )

    def container_files_page(
        self, container_id: str, *, limit: int, order: str, after: str | None
    ) -> tuple[list[ContainerFileRecord], bool]:
        """One page of a sandbox's files."""
        rows, more = self._page(
            "container_files",
            {"container_id": container_id},
            scope="container_file",
            limit=limit,
            order=order,
            after=after,
        )
        return [ContainerFileRecord(**dict(r)) for r in rows], more

    @staticmethod
    def _forget_container_files(db: Connection, container_id: str, file_ids: list[str]) -> None:
        marks = ", ".join("?" for _ in file_ids)
        if not file_ids:
            return
        rows = db.execute(
            "SELECT id, container_id, created_at FROM container_files "  # noqa: S608
            f"WHERE container_id = ? AND id IN ({marks})",
            (container_id, *file_ids),
        ).fetchall()
        _keep_cursors(db, "container_file", [tuple(row) for row in rows])
        db.execute(
            f"DELETE FROM container_files WHERE container_id = ? AND id IN ({marks})",  # noqa: S608
            (container_id, *file_ids),
        )

    def delete_container_file(self, container_id: str, file_id: str) -> None:
        """Forget one container file (its id stays a valid cursor)."""
        with self._store.transaction() as db:
            self._forget_container_files(db, container_id, [file_id])

    def delete_container_files(self, container_id: str) -> None:
        """Forget every file of a sandbox (it was deleted or expired), cursors included."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM container_files WHERE container_id = ?", (container_id,))
            db.execute(
                "DELETE FROM page_cursors WHERE kind = 'container_file' AND scope = ?",
                (container_id,),
            )

    # skills

    def add_skill_version(
        self, version: SkillVersionRecord, skill: SkillRecord
    ) -> tuple[SkillRecord, SkillVersionRecord]:
        """Insert a version and write its skill row, in one transaction."""
        with self._store.transaction() as db:
            _insert(db, "skills", skill, replace_on=("id",))
            _insert(db, "skill_versions", version)
        return skill, version

    def next_version(self, skill_id: str) -> str:
        """The number the next version of a skill gets."""
        with self._store.reading() as db:
            row = db.execute(
                "SELECT MAX(CAST(version AS INTEGER)) FROM skill_versions WHERE skill_id = ?",
                (skill_id,),
            ).fetchone()
        return str((row[0] or 0) + 1)

    def get_skill(self, skill_id: str) -> SkillRecord | None:
        """A skill record, or None."""
        with self._store.reading() as db:
            row = db.execute("SELECT * FROM skills WHERE id = ?", (skill_id,)).fetchone()
        return SkillRecord(**dict(row)) if row else None

    def update_skill(self, skill: SkillRecord) -> SkillRecord:
        """Write a skill row."""
        with self._store.transaction() as db:
            _insert(db, "skills", skill, replace_on=("id",))
        return skill

    def get_skill_version(self, skill_id: str, version: str) -> SkillVersionRecord | None:
        """A version record, or None."""
        with self._store.reading() as db:
            row = db.execute(
                "SELECT * FROM skill_versions WHERE skill_id = ? AND version = ?",
                (skill_id, version),
            ).fetchone()
        return SkillVersionRecord(**dict(row)) if row else None

    def skills_page(
        self, project: str, *, limit: int, order: str, after: str | None
    ) -> tuple[list[SkillRecord], bool]:
        """One page of a project's skills."""
        rows, more = self._page(
            "skills", {"project": project}, scope="skill", limit=limit, order=order, after=after
        )
        return [SkillRecord(**dict(r)) for r in rows], more

    def skill_versions_page(
        self, skill_id: str, *, limit: int, order: str, after: str | None
    ) -> tuple[list[SkillVersionRecord], bool]:
        """One page of a skill's versions."""
        direction = "DESC" if order == "desc" else "ASC"
        clauses: list[str] = ["skill_id = ?"]
        args: list[object] = [skill_id]
        with self._store.reading() as db:
            if after is not None:
                cursor = db.execute(
                    "SELECT CAST(version AS INTEGER) FROM skill_versions "
                    "WHERE skill_id = ? AND (id = ? OR version = ?) "
                    "UNION ALL SELECT sort_key FROM page_cursors "
                    "WHERE kind = 'skill_version' AND scope = ? AND id = ? LIMIT 1",
                    (skill_id, after, after, skill_id, after),
                ).fetchone()
                if cursor is None:
                    raise LookupError(after)
                compare = "<" if order == "desc" else ">"
                clauses.append(f"CAST(version AS INTEGER) {compare} ?")
                args.append(int(cursor[0]))
            rows = db.execute(
                f"SELECT * FROM skill_versions WHERE {' AND '.join(clauses)} "  # noqa: S608
                f"ORDER BY CAST(version AS INTEGER) {direction} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return [SkillVersionRecord(**dict(r)) for r in rows[:limit]], len(rows) > limit

    def delete_skill_version(self, skill_id: str, version: str) -> None:
        """Forget one version (its id stays a valid cursor)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT id, skill_id, CAST(version AS INTEGER) FROM skill_versions "
                "WHERE skill_id = ? AND version = ?",
                (skill_id, version),
            ).fetchall()
            _keep_cursors(db, "skill_version", [tuple(row) for row in rows])
            db.execute(
                "DELETE FROM skill_versions WHERE skill_id = ? AND version = ?",
                (skill_id, version),
            )

    def delete_skill(self, skill_id: str) -> list[str]:
        """Forget a skill and its versions; return the versions' blobs."""
        with self._store.transaction() as db:
            digests = [
                row[0]
                for row in db.execute(
                    "SELECT sha256 FROM skill_versions WHERE skill_id = ?", (skill_id,)
                ).fetchall()
            ]
            rows = db.execute(
                "SELECT id, project, created_at FROM skills WHERE id = ?", (skill_id,)
            ).fetchall()
            _keep_cursors(db, "skill", [tuple(row) for row in rows])
            db.execute("DELETE FROM skill_versions WHERE skill_id = ?", (skill_id,))
            db.execute("DELETE FROM skills WHERE id = ?", (skill_id,))
            db.execute(
                "DELETE FROM page_cursors WHERE kind = 'skill_version' AND scope = ?", (skill_id,)
            )
        return digests
