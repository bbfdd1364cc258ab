"""The `SandboxFiles` interface that both file channels implement, and what they share.

What a channel must do (`SandboxFiles`), what it reports (`FoundFile`) and returns
(`BinaryContent`, a lazily read stream), the bounded copy (`copy_stream`: `sendfile` or 1 MiB
chunks, never the whole file in memory) and the path refusals both channels raise. The
channels themselves are `host_files.HostFiles` (the mounted disk image) and
`engine_files.EngineFiles` (Docker's archive API); `transfer` gathers them.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from typing import IO, Protocol

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.blobs import CHUNK, too_large
from jupyter_sandbox.types.binary import BinaryContent

SANDBOX_UID = 1000
UPLOAD_PREFIX = ".jsbx-upload-"
"""Name prefix of an upload in flight (in a host-only folder, see `HostFiles`)."""
STALE_UPLOAD_SECONDS = 600
"""An upload temporary file untouched this long is a leftover (a killed host process)."""
MAX_SCAN_ENTRIES = 100_000
"""A listing stops after this many files and folders (an inode flood cannot stall the host)."""
MAX_SCAN_PATH_BYTES = 16 * 2**20
"""... or after this many bytes of paths (bounds the memory one listing holds)."""


@dataclass(frozen=True)
class FoundFile:
    """A regular file seen in the sandbox."""

    path: str
    bytes: int
    mtime: float


@dataclass
class Scan:
    """What one walk of a sandbox's folders found."""

    files: list[FoundFile]
    truncated: str | None = None
    """Why the walk stopped early (a cap was reached), or None if it saw everything."""


class SandboxFiles(Protocol):
    """What the core needs to move files in and out of one sandbox."""

    def write(self, path: str, source: IO[bytes], *, limit: int, size: int | None) -> int:
        """Create or replace the file at `path` with `source`; return its size."""
        ...

    def open(self, path: str) -> BinaryContent:
        """The file's content as a stream."""
        ...

    def stat(self, path: str) -> FoundFile | None:
        """The regular file at `path`, or None."""
        ...

    def delete(self, path: str) -> None:
        """Remove the file at `path` (NotFoundError if absent)."""
        ...

    def scan(self) -> Scan:
        """The regular files under the roots, up to the caps (`Scan.truncated` says so)."""
        ...


def _fileno(stream: IO[bytes]) -> int | None:
    try:
        descriptor = stream.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    return descriptor if stat.S_ISREG(os.fstat(descriptor).st_mode) else None


def copy_stream(source: IO[bytes], sink_fd: int, *, limit: int, size: int | None) -> int:
    """Copy `source` into `sink_fd`, refusing more than `limit` bytes; return the count."""
    source_fd = _fileno(source)
    total = 0
    if source_fd is not None and size is not None:
        offset = source.tell()
        while total < size:
            sent = os.sendfile(sink_fd, source_fd, offset + total, min(size - total, 1 << 30))
            if sent == 0:
                break
            total += sent
        source.seek(offset + total)
        if source.read(1):
            raise too_large(limit)  # it grew while we copied
        return total
    while chunk := source.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        view = memoryview(chunk)
        while view:
            view = view[os.write(sink_fd, view) :]
    return total


def path_refusal(path: str, exc: OSError) -> BadRequestError | NotFoundError:
    """The API error for an `OSError` met while opening `path` (a link, not a folder, ...)."""
    if exc.errno == errno.ENOENT:
        return NotFoundError(f"No file at {path!r} in the container", param="path")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return BadRequestError(
            f"Invalid path {path!r}: it goes through a symbolic link, and links are never followed",
            param="path",
        )
    if exc.errno == errno.ENOTDIR:
        return BadRequestError(f"Invalid path {path!r}: a part of it is not a folder", param="path")
    if exc.errno == errno.EISDIR:
        return BadRequestError(f"Invalid path {path!r}: it is a folder, not a file", param="path")
    return BadRequestError(f"Invalid path {path!r}: {os.strerror(exc.errno or 0)}", param="path")


def bad_path(path: str, message: str) -> BadRequestError:
    """`Invalid path '<path>': <message>`, as a BadRequestError on `path`."""
    return BadRequestError(f"Invalid path {path!r}: {message}", param="path")
