"""Expiry: idle sandboxes (after `expires_after`) and hard lifetimes end here."""

from __future__ import annotations

import logging
import threading
import time

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.core.containers import ContainerService
from jupyter_sandbox.core.pause import PauseService

logger = logging.getLogger(__name__)


class Expiry:
    """Ends sandboxes whose idle or hard deadline has passed; cheap enough for every call."""

    def __init__(
        self,
        store: Store,
        containers: ContainerService,
        min_interval: float = 1.0,
        pause: PauseService | None = None,
    ) -> None:
        self._pause = pause
        self._store = store
        self._containers = containers
        self._min_interval = min_interval
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    def sweep(self, *, force: bool = False) -> list[str]:
        """Expire every overdue ready sandbox; return their ids."""
        # One sweep at a time per process (the server sweeps from several threads); a caller
        # that finds one running skips, since that sweep does the work.
        if not self._lock.acquire(blocking=force):
            return []
        try:
            return self._sweep(force)
        finally:
            self._lock.release()

    def _sweep(self, force: bool) -> list[str]:
        now = time.time()
        if not force and now - self._last_sweep < self._min_interval:
            return []
        self._last_sweep = now
        expired: list[str] = []
        for record in self._store.all(statuses=("ready",)):
            if record.deleted or now < min(record.idle_deadline(), record.expires_at):
                continue
            if self._pause is not None and self._pause.holds(record, now):  # issue 18
                continue
            try:
                if not self._containers.destroy(record, status="expired"):
                    continue  # deleted or ended by another caller meanwhile
            except APIError as exc:
                logger.warning("could not expire %s: %s", record.id, exc)
                continue
            logger.info("expired sandbox %s", record.id)
            expired.append(record.id)
        return expired
