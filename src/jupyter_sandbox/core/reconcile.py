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

logger = logging.getLogger(__name__)


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
    if record.owner_host != socket.gethostname():
        return True  # cannot tell; let the start timeout decide
    if record.owner_pid == os.getpid():
        return True
    try:
        os.kill(record.owner_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile(
    settings: Settings, store: Store, runtime: Runtime, egress: EgressService | None = None
) -> ReconcileReport:
    """Make records and engine agree; safe while other processes use the same store."""
    report = ReconcileReport()
    present = set(runtime.labelled(settings.store_id)["container"])
    now = time.time()
    for record in store.all(statuses=("initializing", "ready")):
        if record.status == "initializing":
            stale = now - record.created_at > 2 * settings.start_timeout
            if _creator_alive(record) and not stale:
                continue
            status, error = "failed", "its creator stopped before the sandbox was ready"
        elif record.project == POOL_PROJECT and not _creator_alive(record):
            # Retire it only if nobody claimed it since the snapshot.
            error = "its warm pool's process stopped"
            if store.take(record.id, POOL_PROJECT, status="terminated", error=error) is None:
                continue
            status = "terminated"
        elif record.id in present:
            continue
        else:
            status = "expired" if now >= record.expires_at else "terminated"
            error = "the container stopped outside this store's control"
        runtime.remove(record.id)
        kernel.remove_socket_dir(Path(record.socket_dir))
        deadline_file.remove(settings.deadlines_root / record.id)
        # A create that never finished returned no id to anyone: nothing to list.
        store.update(record.id, status=status, error=error, deleted=status == "failed")
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
    live_records = [r for r in store.all(statuses=("initializing", "ready")) if not r.deleted]
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
