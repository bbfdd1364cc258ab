"""Container files: what a sandbox holds under /mnt/data and /workspace, and its storage.

Files written by code are discovered when the first page of a list is asked for: the host
walks the sandbox's folders (by descriptor, links never followed) and reconciles the records
in one transaction; later pages of that listing read only the records. Walking on list is
always correct (code can write at any time, from any process), costs about 8 ms per
thousand files (5,000: 40 ms for the first page), and nothing runs after executions that
never list.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jupyter_sandbox._exceptions import APIError, BadRequestError, ConflictError, NotFoundError
from jupyter_sandbox.backends.base import Backend, SandboxFiles, StorageGrant
from jupyter_sandbox.backends.file_store import ContainerFileRecord, FileRecord, FileStore
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.files import FileService, open_upload
from jupyter_sandbox.core.resolved_skills import ResolvedSkill, install
from jupyter_sandbox.core.skills import SkillService
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.container_file import (
    DEFAULT_DIR,
    ContainerFile,
    ContainerFileDeleted,
    ContainerFilePage,
    check_path,
)
from jupyter_sandbox.types.page import ListParams, invalid_after
from jupyter_sandbox.types.skill import InstalledSkill

logger = logging.getLogger(__name__)


def to_container_file(record: ContainerFileRecord) -> ContainerFile:
    """API shape of a container-file record."""
    return ContainerFile(
        id=record.id,
        container_id=record.container_id,
        path=record.path,
        bytes=record.bytes,
        created_at=int(record.created_at),
        source=record.source,  # type: ignore[arg-type]
    )


def checked_path(path: Any) -> str:
    """`path` if it is a valid sandbox file path, else BadRequestError naming `path`."""
    try:
        return check_path(path)
    except ValueError as exc:
        raise BadRequestError(f"Invalid path {path!r:.120}: {exc}", param="path") from None


@dataclass
class Plan:
    """What a create asked for, checked before anything is made."""

    files: list[FileRecord] = field(default_factory=list)
    skills: list[ResolvedSkill] = field(default_factory=list)


@dataclass
class Prepared:
    """The storage made for a sandbox, and the skills installed in it."""

    storage: StorageGrant
    skills: list[InstalledSkill]

    @property
    def environment(self) -> dict[str, str]:
        """PYTHONPATH with each skill's folder, so its modules import by name."""
        if not self.skills:
            return {}
        return {"PYTHONPATH": ":".join(skill.path for skill in self.skills)}


class SandboxContent:
    """Storage, file_ids and skills of a sandbox at creation, and its file channel after."""

    def __init__(
        self,
        store: Store,
        records: FileStore,
        backend: Backend,
        files: FileService,
        skills: SkillService,
    ) -> None:
        self._store = store
        self._records = records
        self._backend = backend
        self._files = files
        self._skills = skills

    def plan(self, file_ids: list[str], skills: list[dict[str, Any]], *, project: str) -> Plan:
        """Resolve every file id and skill; an unknown one fails before anything exists."""
        plan = Plan()
        for file_id in file_ids:
            plan.files.append(self._files.get_record(file_id, project=project, param="file_ids"))
        names = [os.path.basename(f.filename) for f in plan.files]
        for name in names:
            checked_path(f"{DEFAULT_DIR}/{name}")
        if len(set(names)) != len(names):
            raise BadRequestError(
                "Invalid file_ids: two files have the same filename", param="file_ids"
            )
        if skills:
            plan.skills = self._skills.resolve(skills, project=project)
        return plan

    def prepare(self, container_id: str, plan: Plan) -> Prepared:
        """Make the storage (the capped disk when possible), install skills, and copy files
        in now if the backend can before the sandbox starts."""
        storage = self._backend.create_storage(container_id)
        prepared = Prepared(storage, install(plan.skills, storage.skills_folder))
        if storage.files_before_start:
            self._copy_files(self._backend.files(container_id, storage.kind), plan, container_id)
        return prepared

    def finish(self, container_id: str, plan: Plan, prepared: Prepared) -> None:
        """After the sandbox started: copy files in if that could not happen before."""
        if not prepared.storage.files_before_start and plan.files:
            channel = self._backend.files(container_id, prepared.storage.kind)
            self._copy_files(channel, plan, container_id)

    def _copy_files(self, channel: SandboxFiles, plan: Plan, container_id: str) -> None:
        for record in plan.files:
            path = f"{DEFAULT_DIR}/{os.path.basename(record.filename)}"
            with self._files.open_blob(record) as blob:
                size = channel.write(path, blob, limit=2**62, size=record.bytes)
            self._records.put_container_file(
                ContainerFileRecord(
                    ids.container_file_id(), container_id, path, size, "user", time.time()
                )
            )

    def forget(self, container_id: str) -> None:
        """Drop the sandbox's file records (after its storage is gone)."""
        self._records.delete_container_files(container_id)

    def channel(self, record: ContainerRecord) -> SandboxFiles:
        """How to reach this sandbox's files."""
        storage = record.extra.get("storage")
        return self._backend.files(record.id, storage if isinstance(storage, str) else None)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _sandbox_errors(method: _Method) -> _Method:
    """Map any failure of a files call through the service's `failure` (one boundary): a
    sandbox deleted or dead under the call is a ConflictError, never a raw error."""

    @functools.wraps(method)
    def mapped(self: ContainerFileService, container_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, container_id, *args, **kwargs)
        except APIError as exc:
            if isinstance(exc, BadRequestError | NotFoundError) or self._failure is None:
                raise
            raise self._failure(container_id, exc) from exc
        except Exception as exc:
            if self._failure is None:
                raise
            raise self._failure(container_id, exc) from exc

    return mapped  # type: ignore[return-value]


