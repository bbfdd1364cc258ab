"""Content-addressed blobs: each distinct content is stored once.

`Blobs` is what core depends on; `BlobStore` keeps them as files under the state folder (one
machine: the SQLite store), `db_blobs.DatabaseBlobStore` in the shared PostgreSQL store (so
every API server reads what any of them stored). `db_blobs.open_blobs` picks one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from jupyter_sandbox._exceptions import NotFoundError, RequestTooLargeError

CHUNK = 1 << 20


def too_large(limit: int, what: str = "file") -> RequestTooLargeError:
    """The error for an upload over `limit` bytes."""
    return RequestTooLargeError(
        f"The {what} exceeds the size limit of {limit} bytes "
        f"({limit / 2**20:.0f} MiB; the operator can raise `file_size_limit`)",
        param="file",
    )


def check_digest(digest: str) -> str:
    """`digest` if it is a lowercase hex SHA-256 (ValueError otherwise)."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r:.80}")
    return digest


def missing(digest: str) -> NotFoundError:
    """The error for a blob that is not (or no longer) stored."""
    return NotFoundError(f"The content of this object is missing ({digest[:12]})")


class Blobs(Protocol):
    """Where the bytes of files, skill versions and snapshot bundles live, by SHA-256."""

    def put(self, source: IO[bytes], *, limit: int, size: int | None = None) -> tuple[str, int]:
        """Stream `source` in, at most `limit` bytes; return (sha256, bytes). Nothing is kept
        on error (RequestTooLargeError past `limit`)."""

    def open(self, digest: str) -> BinaryIO:
        """The blob, seekable, for reading (NotFoundError if it is missing)."""

    def delete(self, digest: str) -> None:
        """Remove a blob; idempotent."""


class BlobStore:
    """Blobs named by their SHA-256, written through a temporary file and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)

    def path(self, digest: str) -> Path:
        """Where a blob lives (it may not exist)."""
        return self.root / digest[:2] / check_digest(digest)

    def put(self, source: IO[bytes], *, limit: int, size: int | None = None) -> tuple[str, int]:
        """Stream `source` into the store; return (sha256, bytes). Nothing is kept on error.

        Raises:
            RequestTooLargeError: the content is longer than `limit` bytes.
        """
        if size is not None and size > limit:
            raise too_large(limit)
        temporary = self.root / "tmp" / secrets.token_hex(16)
        digest = hashlib.sha256()
        total = 0
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(descriptor, "wb", buffering=0) as sink:
                while chunk := source.read(CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise too_large(limit)
                    digest.update(chunk)
                    sink.write(chunk)
            name = digest.hexdigest()
            final = self.path(name)
            final.parent.mkdir(exist_ok=True, mode=0o700)
            os.replace(temporary, final)  # same content, same name: replacing is harmless
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return name, total

    def open(self, digest: str) -> BinaryIO:
        """The blob for reading."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise missing(digest) from None

    def delete(self, digest: str) -> None:
        """Remove a blob; idempotent."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
