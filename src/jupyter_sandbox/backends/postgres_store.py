"""PostgreSQL store (`store_url = "postgresql://..."`, the `postgres` extra): one fleet of
sandboxes for API servers on several machines.

The queries are `SqlStore`'s; here are connections and transactions. Each transaction borrows
a connection from a small pool of idle ones (so threads do not queue behind one connection).
A connection the server dropped (PostgreSQL restarted, a network blip) fails on its first
statement, `BEGIN`: then nothing of the transaction has run, so it is replaced by a new
connection and the transaction starts again, once. A failure after `BEGIN` rolls the
transaction back and reaches the caller as an error, so nothing is half-written.
A lost or refused connection is `StoreUnavailableError` (a 503 with `Retry-After` over HTTP:
the database is restarting or unreachable, and a retry may succeed); any other database error
is an `InternalServerError`. Connections use TCP keepalives, so a peer that vanished without a
word is noticed instead of waited on.
Migrations run under a transaction-scoped advisory lock, so servers starting together apply
each one once; `schema_migrations` records them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import unquote

import psycopg

from jupyter_sandbox._exceptions import InternalServerError, StoreUnavailableError
from jupyter_sandbox.backends.migrations import pending
from jupyter_sandbox.backends.sql_store import SqlStore
from jupyter_sandbox.backends.store import Connection, describe_url

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x6A7362785F6D67  # any constant shared by every server ("jsbx_mg")
_IDLE_CONNECTIONS = 8


class _Row:
    """One result row: by position (`row[0]`), by column (`row["id"]`), `dict(row)`."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        """Column names, in order."""
        return list(self._index)


def _row_maker(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: _Row(values, index)


@lru_cache(maxsize=512)
def _to_pyformat(sql: str) -> str:
    """`?` placeholders (ours, shared with SQLite) as psycopg's `%s`."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgConnection:
    """A psycopg connection speaking the `Connection` protocol."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        cursor = self.raw.cursor(row_factory=_row_maker)
        return cursor.execute(_to_pyformat(sql), tuple(parameters))

    def execute_binary(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """`execute`, results in the binary format: `bytea` arrives as is, not as hex text
        (blob chunks, `db_blobs.py`: about 3x faster to read)."""
        cursor = self.raw.cursor(row_factory=_row_maker, binary=True)
        return cursor.execute(_to_pyformat(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.raw.cursor(row_factory=_row_maker)
        rows = [tuple(p) for p in parameters]
        if rows:
            cursor.executemany(_to_pyformat(sql), rows)
        return cursor


class PostgresStore(SqlStore):
    """The store in a PostgreSQL database, shared by every server that names it.

    Raises:
        InternalServerError: the database cannot be reached, or its schema is newer than
            this code.
    """

    for_update: ClassVar[str] = " FOR UPDATE"
    skip_locked: ClassVar[str] = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._where = describe_url(url)
        self._hidden = _secret_parts(url)
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @property
    def location(self) -> str:
        """The database, without credentials."""
        return self._where

    @property
    def is_shared(self) -> bool:
        """Always: this is how servers on several machines share one fleet."""
        return True

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,  # transactions are our explicit BEGIN ... COMMIT
                connect_timeout=max(1, int(self._connect_timeout)),
                application_name="jupyter-sandbox",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot connect to the store {self._where}: {self._said(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise InternalServerError(
                f"cannot connect to the store {self._where}: {self._said(exc)}"
            ) from exc

    def _said(self, exc: BaseException) -> str:
        """The error's first line, without the URL or its password: libpq quotes what it
        cannot parse (`invalid percent-encoded token: "<password>"`, the whole URL)."""
        text = _first_line(exc)
        for part in self._hidden:
            text = text.replace(part, "***")
        return text

    def _borrow(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._closed:
                raise InternalServerError(f"the store {self._where} is closed")
            while self._idle:
                raw = self._idle.pop()
                if not raw.closed:
                    return raw
        return self._connect()

    def _give_back(self, raw: psycopg.Connection[Any]) -> None:
        with self._lock:
            if not self._closed and not raw.broken and len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(raw)
                return
        raw.close()

    def _begin(self, begin: str) -> psycopg.Connection[Any]:
        """A connection inside a new transaction; a dead idle connection is replaced, once."""
        raw = self._borrow()
        try:
            raw.execute(begin)
        except psycopg.OperationalError:
            raw.close()  # dropped while idle: nothing of this transaction ran
            raw = self._connect()
            try:
                raw.execute(begin)
            except psycopg.Error as exc:
                raw.close()
                raise self._failed(exc, raw) from exc
        return raw

    def _failed(self, exc: psycopg.Error, raw: psycopg.Connection[Any]) -> InternalServerError:
        """The error for a database failure: unavailable when the connection is lost."""
        message = f"the store {self._where} failed: {self._said(exc)}"
        if isinstance(exc, psycopg.OperationalError) or raw.broken or raw.closed:
            return StoreUnavailableError(message)
        return InternalServerError(message)

    @contextmanager
    def _run(self, begin: str) -> Iterator[Connection]:
        raw = self._begin(begin)
        try:
            try:
                yield _PgConnection(raw)
            except BaseException:
                if not raw.broken:
                    raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
        except psycopg.Error as exc:
            raise self._failed(exc, raw) from exc
        finally:
            self._give_back(raw)

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction (READ COMMITTED; rows to change are locked `FOR UPDATE`)."""
        return self._run("BEGIN")

    def reading(self) -> AbstractContextManager[Connection]:
        """A read-only transaction."""
        return self._run("BEGIN READ ONLY")

    def _migrate(self) -> None:
        """Run the migrations the database lacks, once, whichever servers start together."""
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
            for migration in pending(int(current or 0), self._where):
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                    (migration.version, migration.description),
                )

    def close(self) -> None:
        """Close every idle connection; later calls fail."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for raw in idle:
            raw.close()


def _secret_parts(url: str) -> list[str]:
    """What of `url` no message may hold: the URL, its password (as written and decoded) and
    any `password`/`sslpassword` parameter; longest first. Parsed by hand: the URL may be one
    that no parser accepts."""
    rest = url.partition("://")[2]
    authority, _, tail = rest.partition("/")
    authority = authority.partition("?")[0]
    found = [url]
    if "@" in authority:
        found.append(authority.rpartition("@")[0].partition(":")[2])
    query = (tail if "?" in tail else rest).partition("?")[2]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).strip().lower() in ("password", "sslpassword"):
            found.append(value)
    found += [unquote(part) for part in found]
    return sorted({part for part in found if part}, key=len, reverse=True)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
