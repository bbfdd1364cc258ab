"""The OpenAI-shaped Python API: `Client().containers.create(...)` and friends."""

from __future__ import annotations

import builtins
import copy
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.blobs import BlobStore
from jupyter_sandbox.backends.disk import Disks
from jupyter_sandbox.backends.egress import EgressProxy
from jupyter_sandbox.backends.file_store import FileStore
from jupyter_sandbox.backends.kernel import SOCKET_PREFIX, connection_info
from jupyter_sandbox.backends.runtime.docker import DockerRuntime
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.client_files import ContainerFiles, Files, Skills
from jupyter_sandbox.core.container_files import ContainerFileService, SandboxContent
from jupyter_sandbox.core.containers import ContainerService
from jupyter_sandbox.core.execution import ExecutionService, OutputCallback
from jupyter_sandbox.core.expiry import Expiry
from jupyter_sandbox.core.files import FileService
from jupyter_sandbox.core.kernels import Kernels
from jupyter_sandbox.core.network import EgressService
from jupyter_sandbox.core.pool import POOL_PROJECT, WarmPool
from jupyter_sandbox.core.reconcile import ReconcileReport, reconcile
from jupyter_sandbox.core.skills import SkillService
from jupyter_sandbox.core.validation import bad_request, check_seconds
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import Container, ContainerDeleted
from jupyter_sandbox.types.egress import EgressDecision
from jupyter_sandbox.types.execution import Execution
from jupyter_sandbox.types.page import CursorPage

_OMIT: Any = object()


@api_errors
class Containers:
    """`client.containers`: create, retrieve, list, delete, and execute code."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.files = ContainerFiles(client)

    def create(
        self,
        *,
        name: str,
        memory_limit: str | None = None,
        file_ids: list[str] | None = None,
        network_policy: dict[str, Any] | None = None,
        skills: list[dict[str, Any]] | None = None,
        expires_after: dict[str, Any] | None = None,
        lifetime_seconds: int | None = None,
    ) -> Container:
        """Create a sandbox and wait until its kernel answers.

        Raises:
            BadRequestError: a parameter is invalid (`param` names it).
            NotFoundError: the kernel image is missing (the message says how to build it).
            APIConnectionError: the Docker engine is unreachable.
        """
        params = {
            key: value
            for key, value in {
                "name": name,
                "memory_limit": memory_limit,
                "file_ids": file_ids,
                "network_policy": network_policy,
                "skills": skills,
                "expires_after": expires_after,
                "lifetime_seconds": lifetime_seconds,
            }.items()
            if value is not None
        }
        self._client.sweep()
        return self._client._containers.create(params, project=self._client.project)

    def retrieve(self, container_id: str) -> Container:
        """One sandbox, by id."""
        self._client.sweep()
        return self._client._containers.retrieve(container_id, project=self._client.project)

    def list(
        self,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        name: str | None = None,
    ) -> CursorPage[Container]:
        """A page of sandboxes (newest first); iterating it walks every page."""
        self._client.sweep()
        params: dict[str, Any] = {"limit": limit, "order": order}
        if after is not None:
            params["after"] = after
        return self._client._containers.list(params, name=name, project=self._client.project)

    def delete(self, container_id: str) -> ContainerDeleted:
        """Stop and remove a sandbox with everything it holds."""
        return self._client._containers.delete(container_id, project=self._client.project)

    def execute(
        self,
        container_id: str,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Execution:
        """Run code in the sandbox's kernel (state persists between calls).

        Args:
            timeout: seconds before the run is interrupted (then the kernel restarted if it
                stays busy); None waits as long as it takes.
            on_output: called with each output as it arrives.
        """
        timeout = check_seconds(timeout, "timeout")  # before anything else: fail fast
        self._client.sweep()
        record = self._client._containers.get_record(container_id, self._client.project)
        return self._client._executions.execute(record, code, timeout=timeout, on_output=on_output)

    def interrupt(self, container_id: str) -> None:
        """Send SIGINT to the sandbox's kernel (what Jupyter's interrupt button does)."""
        record = self._client._containers.get_record(container_id, self._client.project)
        self._client._executions.interrupt(record)

    def restart(self, container_id: str) -> None:
        """Kill every process in the sandbox and start a fresh kernel; files are kept."""
        self._client.sweep()
        record = self._client._containers.get_record(container_id, self._client.project)
        self._client._executions.restart(record)

    def egress_log(self, container_id: str) -> builtins.list[EgressDecision]:
        """Every egress decision (allowed or refused, with the reason) for an allowlist sandbox.

        A refused request appears at once; an allowed HTTPS tunnel when it closes.
        """
        record = self._client._containers.get_record(container_id, self._client.project)
        return self._client._egress.log(record.id)

    def logs(self, container_id: str, *, tail: int = 200) -> str:
        """The sandbox's own log: its supervisor's and kernel's last `tail` lines (at most
        256 KiB; what ipykernel captures goes to executions, not here)."""
        record = self._client._containers.get_record(container_id, self._client.project)
        return self._client._runtime.logs(record.id, 1.0, tail=tail, max_bytes=256 * 2**10)

    def connection_info(self, container_id: str) -> dict[str, Any]:
        """A Jupyter connection dict (ipc transport, host paths) for the sandbox's kernel."""
        record = self._client._containers.get_record(container_id, self._client.project)
        if record.extra.get("kernel_channel") == "tcp":
            raise BadRequestError(
                f"sandbox {container_id} uses the encrypted tcp kernel channel (gVisor), which "
                "Jupyter's relay does not dial yet: use runc with kernel_channel='ipc' for "
                "Jupyter kernels",
                param="kernel_channel",
            )
        return connection_info(f"{record.socket_dir}/{SOCKET_PREFIX}", record.kernel_key)


