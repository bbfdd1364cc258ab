"""`BinaryContent`: a file's bytes as a lazily read stream (what file downloads return)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import IO, Any

CHUNK = 1 << 20
"""Bytes per read when streaming."""


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
