"""Pausing idle sandboxes (`idle_action="pause"`) and resuming them on their next use.

A paused sandbox is frozen by the cgroup freezer (no CPU, memory kept). The store keeps it
`ready` with `extra.paused_at`; the API reports `paused`. Its hard lifetime is enforced
inside the container by a deadline that cannot fire while it is frozen, so the host's expiry
sweep ends a paused sandbox at its deadline (`Expiry` asks `holds` first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.backends.base import Backend
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import IdleAction

logger = logging.getLogger(__name__)

PAUSED_AT = "paused_at"
IDLE_ACTION = "idle_action"


def is_paused(record: ContainerRecord) -> bool:
    """Frozen by the idle policy (the store still says `ready`)."""
    return record.status == "ready" and not record.deleted and PAUSED_AT in record.extra


def idle_action(record: ContainerRecord) -> IdleAction:
    """The record's idle policy (records made before issue 18 expire)."""
    return "pause" if record.extra.get(IDLE_ACTION) == "pause" else "expire"


_LOCKS = tuple(threading.Lock() for _ in range(64))
"""Striped: a pause and a resume of one sandbox in this process never interleave."""


def _lock(container_id: str) -> threading.Lock:
    return _LOCKS[hash(container_id) % len(_LOCKS)]


class PauseService:
    """Freezes idle sandboxes whose policy is `pause`, and thaws them on use."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        backend: Backend,
        is_running: Callable[[str], bool] = lambda container_id: False,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backend = backend
        self._is_running = is_running
        self._on_deadline: Callable[[], object] | None = None
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    def watch_deadlines(self, sweep: Callable[[], object]) -> None:
        """Call `sweep` at the hard deadline of each sandbox this process sees paused: the
        in-container deadline cannot fire while it is frozen, so the host ends it."""
        self._on_deadline = sweep

    def close(self) -> None:
        """Cancel the deadline timers (another process's sweep, or the next call, takes over)."""
        with self._timers_lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()

    def _watch(self, record: ContainerRecord) -> None:
        """One timer per paused sandbox in this process, firing just after its deadline."""
        if self._on_deadline is None:
            return
        with self._timers_lock:
            if record.id in self._timers:
                return
            timer = threading.Timer(
                max(0.0, record.expires_at - time.time()) + 0.5, self._deadline, (record.id,)
            )
            timer.daemon = True
            self._timers[record.id] = timer
        timer.start()

    def _deadline(self, container_id: str) -> None:
        with self._timers_lock:
            self._timers.pop(container_id, None)
        if self._on_deadline is None:
            return
        try:
            self._on_deadline()
        except APIError as exc:  # a timer thread has no caller: log, the next sweep retries
            logger.warning("could not end paused sandbox %s at its deadline: %s", container_id, exc)

    def set_policy(self, container_id: str, action: IdleAction | None) -> None:
        """Record a new sandbox's idle policy (`None`: the settings' default)."""
        if (action or self._settings.default_idle_action) != "pause":
            return
        record = self._store.get(container_id)
        if record is not None:
            extra = {**record.extra, IDLE_ACTION: "pause"}
            self._store.take(record.id, record.project, extra=extra)

    def holds(self, record: ContainerRecord, now: float) -> bool:
        """For the expiry sweep: True keeps an idle sandbox (paused now if it was not),
        False lets it end (its policy is `expire`, or its hard lifetime is over)."""
        if idle_action(record) != "pause" or now >= record.expires_at:
            return False
        if not is_paused(record):
            self.pause(record.id)
        else:
            self._watch(record)  # paused by another process, maybe one that has ended
        return True

    def pause(self, container_id: str) -> None:
        """Freeze a sandbox unless it was used since the sweep looked at it."""
        with _lock(container_id):
            record = self._store.get(container_id)
            if record is None or not record.is_live or is_paused(record):
                return
            if time.time() < record.idle_deadline() or self._is_running(record.id):
                return  # used meanwhile, or a long cell runs: freezing it would hang the call
            try:
                self._backend.pause(record.id)
            except APIError as exc:
                logger.warning("could not pause %s: %s", record.id, exc)
                return
            paused = self._store.take(
                record.id, record.project, extra={**record.extra, PAUSED_AT: time.time()}
            )
        if paused is not None:
            logger.info("paused idle sandbox %s", record.id)
            self._watch(paused)

    def resume(self, record: ContainerRecord) -> ContainerRecord:
        """Thaw a paused sandbox and count this as activity; others are returned as they are."""
        if not is_paused(record):
            return record
        with _lock(record.id):
            current = self._store.get(record.id)
            if current is None or not is_paused(current):
                return current or record
            self._backend.unpause(record.id)
            extra: dict[str, Any] = {k: v for k, v in current.extra.items() if k != PAUSED_AT}
            resumed = self._store.take(
                record.id, record.project, extra=extra, last_active_at=time.time()
            )
        logger.info("resumed sandbox %s", record.id)
        return resumed if resumed is not None else current
