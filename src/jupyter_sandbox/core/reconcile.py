"""Reconcile the store with the engine after a crash: mark vanished sandboxes, reap orphans."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sandbox.backends import deadline_file, disk, kernel
from jupyter_sandbox.backends.host_scan import sweep_uploads
from jupyter_sandbox.backends.runtime.base import Runtime
from jupyter_sandbox.backends.sandbox_files import STALE_UPLOAD_SECONDS
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core.network import EgressService
from jupyter_sandbox.core.pool import POOL_PROJECT
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


def reconcile(  # noqa: C901 (seam owns reconcile and rewrites this)
    settings: Settings, store: Store, runtime: Runtime, egress: EgressService | None = None
) -> ReconcileReport:
    """Make records and engine agree; safe while other processes use the same store."""
    report = ReconcileReport()
    present = set(runtime.labelled(settings.store_id)["container"])
    now = time.time()
    for record in store.all(statuses=("initializing", "ready")):
        status: ContainerStatus
        if record.status == "initializing":
            stale = now - record.created_at > 2 * settings.start_timeout
            if _creator_alive(record) and not stale:
                continue
            status, error = "failed", "its creator stopped before the sandbox was ready"
        elif record.project == POOL_PROJECT and not _creator_alive(record):
            # Retire it only if nobody claimed it since the snapshot.
            status, error = "terminated", "its warm pool's process stopped"
        elif record.id in present:
            continue
        else:
            status = "expired" if now >= record.expires_at else "terminated"
            code = runtime.exit_code(record.id, record.created_at)
            error = (
                f"the sandbox's container exited (code {code})"
                if code is not None
                else "the container stopped outside this store's control"
            )
        # The same atomic transition as every other end: a racing delete, expiry or claim
        # wins or loses here, never both.
        # A create that never finished returned no id to anyone: nothing to list.
        ended = store.end(
            record.id,
            status=status,
            error=error,
            project=record.project,
            deleted=status == "failed",
        )
        if ended is None:
            continue
        runtime.remove(record.id)
        kernel.remove_socket_dir(Path(record.socket_dir))
        deadline_file.remove(settings.deadlines_root / record.id)
        report.marked.append(record.id)
    for record in store.all(statuses=("failed",)):
        if not record.deleted:  # left visible by an older version
            store.update(record.id, deleted=True)
            report.marked.append(record.id)
    # Snapshot the engine and the folder first, then the records: anything a concurrent
    # create makes after its record was inserted is then always seen as owned.
    owners = {i for ids in runtime.labelled(settings.store_id).values() for i in ids if i}
    root = settings.sockets_root
    entries = list(root.iterdir()) if root.is_dir() else []
    storage_root = settings.home / "sandboxes"
    storage = sorted(storage_root.iterdir()) if storage_root.is_dir() else []
    deadlines_root = settings.deadlines_root
    deadlines = sorted(deadlines_root.iterdir()) if deadlines_root.is_dir() else []
    # A sandbox that ended moments ago may still be being torn down by whoever ended it:
    # leave its objects to that caller (two removals at once race on unmounts).
    live_records = [
        r
        for r in store.all()
        if r.is_live or (r.id not in report.marked and _being_torn_down(r, now))
    ]
    live = {r.id for r in live_records}
    for sandbox_id in sorted(owners - live):
        runtime.remove(sandbox_id)
        report.removed.append(sandbox_id)
    live_dirs = {Path(r.socket_dir).name for r in live_records}
    for entry in entries:
        if entry.name not in live_dirs:
            kernel.remove_socket_dir(entry)
            report.socket_dirs.append(entry.name)
    for folder in storage:
        if folder.name not in live:
            disk.remove_folder(folder)
            report.storage.append(folder.name)
        else:
            uploads = disk.SandboxStorage(folder, True).uploads
            for name in sweep_uploads(uploads, older_than=STALE_UPLOAD_SECONDS):
                report.uploads.append(f"{folder.name}/{name}")
    for folder in deadlines:
        if folder.name not in live:
            deadline_file.remove(folder)
    if egress is not None:
        report.egress = egress.reconcile()
    if (
        report.marked
        or report.removed
        or report.socket_dirs
        or report.storage
        or report.egress
        or report.uploads
    ):
        logger.info("reconcile: %s", report)
    return report