class ContainerFileService:
    """Upload, list, read and delete files in a ready sandbox."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        records: FileStore,
        content: SandboxContent,
        files: FileService,
        get_record: Any,
        failure: Callable[[str, BaseException], APIError] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._records = records
        self._content = content
        self._files = files
        self._get_record = get_record
        self._failure = failure

    def _ready(self, container_id: str, project: str) -> ContainerRecord:
        record: ContainerRecord = self._get_record(container_id, project=project)
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}"
                + (f" ({record.error})" if record.error and not record.is_live else "")
                + "; files need a ready container",
                param="container_id",
            )
        self._store.touch(record.id)
        return record

    @_sandbox_errors
    def create(
        self,
        container_id: str,
        *,
        file: Any = None,
        file_id: str | None = None,
        path: str | None = None,
        project: str,
    ) -> ContainerFile:
        """Put a local file, bytes, a stream, or an uploaded file (`file_id`) at `path`."""
        if (file is None) == (file_id is None):
            raise BadRequestError("Give exactly one of file and file_id", param="file")
        record = self._ready(container_id, project)
        channel = self._content.channel(record)
        if file_id is not None:
            source = self._files.get_record(file_id, project=project)
            target = checked_path(path or f"{DEFAULT_DIR}/{os.path.basename(source.filename)}")
            with self._files.open_blob(source) as blob:
                size = channel.write(target, blob, limit=2**62, size=source.bytes)
        else:
            with open_upload(file) as upload:
                target = checked_path(path or f"{DEFAULT_DIR}/{os.path.basename(upload.name)}")
                size = channel.write(
                    target, upload.stream, limit=self._settings.file_size_limit, size=upload.size
                )
        stored = self._records.put_container_file(
            ContainerFileRecord(
                ids.container_file_id(), record.id, target, size, "user", time.time()
            )
        )
        return to_container_file(stored)

    def _file(self, record: ContainerRecord, file_id: str) -> ContainerFileRecord:
        found = (
            self._records.get_container_file(record.id, file_id)
            if isinstance(file_id, str)
            else None
        )
        if found is None:
            raise NotFoundError(f"No file {file_id!r} in container {record.id}", param="file_id")
        return found

    @_sandbox_errors
    def retrieve(self, container_id: str, file_id: str, *, project: str) -> ContainerFile:
        """One file's metadata (its size as it is now)."""
        record = self._ready(container_id, project)
        found = self._file(record, file_id)
        now = self._content.channel(record).stat(found.path)
        if now is None:
            self._records.delete_container_file(record.id, found.id)
            raise NotFoundError(
                f"File {file_id!r} no longer exists in the container", param="file_id"
            )
        return to_container_file(ContainerFileRecord(**{**found.__dict__, "bytes": now.bytes}))

    @_sandbox_errors
    def content(self, container_id: str, file_id: str, *, project: str) -> BinaryContent:
        """The file's bytes as a stream (a link at its path is refused, never followed)."""
        record = self._ready(container_id, project)
        return self._content.channel(record).open(self._file(record, file_id).path)

    @_sandbox_errors
    def delete(self, container_id: str, file_id: str, *, project: str) -> ContainerFileDeleted:
        """Remove the file from the sandbox and forget it."""
        record = self._ready(container_id, project)
        found = self._file(record, file_id)
        with contextlib.suppress(NotFoundError):  # already gone: only forgetting is left
            self._content.channel(record).delete(found.path)
        self._records.delete_container_file(record.id, found.id)
        return ContainerFileDeleted(id=found.id)

    def sync(self, record: ContainerRecord) -> str | None:
        """Reconcile the records with the files present (one walk, one transaction).

        Returns why the walk was truncated (a cap was reached), or None. A truncated walk
        adds and resizes what it saw but forgets nothing (unseen files may still exist).
        """
        scan = self._content.channel(record).scan()
        found = scan.files
        if scan.truncated is not None:
            logger.warning(
                "listing %s stopped early: %s (%d files listed)",
                record.id,
                scan.truncated,
                len(found),
            )
        known = self._records.container_files(record.id)
        now = time.time()
        add: list[ContainerFileRecord] = []
        resize: list[tuple[str, int]] = []
        for item in found:
            existing = known.pop(item.path, None)
            if existing is None:
                created = min(max(item.mtime, record.created_at), now)
                add.append(
                    ContainerFileRecord(
                        ids.container_file_id(),
                        record.id,
                        item.path,
                        item.bytes,
                        "assistant",
                        created,
                    )
                )
            elif existing.bytes != item.bytes:
                resize.append((existing.id, item.bytes))
        drop = [r.id for r in known.values()] if scan.truncated is None else []
        self._records.sync_container_files(record.id, add=add, resize=resize, drop=drop)
        return scan.truncated

    @_sandbox_errors
    def list(self, container_id: str, params: dict[str, Any], *, project: str) -> ContainerFilePage:
        """A page of the sandbox's files (newest first); the first page looks at the disk
        (and says in `truncated` if the walk reached a cap)."""
        query = parse(ListParams, params)
        record = self._ready(container_id, project)
        truncated = self.sync(record) if query.after is None else None
        try:
            records, more = self._records.container_files_page(
                record.id, limit=query.limit, order=query.order, after=query.after
            )
        except LookupError:
            raise invalid_after(query.after, "file in this container") from None
        data = [to_container_file(r) for r in records]
        page = ContainerFilePage(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
            truncated=truncated,
        )
        page.with_next(
            lambda after: self.list(container_id, {**params, "after": after}, project=project)
        )
        return page


__all__ = ["ContainerFileService", "Plan", "Prepared", "SandboxContent"]
