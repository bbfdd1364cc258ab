"""The store: the records of sandboxes, files, skills and responses, and what API servers
share. `Store` is the interface core depends on; `open_store.py` picks the implementation.

Two implementations share one set of queries (`SqlStore`) and one ordered list of migrations:
`SqliteStore`, a file in the state folder (the default, for one machine), and `PostgresStore`
(`store_url = "postgresql://..."`), which several API servers on several machines share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from jupyter_sandbox.settings import describe_url
from jupyter_sandbox.types.container import ContainerStatus

if TYPE_CHECKING:
    from jupyter_sandbox.settings import Settings

__all__ = [
    "LIVE_STATUSES",
    "Connection",
    "ContainerRecord",
    "Cursor",
    "Store",
    "describe_url",
    "store_location",
]

LIVE_STATUSES: tuple[ContainerStatus, ...] = ("initializing", "ready")


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


class Cursor(Protocol):
    """What a statement returns (DB-API): rows index by position and by column name."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """Every remaining row."""


class Connection(Protocol):
    """A connection inside one transaction. SQL uses `?` placeholders and the subset both
    SQLite and PostgreSQL accept (`ON CONFLICT ... DO UPDATE`, `RETURNING`, row values)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        """Run one statement."""

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement per parameter row."""


class Store(Protocol):
    """Where records live. Every method is one short transaction, atomic across threads,
    processes and (for a shared store) machines."""

    @property
    def location(self) -> str:
        """Where the store is, for messages (never a password)."""

    @property
    def is_shared(self) -> bool:
        """True when API servers on other machines may use this store too (then rate limits
        and create retries are kept in it)."""

    def close(self) -> None:
        """Release connections."""

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction, for the tables other modules own (files, skills, ...)."""

    def reading(self) -> AbstractContextManager[Connection]:
        """A consistent read."""

    def insert(self, record: ContainerRecord) -> ContainerRecord:
        """Add a new record."""

    def get(self, container_id: str) -> ContainerRecord | None:
        """The record, or None."""

    def update(self, container_id: str, **changes: Any) -> ContainerRecord:
        """Change some fields and return the new record (NotFoundError if there is none)."""

    def claim(self, pool: str, *, expiring_after: float, **changes: Any) -> ContainerRecord | None:
        """Hand the oldest ready record of project `pool` that lives past `expiring_after` to
        one caller, with `changes` applied; None if there is none. Each record is handed out
        once, whichever process or machine asks."""

    def take(self, container_id: str, project: str, **changes: Any) -> ContainerRecord | None:
        """Apply `changes` only if the record is still live in `project`; None otherwise."""

    def end(
        self,
        container_id: str,
        *,
        status: ContainerStatus,
        deleted: bool = False,
        error: str | None = None,
        project: str | None = None,
    ) -> ContainerRecord | None:
        """Move a record to an end status, once; the record as it was before, or None when
        there is nothing to do here."""

    def touch(self, container_id: str, now: float | None = None) -> None:
        """Move `last_active_at` to now."""

    def page(
        self,
        *,
        project: str,
        limit: int,
        order: str,
        after: str | None,
        name: str | None = None,
    ) -> tuple[list[ContainerRecord], bool]:
        """One page of a project's visible records, by creation time, and whether more follow
        (LookupError if `after` is no record of `project`)."""

    def all(self, *, statuses: tuple[str, ...] | None = None) -> list[ContainerRecord]:
        """Every record (optionally only some statuses), deleted ones included."""


def store_location(settings: Settings) -> str:
    """Where `settings` put the store, without credentials (doctor, logs)."""
    if settings.store_url is not None:
        return describe_url(settings.store_url.get_secret_value())
    return str(settings.store_path)
