"""Snapshots: a sandbox's files and kernel variables, kept as an object of their own, and
forks (new sandboxes restored from one).

Trust boundary: the bundle is made by the sandbox (dill, in its kernel) and loaded only by
another sandbox's kernel; the host stores and copies its bytes and parses nothing of it but
the bounded JSON report the sandbox prints.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RequestTooLargeError,
)
from jupyter_sandbox.backends.blobs import Blobs
from jupyter_sandbox.backends.snapshot_kernel import RESTORE_ENTRY, SNAPSHOT_ENTRY, kernel_source
from jupyter_sandbox.backends.snapshot_store import SnapshotRecord, SnapshotStore
from jupyter_sandbox.backends.store import ContainerRecord
from jupyter_sandbox.core.container_files import SandboxContent
from jupyter_sandbox.core.execution import ExecutionService
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container_file import ROOTS
from jupyter_sandbox.types.execution import ErrorOutput, Execution, StreamOutput
from jupyter_sandbox.types.snapshot import (
    RestoreReport,
    Snapshot,
    SnapshotCreateParams,
    SnapshotDeleted,
    SnapshotReport,
)

logger = logging.getLogger(__name__)

BUNDLE_PATH = "/workspace/.jupyter-sandbox-snapshot"
"""Where a sandbox writes (or reads) a bundle: the capped disk, not /tmp (memory)."""
_Report = TypeVar("_Report", bound=BaseModel)
GetRecord = Callable[[str, str], ContainerRecord]


def snapshot_id() -> str:
    """`snap_` + 32 hex."""
    return "snap_" + secrets.token_hex(16)


def to_snapshot(record: SnapshotRecord) -> Snapshot:
    """The API shape of a record."""
    return Snapshot(
        id=record.id,
        container_id=record.container_id,
        name=record.name,
        created_at=int(record.created_at),
        expires_at=int(record.expires_at),
        bytes=record.bytes,
        report=SnapshotReport.model_validate(record.report),
    )


def kernel_call(entry: str, *args: object) -> str:
    """A cell that defines the snapshot code in a namespace of its own (never the user's)
    and calls `entry`: arguments are host values, written as literals."""
    call = f"{entry}({', '.join(repr(a) for a in args)})"
    return f"exec({kernel_source() + chr(10) + call!r}, {{'__name__': 'jupyter_sandbox_snapshot'}})"


class SnapshotService:
    """Create, list, retrieve and delete snapshots; restore one into a new sandbox."""

    def __init__(
        self,
        settings: Settings,
        records: SnapshotStore,
        blobs: Blobs,
        content: SandboxContent | None,
        executions: ExecutionService,
        get_record: GetRecord,
    ) -> None:
        self._settings = settings
        self._records = records
        self._blobs = blobs
        self._content = content
        self._executions = executions
        self._get_record = get_record

    def create(
        self, container_id: str, params: dict[str, Any], *, project: str = "default"
    ) -> Snapshot:
        """Snapshot a ready sandbox at a cell boundary (after any running execution).

        Raises:
            NotFoundError: no such sandbox in this project.
            RequestTooLargeError: the bundle is over `snapshot_max_bytes` (the cap is named).
            ConflictError: the sandbox is not ready, or could not write the bundle.
        """
        request = parse(SnapshotCreateParams, params)
        self.sweep()
        record = self._ready(container_id, project)
        content = self._require_content()
        channel = content.channel(record)
        cap = self._settings.snapshot_max_bytes
        marker = f"JSB-SNAPSHOT-{secrets.token_hex(8)}:"
        try:
            execution = self._executions.execute(
                record,
                kernel_call(SNAPSHOT_ENTRY, BUNDLE_PATH, list(ROOTS), cap, marker),
                timeout=self._settings.snapshot_timeout,
                store_history=False,
            )
            report = self._report(execution, marker, SnapshotReport, "snapshot")
            found = channel.stat(BUNDLE_PATH)
            if found is not None and found.bytes > cap:
                raise self._over_cap(container_id)
            try:
                with channel.open(BUNDLE_PATH) as bundle:
                    digest, size = self._blobs.put(bundle, limit=cap)  # type: ignore[arg-type]
            except RequestTooLargeError:
                raise self._over_cap(container_id) from None
        finally:
            self._remove_bundle(channel, container_id)
        now = time.time()
        stored = self._records.insert(
            SnapshotRecord(
                id=snapshot_id(),
                project=project,
                container_id=record.id,
                name=request.name,
                created_at=now,
                expires_at=now + self._settings.snapshot_expiry_seconds,
                bytes=size,
                sha256=digest,
                report=report.model_dump(mode="json"),
            )
        )
        logger.info("snapshot %s of %s: %d bytes", stored.id, record.id, size)
        return to_snapshot(stored)

    def list(self, container_id: str, *, project: str = "default") -> builtins.list[Snapshot]:
        """A sandbox's snapshots (it may have ended since), oldest first."""
        self.sweep()
        return [to_snapshot(r) for r in self._records.for_container(container_id, project)]

    def retrieve(
        self, container_id: str, snapshot_id: str, *, project: str = "default"
    ) -> Snapshot:
        """One snapshot of a sandbox."""
        return to_snapshot(self._get(snapshot_id, project, container_id))

    def delete(
        self, container_id: str, snapshot_id: str, *, project: str = "default"
    ) -> SnapshotDeleted:
        """Delete a snapshot and, when no other snapshot shares it, its bundle."""
        record = self._get(snapshot_id, project, container_id)
        if self._records.delete(record.id) is None:
            raise _not_found(snapshot_id)
        self._drop_blob(record.sha256)
        return SnapshotDeleted(id=record.id)

    def check(self, snapshot_id: object, project: str) -> SnapshotRecord:
        """The snapshot a create forks (any sandbox of the project), or NotFoundError."""
        if not isinstance(snapshot_id, str):
            raise BadRequestError("Invalid snapshot_id: must be a string", param="snapshot_id")
        self.sweep()
        return self._get(snapshot_id, project, None, param="snapshot_id")

    def restore(self, record: ContainerRecord, snapshot: SnapshotRecord) -> RestoreReport:
        """Copy a bundle into a new sandbox and load it there (files, imports, variables)."""
        channel = self._require_content().channel(record)
        marker = f"JSB-RESTORE-{secrets.token_hex(8)}:"
        with self._blobs.open(snapshot.sha256) as bundle:
            channel.write(BUNDLE_PATH, bundle, limit=snapshot.bytes, size=snapshot.bytes)
        try:
            execution = self._executions.execute(
                record,
                kernel_call(RESTORE_ENTRY, BUNDLE_PATH, list(ROOTS), marker),
                timeout=self._settings.snapshot_timeout,
                store_history=False,
            )
        finally:
            self._remove_bundle(channel, record.id)
        return self._report(execution, marker, RestoreReport, "restore")

    def sweep(self, now: float | None = None) -> builtins.list[str]:
        """Delete expired snapshots; return their ids."""
        gone = []
        for record in self._records.expired(time.time() if now is None else now):
            if self._records.delete(record.id) is not None:
                self._drop_blob(record.sha256)
                gone.append(record.id)
        return gone

    def _ready(self, container_id: str, project: str) -> ContainerRecord:
        record = self._get_record(container_id, project)
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}; only a ready container is snapshotted",
                param="container_id",
            )
        return record

    def _require_content(self) -> SandboxContent:
        if self._content is None:
            raise BadRequestError(
                "Invalid container_id: this service has no file storage for snapshots",
                param="container_id",
            )
        return self._content

    def _get(
        self,
        snapshot_id: str,
        project: str,
        container_id: str | None,
        *,
        param: str = "snapshot_id",
    ) -> SnapshotRecord:
        record = self._records.get(snapshot_id) if isinstance(snapshot_id, str) else None
        if (
            record is None
            or record.project != project
            or (container_id is not None and record.container_id != container_id)
            or record.expires_at <= time.time()
        ):
            raise _not_found(snapshot_id, param)
        return record

    def _drop_blob(self, sha256: str) -> None:
        if not self._records.uses_blob(sha256):
            self._blobs.delete(sha256)

    def _over_cap(self, container_id: str) -> RequestTooLargeError:
        cap = self._settings.snapshot_max_bytes
        return RequestTooLargeError(
            f"The snapshot of {container_id} exceeds the cap of {cap} bytes "
            f"({cap / 2**20:.0f} MiB; the operator can raise `snapshot_max_bytes`)",
            param="container_id",
        )

    def _remove_bundle(self, channel: Any, container_id: str) -> None:
        try:
            channel.delete(BUNDLE_PATH)
        except NotFoundError:
            pass
        except APIError as exc:  # the sandbox may have ended meanwhile; its disk goes with it
            logger.warning("sandbox %s: could not remove a snapshot bundle: %s", container_id, exc)

    def _report(
        self, execution: Execution, marker: str, model: type[_Report], what: str
    ) -> _Report:
        """The sandbox's report after `marker` on stdout, checked; or the sandbox's error."""
        if execution.status != "ok":
            error = next((o for o in execution.outputs if isinstance(o, ErrorOutput)), None)
            detail = f"{error.ename}: {error.evalue}" if error else execution.status
            if error is not None and "snapshot_max_bytes" in error.evalue:
                raise self._over_cap(execution.container_id)
            if error is not None and "'dill'" in error.evalue:
                detail += " (the sandbox's image predates snapshots: `jupyter-sandbox image build`)"
            raise ConflictError(
                f"Container {execution.container_id}: the {what} failed in the sandbox "
                f"({detail[:500]})",
                param="container_id",
            )
        text = "".join(
            o.text for o in execution.outputs if isinstance(o, StreamOutput) and o.name == "stdout"
        )
        _, found, raw = text.rpartition(marker)
        try:
            if not found:
                raise ValueError("no report")
            return model.model_validate(json.loads(raw.partition("\n")[0]))
        except (ValueError, ValidationError) as exc:
            raise ConflictError(
                f"Container {execution.container_id}: the sandbox's {what} report is "
                f"malformed ({str(exc)[:200]})",
                param="container_id",
            ) from None


def _not_found(snapshot_id: object, param: str = "snapshot_id") -> NotFoundError:
    return NotFoundError(f"No snapshot found with id {snapshot_id!r:.100}", param=param)