class Client:
    """Embedded client: the local Docker engine plus a SQLite store; nothing else to start.

    Args:
        home: state folder (default `jupyter_data_dir()/sandbox`, or `JUPYTER_SANDBOX_HOME`).
        project: the tenant whose objects this client sees.
        **settings: any other `Settings` field (image, extra_labels, ...).
    """

    def __init__(
        self,
        *,
        home: str | Path | None = None,
        project: str = "default",
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
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
        self._store = Store(settings.store_path)
        try:
            self._runtime = DockerRuntime(settings)
        except BaseException:
            self._store.close()
            raise
        self._kernels = Kernels(settings, self._runtime)
        records = FileStore(self._store)
        blobs = BlobStore(settings.home / "blobs")
        self._files = FileService(settings, records, blobs)
        self._skills = SkillService(settings, records, blobs)
        content = SandboxContent(
            settings, self._store, records, Disks(settings), self._files, self._skills,
            self._runtime.engine,
        )  # fmt: skip
        self._egress = EgressService(
            settings, self._store, EgressProxy(settings, self._runtime.engine)
        )
        self._containers = ContainerService(
            settings, self._store, self._runtime, self._kernels, content, self._egress
        )
        self._container_files = ContainerFileService(
            settings,
            self._store,
            records,
            content,
            self._files,
            self._containers.get_checked,
            self._containers.failure,
        )
        self._pool = WarmPool(
            settings, self._store, self._containers.boot_for_pool, self._destroy_pooled
        )
        self._containers.attach_pool(self._pool)
        self._executions = ExecutionService(
            settings, self._store, self._kernels, self._containers.failure
        )
        self._expiry = Expiry(self._store, self._containers)
        self.containers = Containers(self)
        self.files = Files(self)
        self.skills = Skills(self)
        self._unreported: ReconcileReport | None = self.reconcile()
        self._pool.start()

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
        """Mark records whose container vanished and remove orphaned Docker objects."""
        return reconcile(self.settings, self._store, self._runtime, self._egress)

    def gc(self) -> tuple[list[str], ReconcileReport]:
        """Expire overdue sandboxes and reconcile; return what changed."""
        expired = self._expiry.sweep(force=True)
        report = self.reconcile()
        if self._unreported is not None:  # what the start-up pass found counts too
            report.marked = [*self._unreported.marked, *report.marked]
            report.removed = [*self._unreported.removed, *report.removed]
            report.socket_dirs = [*self._unreported.socket_dirs, *report.socket_dirs]
            self._unreported = None
        return expired, report

    def close(self) -> None:
        """Remove this process's warm-pool sandboxes, close kernel connections and the store
        (claimed and created sandboxes keep running). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        self._kernels.close_all()
        self._store.close()
        self._runtime.engine.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
