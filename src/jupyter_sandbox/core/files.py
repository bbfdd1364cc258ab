"""Files (`client.files`): upload once, keep as a content-addressed blob, copy into sandboxes."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.blobs import Blobs
from jupyter_sandbox.backends.file_store import FileRecord, FileStore
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.file import FileDeleted, FileObject, FilePurpose, reported_purpose
from jupyter_sandbox.types.page import CursorPage, invalid_after


@dataclass
class Upload:
    """An opened upload: its name, a binary stream and its size when known."""

    name: str
    stream: IO[bytes]
    size: int | None


@contextlib.contextmanager
def open_upload(file: Any, *, param: str = "file") -> Iterator[Upload]:
    """Open whatever the caller passed as a stream (a path is opened here and closed after)."""
    name: str | None = None
    if isinstance(file, tuple):
        if len(file) < 2 or not isinstance(file[0], str):
            raise BadRequestError(
                f"Invalid {param}: a tuple must be (filename, content)", param=param
            )
        name, file = file[0], file[1]
    if isinstance(file, str):
        raise BadRequestError(
            f"Invalid {param}: pass a pathlib.Path, bytes or a binary file, not a str", param=param
        )
    if isinstance(file, os.PathLike):
        path = Path(file)
        try:
            stream: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise BadRequestError(
                f"Invalid {param}: cannot read {path}: {exc.strerror}", param=param
            ) from None
        with stream:
            if not os.path.isfile(path):
                raise BadRequestError(f"Invalid {param}: {path} is not a regular file", param=param)
            yield Upload(name or path.name, stream, os.fstat(stream.fileno()).st_size)
        return
    if isinstance(file, bytes | bytearray | memoryview):
        data = bytes(file)
        yield Upload(name or "upload", io.BytesIO(data), len(data))
        return
    if hasattr(file, "read"):
        size = _remaining(file)
        raw_name = getattr(file, "name", None)
        default = os.path.basename(raw_name) if isinstance(raw_name, str) else "upload"
        yield Upload(name or default, file, size)
        return
    raise BadRequestError(f"Invalid {param}: expected a path, bytes or a binary file", param=param)


def _remaining(stream: Any) -> int | None:
    try:
        if stream.seekable():
            position = stream.tell()
            end = stream.seek(0, os.SEEK_END)
            stream.seek(position)
            return int(end - position)
    except (OSError, AttributeError, ValueError):
        return None
    return None


class FileListParams(BaseModel):
    """`/v1/files` list parameters (its limit goes to 10000)."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=10000, ge=1, le=10000)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    purpose: str | None = None


class FileCreateParams(BaseModel):
    """`/v1/files` create parameters besides the content."""

    model_config = ConfigDict(extra="forbid")
    purpose: FilePurpose
    expires_after: dict[Literal["anchor", "seconds"], Any] | None = None


def to_file(record: FileRecord) -> FileObject:
    """The API shape of a file record."""
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=int(record.created_at),
        filename=record.filename,
        purpose=reported_purpose(record.purpose),
        expires_at=int(record.expires_at) if record.expires_at else None,
    )


class FileService:
    """Create, retrieve, list, read and delete uploaded files."""

    def __init__(self, settings: Settings, records: FileStore, blobs: Blobs) -> None:
        self._settings = settings
        self._records = records
        self._blobs = blobs

    def create(
        self,
        file: Any,
        *,
        purpose: str,
        expires_after: Mapping[str, object] | None = None,
        project: str,
    ) -> FileObject:
        """Store an upload (streamed and hashed; refused past `file_size_limit`)."""
        params = parse(FileCreateParams, {"purpose": purpose, "expires_after": expires_after})
        now = time.time()
        expires_at = None
        if params.expires_after is not None:
            seconds = params.expires_after.get("seconds")
            if params.expires_after.get("anchor", "created_at") != "created_at" or not (
                isinstance(seconds, int) and 3600 <= seconds <= 2592000
            ):
                raise BadRequestError(
                    "Invalid expires_after: expected {'anchor': 'created_at', 'seconds': "
                    "3600..2592000}",
                    param="expires_after",
                )
            expires_at = now + seconds
        with open_upload(file) as upload:
            digest, size = self._blobs.put(
                upload.stream, limit=self._settings.file_size_limit, size=upload.size
            )
        record = FileRecord(
            id=ids.file_id(),
            project=project,
            filename=os.path.basename(upload.name) or "upload",
            purpose=params.purpose,
            bytes=size,
            sha256=digest,
            created_at=now,
            expires_at=expires_at,
        )
        return to_file(self._records.add_file(record))

    def get_record(self, file_id: str, *, project: str, param: str = "file_id") -> FileRecord:
        """The visible record of a file, or NotFoundError."""
        record = self._records.get_file(file_id) if isinstance(file_id, str) else None
        if record is not None and record.expires_at is not None and record.expires_at < time.time():
            self._forget(record)
            record = None
        if record is None or record.project != project:
            raise NotFoundError(f"No file found with id {file_id!r}", param=param)
        return record

    def retrieve(self, file_id: str, *, project: str) -> FileObject:
        """One file's metadata."""
        return to_file(self.get_record(file_id, project=project))

    def list(self, params: dict[str, Any], *, project: str) -> CursorPage[FileObject]:
        """A page of files, newest first by default; iterate it to walk every page."""
        query = parse(FileListParams, params)
        try:
            records, has_more = self._records.files_page(
                project,
                limit=query.limit,
                order=query.order,
                after=query.after,
                purpose=query.purpose,
            )
        except LookupError:
            raise invalid_after(query.after, "file") from None
        data = [to_file(r) for r in records]
        page = CursorPage[FileObject](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )
        return page.with_next(lambda after: self.list({**params, "after": after}, project=project))

    def content(self, file_id: str, *, project: str) -> BinaryContent:
        """The file's bytes, as a stream."""
        record = self.get_record(file_id, project=project)
        return BinaryContent(self._blobs.open(record.sha256), record.bytes)

    def open_blob(self, record: FileRecord) -> IO[bytes]:
        """A stream of a file's bytes (for copying into a sandbox)."""
        return self._blobs.open(record.sha256)

    def delete(self, file_id: str, *, project: str) -> FileDeleted:
        """Forget the file; its blob goes when nothing else holds it."""
        self._forget(self.get_record(file_id, project=project))
        return FileDeleted(id=file_id)

    def _forget(self, record: FileRecord) -> None:
        self._records.delete_file(record.id)
        if not self._records.blob_in_use(record.sha256):
            self._blobs.delete(record.sha256)
