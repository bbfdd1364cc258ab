"""Reconcile the store with the backend after a crash: mark vanished sandboxes, reap orphans.

Several API servers may share one store and reconcile at any time, concurrently with each
other's creates and deletes: every end goes through the store's atomic `end` (one caller wins
and tears down), a sandbox is judged gone only from a look at the backend taken after its
record was read, and a sandbox is never ended for its creator being another live server (any
server serves any sandbox; only creates and pooled sandboxes of a dead creator are ended).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sandbox.backends.base import Backend, Leftover
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core.pool import POOL_PROJECT
from jupyter_sandbox.core.resources import SandboxResources
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import ContainerStatus

logger = logging.getLogger(__name__)

TEARDOWN_GRACE = 120.0
"""Seconds after a sandbox ended during which reconcile leaves its objects to its ender."""


@dataclass
class ReconcileReport:
    """What a reconcile pass changed."""

    marked: list[str] = field(default_factory=list)
    """Records whose container had vanished (or whose creator died mid-way)."""
    removed: list[str] = field(default_factory=list)
    """Sandboxes whose orphaned containers or volumes were removed."""
    socket_dirs: list[str] = field(default_factory=list)
    """Socket folders that no live sandbox owned."""
    storage: list[str] = field(default_factory=list)
    """Storage folders (and mounted disk images) that no live sandbox owned."""
    egress: list[str] = field(default_factory=list)
    """What happened to the egress proxy (restarted while needed, removed when idle)."""
    uploads: list[str] = field(default_factory=list)
    """Upload temporary files left by a killed process (`<sandbox id>/<name>`), removed."""
    blobs: list[str] = field(default_factory=list)
    """Blobs of a shared store that no record held any more (`<namespace>/<sha256>`), removed."""

    def merge(self, other: ReconcileReport) -> ReconcileReport:
        """A report of both passes (this one's entries first)."""
        return ReconcileReport(
            **{name: [*getattr(self, name), *getattr(other, name)] for name in _FIELDS}
        )

    def items(self) -> list[tuple[str, list[str]]]:
        """(field name, entries) for every field, in declaration order."""
        return [(name, list(getattr(self, name))) for name in _FIELDS]

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in _FIELDS)

    def lines(self) -> list[str]:
        """One human line per entry of every field (`gc` and `serve` print them all)."""
        return [f"{LABELS[name]} {item}" for name, items in self.items() for item in items]


_FIELDS = ("marked", "removed", "socket_dirs", "storage", "egress", "uploads", "blobs")
LABELS = {
    "marked": "marked gone",
    "removed": "removed orphan",
    "socket_dirs": "removed socket folder",
    "storage": "removed storage folder",
    "egress": "egress proxy:",
    "uploads": "removed stale upload",
    "blobs": "removed orphan blob",
}
"""How `lines` introduces each field's entries."""
_ENGINE_KINDS = ("container", "volume", "network")


def _creator_alive(record: ContainerRecord) -> bool:
    return _process_alive(record.owner_host, record.owner_pid)


def _process_alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell; let the start timeout decide
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is dead too
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _being_torn_down(record: ContainerRecord, now: float) -> bool:
    """Whether a live process ended this sandbox moments ago (its teardown may still run)."""
    at, by = record.extra.get("ended_at"), record.extra.get("ended_by")
    if not isinstance(at, int | float) or now - at >= TEARDOWN_GRACE:
        return False
    if not (isinstance(by, list) and len(by) == 2 and isinstance(by[1], int)):
        return False
    return _process_alive(str(by[0]), by[1])


def reconcile(
    settings: Settings, store: Store, backend: Backend, resources: SandboxResources
) -> ReconcileReport:
    """Make records and backend agree; safe while other processes use the same store.

    A sandbox found dead is ended through `resources` like any other end (so its storage,
    file records and network go too); objects no live record owns are removed."""
    report = ReconcileReport()
    # The records first, then the containers: a sandbox another server makes ready
    # meanwhile had its container before its record said so, so it is in the snapshot.
    # (The other order would take a create that finished in between for a vanished sandbox.)
    records = store.all(statuses=("initializing", "ready"))
    present = {o.owner for o in backend.existing() if o.kind == "container"}
    now = time.time()
    for record in records:
        ending = _ending(settings, backend, record, present, now)
        if ending is None:
            continue
        status, error = ending
        # The same atomic transition as every other end: a racing delete, expiry or claim
        # wins or loses here, never both.
        # A create that never finished returned no id to anyone: nothing to list.
        if resources.release(
            record, status=status, error=error, project=record.project, deleted=status == "failed"
        ):
            report.marked.append(record.id)
    for record in store.all(statuses=("failed",)):
        if not record.deleted:  # left visible by an older version
            store.update(record.id, deleted=True)
            report.marked.append(record.id)
    # Snapshot the backend first, then the records: anything a concurrent create makes
    # after its record was inserted is then always seen as owned.
    leftovers = backend.existing()
    # A sandbox that ended moments ago may still be being torn down by whoever ended it:
    # leave its objects to that caller (two removals at once race on unmounts).
    live_records = [
        r
        for r in store.all()
        if r.is_live or (r.id not in report.marked and _being_torn_down(r, now))
    ]
    live = {r.id for r in live_records} | {r.socket_dir for r in live_records}
    for leftover in leftovers:
        if leftover.owner in live:
            if leftover.kind == "storage":
                stale = backend.sweep_stale(leftover.owner)
                report.uploads += [f"{leftover.owner}/{name}" for name in stale]
            continue
        backend.remove_leftover(leftover)
        _report(report, leftover)
    report.egress = backend.reconcile_network(resources.network_needed)
    for line in report.lines():
        logger.info("reconcile: %s", line)
    return report


def _ending(
    settings: Settings, backend: Backend, record: ContainerRecord, present: set[str], now: float
) -> tuple[ContainerStatus, str] | None:
    """How a live record ends now (status, reason), or None if it stays."""
    if record.status == "initializing":
        stale = now - record.created_at > 2 * settings.start_timeout
        if _creator_alive(record) and not stale:
            return None
        return "failed", "its creator stopped before the sandbox was ready"
    if record.project == POOL_PROJECT and not _creator_alive(record):
        # Retire it only if nobody claimed it since the snapshot.
        return "terminated", "its warm pool's process stopped"
    if record.id in present:
        return None
    state = backend.state(record.id)  # the backend may know why (Swarm: its node is down)
    code = backend.exit_code(record.id, record.created_at)
    error = (
        state.reason
        if state is not None and state.reason
        else f"the sandbox's container exited (code {code})"
        if code is not None
        else "the container stopped outside this store's control"
    )
    return ("expired" if now >= record.expires_at else "terminated"), error


def _report(report: ReconcileReport, leftover: Leftover) -> None:
    if leftover.kind in _ENGINE_KINDS:
        report.removed.append(leftover.owner)
    elif leftover.kind == "channel":
        report.socket_dirs.append(leftover.name)
    elif leftover.kind == "storage":
        report.storage.append(leftover.name)
