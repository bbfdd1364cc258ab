"""Rate limits and create-retry memory kept in a shared store, so API servers on several
machines behind one address act as one: a key's requests draw on one bucket whichever server
answers, and a retried create that reaches another server finds the first attempt.

Buckets are refilled by wall-clock time (servers share no monotonic clock; a clock that steps
back refills nothing). An attempt row lives from the create's start to `window` seconds after
its success; a failed attempt's row is deleted (its retry must create). A row still in flight
after `stale_after` seconds belongs to a server that died mid-create and is ignored.
A retry waits for another server's attempt by reading its row with a growing interval (the
store has no cross-server notification here); one of this server's attempts wakes it at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import anyio
import anyio.to_thread

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.server.limits import Attempt, CreateLedger, RateLimiter

__all__ = ["SharedCreateLedger", "SharedRateLimiter"]

logger = logging.getLogger(__name__)


class SharedRateLimiter(RateLimiter):
    """The token bucket of each key, in the store's `rate_buckets` table."""

    def __init__(self, per_minute: int, store: Store) -> None:
        super().__init__(per_minute)
        self._store = store

    def check(self, key_id: str, now: float | None = None) -> None:
        """Take one token from the shared bucket, or raise QuotaExceededError."""
        if self._rate <= 0:
            return
        now = time.time() if now is None else now
        with self._store.transaction() as db:
            # An upsert that changes nothing, to create the bucket and lock its row at once.
            row = db.execute(
                "INSERT INTO rate_buckets (key_id, tokens, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET key_id = excluded.key_id "
                "RETURNING tokens, updated_at",
                (key_id, self._capacity, now),
            ).fetchone()
            tokens, wait = self.take(float(row[0]), float(row[1]), now)
            db.execute(
                "UPDATE rate_buckets SET tokens = ?, updated_at = ? WHERE key_id = ?",
                (tokens, max(now, float(row[1])), key_id),
            )
        if wait is not None:
            raise self.refusal(wait)

    async def acheck(self, key_id: str) -> None:
        """`check` in a worker thread (the event loop never waits on the database)."""
        await anyio.to_thread.run_sync(self.check, key_id)


class SharedCreateLedger(CreateLedger):
    """Create attempts in the store's `create_attempts` table, as well as in this process."""

    def __init__(
        self, store: Store, window: float = 300.0, stale_after: float | None = None
    ) -> None:
        super().__init__(window)
        self._store = store
        self._stale_after = window if stale_after is None else stale_after

    def _find_row(self, fingerprint: str) -> Any:
        now = time.time()
        with self._store.reading() as db:
            return db.execute(
                "SELECT id, container_id, finished_at FROM create_attempts "
                "WHERE fingerprint = ? AND ((finished_at IS NULL AND started_at > ?) "
                "OR finished_at > ?) ORDER BY started_at, id LIMIT 1",
                (fingerprint, now - self._stale_after, now - self._window),
            ).fetchone()

    def _get_row(self, record_id: str) -> Any:
        with self._store.reading() as db:
            return db.execute(
                "SELECT container_id, finished_at, started_at FROM create_attempts WHERE id = ?",
                (record_id,),
            ).fetchone()

    def _insert_row(self, record_id: str, fingerprint: str, project: str) -> None:
        now = time.time()
        with self._store.transaction() as db:
            db.execute(
                "DELETE FROM create_attempts WHERE started_at < ?",
                (now - self._window - self._stale_after,),
            )
            db.execute(
                "INSERT INTO create_attempts (id, fingerprint, project, started_at) "
                "VALUES (?, ?, ?, ?)",
                (record_id, fingerprint, project, now),
            )

    def _finish_row(self, record_id: str, container_id: str | None) -> None:
        with self._store.transaction() as db:
            if container_id is None:
                db.execute("DELETE FROM create_attempts WHERE id = ?", (record_id,))
            else:
                db.execute(
                    "UPDATE create_attempts SET finished_at = ?, container_id = ? WHERE id = ?",
                    (time.time(), container_id, record_id),
                )

    async def find(self, fingerprint: str) -> Attempt | None:
        """This server's attempt, else another server's from the store."""
        local = self.earlier(fingerprint)
        if local is not None:
            return local
        row = await anyio.to_thread.run_sync(self._find_row, fingerprint)
        if row is None:
            return None
        attempt = Attempt(
            started=time.monotonic(), record_id=row["id"], container_id=row["container_id"],
            remote=True,
        )  # fmt: skip
        if row["finished_at"] is not None:
            attempt.done.set()
        return attempt

    async def wait(self, attempt: Attempt) -> None:
        """Until the attempt ended; another server's is read from the store until it has."""
        if not attempt.remote or attempt.record_id is None:
            await attempt.done.wait()
            return
        interval = 0.05
        while not attempt.done.is_set():
            await anyio.sleep(interval)
            interval = min(1.0, interval * 2)
            row = await anyio.to_thread.run_sync(self._get_row, attempt.record_id)
            if row is None or (
                row["finished_at"] is None and row["started_at"] < time.time() - self._stale_after
            ):
                attempt.container_id = None  # failed, or its server died: create anew
                attempt.done.set()
            elif row["finished_at"] is not None:
                attempt.container_id = row["container_id"]
                attempt.done.set()

    async def start(self, fingerprint: str, project: str) -> Attempt:
        """`begin`, and its row in the store."""
        attempt = self.begin(fingerprint, project)
        attempt.record_id = "catt_" + secrets.token_hex(12)
        try:
            await anyio.to_thread.run_sync(
                self._insert_row, attempt.record_id, fingerprint, project
            )
        except BaseException:
            self.end(fingerprint, project, attempt, None)
            raise
        return attempt

    async def finish(
        self, fingerprint: str, project: str, attempt: Attempt, container_id: str | None
    ) -> None:
        """`end`, and its row: kept with the container on success, deleted on failure."""
        self.end(fingerprint, project, attempt, container_id)
        if attempt.record_id is None:
            return
        try:
            with anyio.CancelScope(shield=True):  # also when the request was cancelled
                await anyio.to_thread.run_sync(self._finish_row, attempt.record_id, container_id)
        except APIError as exc:
            # The create itself is done; its row will look stale in `stale_after` seconds.
            logger.warning(
                "could not record the end of create attempt %s: %s", attempt.record_id, exc
            )
