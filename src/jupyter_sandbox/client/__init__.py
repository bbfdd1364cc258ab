"""The OpenAI-shaped Python API: `Client().containers.create(...)` and friends."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.base import Backend
from jupyter_sandbox.backends.db_blobs import DatabaseBlobStore, open_blobs
from jupyter_sandbox.backends.file_store import FileStore
from jupyter_sandbox.backends.open_store import open_store
from jupyter_sandbox.backends.registry import build_backend
from jupyter_sandbox.backends.snapshot_store import SnapshotStore
from jupyter_sandbox.backends.store import ContainerRecord
from jupyter_sandbox.client.containers import Containers
from jupyter_sandbox.client.files import Files
from jupyter_sandbox.client.skills import Skills
from jupyter_sandbox.core.container_files import ContainerFileService, SandboxContent
from jupyter_sandbox.core.containers import ContainerService
from jupyter_sandbox.core.execution import ExecutionService
from jupyter_sandbox.core.expiry import Expiry
from jupyter_sandbox.core.files import FileService
from jupyter_sandbox.core.kernels import Kernels
from jupyter_sandbox.core.pause import PauseService
from jupyter_sandbox.core.pool import POOL_PROJECT, WarmPool
from jupyter_sandbox.core.reconcile import ReconcileReport, reconcile
from jupyter_sandbox.core.resources import SandboxResources
from jupyter_sandbox.core.skills import SkillService
from jupyter_sandbox.core.snapshots import SnapshotService
from jupyter_sandbox.core.validation import bad_request, check_seconds
from jupyter_sandbox.settings import Settings


class Client:
    """Embedded client: a backend (default: the local Docker engine) plus a SQLite store;
    nothing else to start. This is the one composition root: it builds every service.

    Args:
        home: state folder (default `jupyter_data_dir()/sandbox`, or `JUPYTER_SANDBOX_HOME`).
        project: the tenant whose objects this client sees.
        backend: where sandboxes run: a `Backend` object (closed by its owner, not here) or
            a name (`docker`, `local`); default: the `backend` setting (`docker`).
        **settings: any other `Settings` field (image, extra_labels, ...).
    """

    def __init__(
        self,
        *,
        home: str | Path | None = None,
        project: str = "default",
        backend: Backend | str | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        backend_home = getattr(backend, "default_home", None)  # a test backend's own store
        if home is None and isinstance(backend_home, Path) and "home" not in overrides:
            home = backend_home
        if settings is None:
            if home is not None:
                overrides["home"] = Path(home)
            try:
                settings = Settings(**overrides)
            except ValidationError as exc:
                raise bad_request(exc) from exc
        if project == POOL_PROJECT:
            raise BadRequestError(
                f"Invalid project: {project!r} is reserved for the warm pool", param="project"
            )
        self.settings = settings
        self.project = project
        self._closed = False
        self._store = open_store(settings)
        try:
            if backend is None or isinstance(backend, str):
                self._backend = build_backend(backend or settings.backend, settings)
                self._owns_backend = True
            else:
                self._backend, self._owns_backend = backend, False
        except BaseException:
            self._store.close()
            raise
        self._compose(settings)
        self.containers = Containers(self)
        self.files = Files(self)
        self.skills = Skills(self)
        self._unreported: ReconcileReport | None = self.reconcile()
        self._pool.start()

    def _compose(self, settings: Settings) -> None:
        """Build every service on the store and the backend (and nothing else)."""
        store, backend = self._store, self._backend
        self._kernels = Kernels(settings, backend)
        records = FileStore(store)
        blobs = open_blobs(settings, store, "files")
        snapshot_blobs = open_blobs(settings, store, "snapshots")
        # issue 15: a shared store keeps the bytes too; reconcile sweeps what no record holds
        self._shared_blobs = [
            b for b in (blobs, snapshot_blobs) if isinstance(b, DatabaseBlobStore)
        ]
        self._files = FileService(settings, records, blobs)
        self._skills = SkillService(settings, records, blobs)
        content = SandboxContent(store, records, backend, self._files, self._skills)
        self._resources = SandboxResources(settings, store, backend, self._kernels, content)
        self._containers = ContainerService(settings, store, backend, self._resources, content)
        self._container_files = ContainerFileService(
            settings,
            store,
            records,
            content,
            self._files,
            self._resumed,  # issue 18: a file call resumes a paused sandbox
            self._containers.failure,
        )
        self._pool = WarmPool(
            settings,
            store,
            self._containers.boot_for_pool,
            self._destroy_pooled,
            backend.write_deadline,
        )
        self._containers.attach_pool(self._pool)
        self._executions = ExecutionService(
            settings, store, self._kernels, self._containers.failure
        )
        # issue 18: idle pause (the expiry sweep asks it first) and snapshots
        self._pause = PauseService(settings, store, self._backend, self._executions.is_running)
        self._snapshots = SnapshotService(
            settings,
            SnapshotStore(store),
            snapshot_blobs,
            content,
            self._executions,
            self._resumed,
        )
        self._expiry = Expiry(store, self._containers, pause=self._pause)
        self._pause.watch_deadlines(lambda: self._expiry.sweep(force=True))

    def _resumed(self, container_id: str, project: str) -> ContainerRecord:
        """`get_checked`, thawing a paused sandbox first (issue 18)."""
        return self._pause.resume(self._containers.get_checked(container_id, project=project))

    def _destroy_pooled(self, record: ContainerRecord) -> None:
        # Only while it is still where `record` saw it: a claim by another process must win.
        self._containers.destroy(record, status="terminated", deleted=True, project=record.project)

    def wait_for_pool(self, timeout: float = 60.0) -> bool:
        """Block until the warm pool (`pool_size` > 0) holds its sandboxes; False on timeout."""
        seconds = check_seconds(timeout, "timeout")
        assert seconds is not None  # None is refused by the type; check_seconds passes it
        return self._pool.wait_full(seconds)

    def for_project(self, project: str) -> Client:
        """A view of this client for another project (tenant), sharing its engine, store and
        kernel connections; close only the original. The HTTP server keeps one per API key."""
        view = copy.copy(self)
        view.project = project
        view.containers = Containers(view)
        view.files = Files(view)
        view.skills = Skills(view)
        return view

    def count_live(self, *, skip_creating_here: bool = False) -> int:
        """How many sandboxes of this project are initializing or ready (quota checks).

        Args:
            skip_creating_here: leave out those still being created by this process (a
                caller that counts its own creates in flight).
        """
        pid = os.getpid()
        return sum(
            1
            for record in self._store.all(statuses=("initializing", "ready"))
            if record.project == self.project
            and not record.deleted
            and not (
                skip_creating_here and record.status == "initializing" and record.owner_pid == pid
            )
        )

    def sweep(self) -> list[str]:
        """Expire overdue sandboxes now (also done on every API call)."""
        return self._expiry.sweep()

    def reconcile(self) -> ReconcileReport:
        """Mark records whose sandbox vanished (releasing all it held) and remove objects of
        the backend that no live sandbox owns."""
        report = reconcile(self.settings, self._store, self._backend, self._resources)
        for blobs in self._shared_blobs:
            report.blobs += [f"{blobs.namespace}/{digest}" for digest in blobs.sweep()]
        return report

    def gc(self) -> tuple[list[str], ReconcileReport]:
        """Expire overdue sandboxes and reconcile; return what changed (the start-up pass's
        findings included, once)."""
        expired = self._expiry.sweep(force=True)
        report = self.reconcile()
        if self._unreported is not None:  # what the start-up pass found counts too
            report = self._unreported.merge(report)
            self._unreported = None
        return expired, report

    def close(self) -> None:
        """Remove this process's warm-pool sandboxes, close kernel connections and the store
        (claimed and created sandboxes keep running). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pause.close()
        self._pool.close()
        self._kernels.close_all()
        self._store.close()
        if self._owns_backend:
            self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
