"""SQLite store (WAL), the default: one file in the state folder, safe for several processes
of one machine at once. The schema version is `PRAGMA user_version`."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_sandbox._exceptions import InternalServerError
from jupyter_sandbox.backends.migrations import pending
from jupyter_sandbox.backends.sql_store import SqlStore
from jupyter_sandbox.backends.store import Connection

__all__ = ["SqliteStore"]


class SqliteStore(SqlStore):
    """Thread-safe access to the SQLite file; each call is one short transaction.

    Raises:
        InternalServerError: the file cannot be opened, or its schema is newer than this code.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise InternalServerError(f"cannot open the store {path}: {exc}") from exc
        try:
            self._db.row_factory = sqlite3.Row
            os.chmod(path, 0o600)  # it holds the kernels' HMAC keys
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise InternalServerError(f"cannot open the store {path}: {exc}") from exc
            raise

    def _migrate(self) -> None:
        """Run the migrations this file lacks, in one transaction with the version bump."""
        with self.transaction() as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            for migration in pending(current, str(self.path)):
                for statement in migration.statements:
                    db.execute(statement)
                # a pragma takes no parameters; the version is our own int
                db.execute(f"PRAGMA user_version = {int(migration.version)}")

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """This connection, for one thread; a database failure leaves as an API error."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise InternalServerError(f"the store {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._locked() as db:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (`BEGIN IMMEDIATE`: writers of every process take turns)."""
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """The connection, held for a read."""
        with self._locked() as db:
            yield db
