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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.blobs import CHUNK, too_large

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


class BinaryContent:
    """A file's bytes, read lazily (like the openai SDK's binary response content)."""

    def __init__(self, stream: IO[bytes], size: int | None, cleanup: Any = None) -> None:
        self._stream = stream
        self.size = size
        """The length in bytes, when known."""
        self._cleanup = cleanup

    def read(self, size: int = -1) -> bytes:
        """Read `size` bytes, or everything left and close (the seed's `content.read()`)."""
        if size is not None and size >= 0:
            return self._stream.read(size)
        try:
            return self._stream.read()
        finally:
            self.close()

    @property
    def content(self) -> bytes:
        """Everything left, as bytes."""
        return self.read()

    @property
    def text(self) -> str:
        """Everything left, decoded as UTF-8."""
        return self.read().decode("utf-8", "replace")

    def iter_bytes(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The bytes in chunks; closes the stream at the end."""
        try:
            while chunk := self._stream.read(chunk_size):
                yield chunk
        finally:
            self.close()

    def write_to_file(self, file: str | os.PathLike[str]) -> int:
        """Stream the content into a local file; return the bytes written."""
        total = 0
        with open(file, "wb") as sink:
            source_fd = _fileno(self._stream)
            if source_fd is not None:
                while sent := os.sendfile(sink.fileno(), source_fd, None, 1 << 30):
                    total += sent
            else:
                for chunk in self.iter_bytes():
                    sink.write(chunk)
                    total += len(chunk)
        self.close()
        return total

    def close(self) -> None:
        """Release the file (or connection)."""
        self._stream.close()
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup()

    def __enter__(self) -> BinaryContent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
