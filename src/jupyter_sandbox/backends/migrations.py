"""The store's schema as an ordered list of migrations, applied by SQLite and PostgreSQL alike.

A store records the last migration it has run (SQLite: `PRAGMA user_version`; PostgreSQL: the
`schema_migrations` table) and runs the later ones, in order, in one transaction when it opens.
A store whose version is higher than the last one here was written by a newer jupyter-sandbox:
it is refused rather than used with a schema this code does not know.

Statements use the SQL both databases accept: `DOUBLE PRECISION` (a REAL in SQLite), `BIGINT`
(an INTEGER in SQLite), `IF NOT EXISTS` everywhere (stores made before versioning, at version 0,
already hold the tables of migrations 1 and 2). Never edit a released migration: add one.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_sandbox._exceptions import InternalServerError

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "pending"]


@dataclass(frozen=True)
class Migration:
    """One step of the schema."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sandboxes, files, container files, skills and page cursors",
        (
            """CREATE TABLE IF NOT EXISTS containers (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_active_at DOUBLE PRECISION NOT NULL,
                memory_limit TEXT NOT NULL,
                network_policy TEXT NOT NULL,
                idle_minutes INTEGER NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                image TEXT NOT NULL,
                kernel_key TEXT NOT NULL,
                socket_dir TEXT NOT NULL,
                docker_id TEXT,
                owner_pid INTEGER NOT NULL,
                owner_host TEXT NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                extra TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX IF NOT EXISTS containers_by_project "
            "ON containers (project, deleted, created_at)",
            "CREATE INDEX IF NOT EXISTS containers_by_status ON containers (status)",
            """CREATE TABLE IF NOT EXISTS files (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                filename TEXT NOT NULL,
                purpose TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION
            )""",
            "CREATE INDEX IF NOT EXISTS files_by_project ON files (project, created_at)",
            """CREATE TABLE IF NOT EXISTS container_files (
                id TEXT PRIMARY KEY,
                container_id TEXT NOT NULL,
                path TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                source TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                UNIQUE (container_id, path)
            )""",
            "CREATE INDEX IF NOT EXISTS container_files_by_time "
            "ON container_files (container_id, created_at)",
            """CREATE TABLE IF NOT EXISTS skills (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                default_version TEXT NOT NULL,
                latest_version TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS skills_by_project ON skills (project, created_at)",
            """CREATE TABLE IF NOT EXISTS skill_versions (
                skill_id TEXT NOT NULL,
                version TEXT NOT NULL,
                id TEXT NOT NULL,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (skill_id, version)
            )""",
            """CREATE TABLE IF NOT EXISTS page_cursors (
                kind TEXT NOT NULL,
                id TEXT NOT NULL,
                scope TEXT NOT NULL,
                sort_key DOUBLE PRECISION NOT NULL,
                deleted_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (kind, id)
            )""",
            "CREATE INDEX IF NOT EXISTS page_cursors_by_age ON page_cursors (deleted_at)",
        ),
    ),
    Migration(
        2,
        "stored responses (/v1/responses)",
        (
            """CREATE TABLE IF NOT EXISTS responses (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                response TEXT NOT NULL,
                input_items TEXT NOT NULL,
                messages TEXT NOT NULL,
                containers TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX IF NOT EXISTS responses_by_project ON responses (project, created_at)",
        ),
    ),
    Migration(
        3,
        "rate-limit buckets and create attempts shared by API servers",
        (
            """CREATE TABLE IF NOT EXISTS rate_buckets (
                key_id TEXT PRIMARY KEY,
                tokens DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS create_attempts (
                id TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                project TEXT NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                container_id TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS create_attempts_by_fingerprint "
            "ON create_attempts (fingerprint, started_at)",
        ),
    ),
    Migration(
        4,
        "snapshots of sandboxes (their bundles are blobs)",
        (
            """CREATE TABLE IF NOT EXISTS snapshots (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                container_id TEXT NOT NULL,
                name TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                bytes BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                report TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS snapshots_by_container "
            "ON snapshots (container_id, created_at)",
            "CREATE INDEX IF NOT EXISTS snapshots_by_expiry ON snapshots (expires_at)",
        ),
    ),
    Migration(
        5,
        "blobs in the store (a shared store keeps file, skill and snapshot bytes in chunks)",
        (
            """CREATE TABLE IF NOT EXISTS blobs (
                namespace TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                storage_id TEXT NOT NULL UNIQUE,
                bytes BIGINT NOT NULL,
                chunk_size INTEGER NOT NULL,
                stored_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (namespace, sha256)
            )""",
            """CREATE TABLE IF NOT EXISTS blob_chunks (
                storage_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                data BYTEA NOT NULL,
                PRIMARY KEY (storage_id, seq)
            )""",
            # whether a blob is still held is asked on every delete and sweep
            "CREATE INDEX IF NOT EXISTS files_by_sha256 ON files (sha256)",
            "CREATE INDEX IF NOT EXISTS skill_versions_by_sha256 ON skill_versions (sha256)",
            "CREATE INDEX IF NOT EXISTS snapshots_by_sha256 ON snapshots (sha256)",
        ),
    ),
    Migration(
        6,
        "channel secrets (a shared store's kernel-channel master, backends/channel_master.py)",
        (
            """CREATE TABLE IF NOT EXISTS channel_secrets (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


def pending(current: int, where: str) -> tuple[Migration, ...]:
    """The migrations a store at version `current` still needs, in order.

    Raises:
        InternalServerError: the store is newer than this code (written by a later release).
    """
    if current > LATEST_VERSION:
        raise InternalServerError(
            f"the store {where} has schema version {current}, newer than the {LATEST_VERSION} "
            "this jupyter-sandbox knows: upgrade jupyter-sandbox (or use another store)"
        )
    if current < 0:
        raise InternalServerError(f"the store {where} has an invalid schema version {current}")
    return tuple(m for m in MIGRATIONS if m.version > current)
