"""The warm pool: started sandboxes of the default configuration, so `create` is a claim.

This process keeps `pool_size` pooled sandboxes booted in a background thread. A pooled
sandbox is an ordinary record of the reserved project `POOL_PROJECT`; a claim reassigns it
to the caller's project in one store transaction (each sandbox is handed out once, across
processes), then moves its hard deadline to the claimed lifetime through the deadline file.
Closing the pool removes the pooled sandboxes this process made; those of a crashed process
end at their pool deadline and are reaped by reconcile.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import ContainerCreateParams, NetworkPolicyDisabled

logger = logging.getLogger(__name__)

POOL_PROJECT = "__warm_pool__"
"""The project pooled sandboxes belong to until claimed; no client may use it."""
POOL_NAME = "warm-pool"
_CLAIM_MARGIN = 30.0
"""A pooled sandbox this close to its pool deadline is not handed out."""
_RECHECK = 5.0
_MAX_BACKOFF = 60.0


class WarmPool:
    """Keeps this process's pooled sandboxes topped up and hands them out."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        boot: Callable[[], ContainerRecord],
        destroy: Callable[[ContainerRecord], None],
        write_deadline: Callable[[str, float], None],
    ) -> None:
        """`boot` makes a pooled sandbox, `destroy` ends one (a no-op once claimed), and
        `write_deadline` moves a claimed sandbox's hard deadline (`Backend.write_deadline`)."""
        self._settings = settings
        self._store = store
        self._boot = boot
        self._destroy = destroy
        self._write_deadline = write_deadline
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many pooled sandboxes this process keeps."""
        return self._settings.pool_size

    def fits(self, request: ContainerCreateParams, memory_limit: str) -> bool:
        """Whether a pooled sandbox can serve this request (the default configuration)."""
        return (
            self.size > 0
            and memory_limit == self._settings.default_memory_limit
            and isinstance(request.network_policy, NetworkPolicyDisabled)
            and not request.file_ids
            and not request.skills
        )

    def claim(
        self, *, project: str, name: str, idle_minutes: int, lifetime: int
    ) -> ContainerRecord | None:
        """A ready sandbox, now the caller's with the claimed lifetime; None if none is left."""
        self.start()
        now = time.time()
        record = self._store.claim(
            POOL_PROJECT,
            expiring_after=now + _CLAIM_MARGIN,
            project=project,
            name=name,
            created_at=now,
            last_active_at=now,
            idle_minutes=idle_minutes,
            expires_at=now + lifetime,
            owner_pid=os.getpid(),
            owner_host=socket.gethostname(),
        )
        self._wake.set()
        if record is None:
            return None
        try:
            self._write_deadline(record.id, record.expires_at)
        except Exception:
            logger.exception("could not set the deadline of claimed sandbox %s", record.id)
            self._destroy(record)
            return None
        return record

    def pooled(self) -> list[ContainerRecord]:
        """The pooled (unclaimed) sandboxes this process made."""
        pid, host = os.getpid(), socket.gethostname()  # a shared store: pids repeat on hosts
        return [
            record
            for record in self._store.all(statuses=("initializing", "ready"))
            if record.project == POOL_PROJECT
            and (record.owner_pid, record.owner_host) == (pid, host)
            and not record.deleted
        ]

    def start(self) -> None:
        """Start filling in the background (idempotent; a no-op when the size is 0)."""
        with self._lock:
            if self.size == 0 or self._stop.is_set():
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="jupyter-sandbox-pool", daemon=True
                )
                self._thread.start()

    def wait_full(self, timeout: float) -> bool:
        """Block until this process's pool holds `size` ready sandboxes, or `timeout`."""
        self.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(r.status == "ready" for r in self.pooled()) >= self.size:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop filling and remove this process's pooled sandboxes."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self._settings.start_timeout + 10)
        for record in self.pooled():
            self._retire(record)

    def _retire(self, record: ContainerRecord) -> None:
        """Destroy a pooled sandbox unless another process has just claimed it."""
        self._destroy(record)  # a no-op if another process claimed it meanwhile

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._recycle()
                while not self._stop.is_set() and len(self.pooled()) < self.size:
                    self._boot()
                backoff = 1.0
                delay = _RECHECK
            except Exception:
                logger.exception(
                    "warm pool: could not start a sandbox; retrying in %.0f s", backoff
                )
                delay, backoff = backoff, min(backoff * 2, _MAX_BACKOFF)
            self._wake.wait(delay)
            self._wake.clear()

    def _recycle(self) -> None:
        """Replace pooled sandboxes too near their pool deadline to be handed out."""
        soon = time.time() + 2 * _CLAIM_MARGIN
        for record in self.pooled():
            if record.status == "ready" and record.expires_at < soon:
                self._retire(record)


def pool_request() -> ContainerCreateParams:
    """What a pooled sandbox is created with: the default configuration."""
    return ContainerCreateParams(name=POOL_NAME)


def pool_idle_minutes(settings: Settings) -> int:
    """Idle expiry of a pooled sandbox: never before its pool deadline."""
    return math.ceil(settings.pool_max_age_seconds / 60) + 1
