"""Moving bytes in and out of a sandbox's /mnt/data and /workspace, safely and streaming.

Two channels, one interface (`SandboxFiles`):

- `HostFiles` (loop mode, the default as root): the host opens files on the sandbox's mounted
  disk image directly. Every path is walked one name at a time from the root folder with
  `O_NOFOLLOW` relative to the parent's descriptor, so a symbolic link planted by sandbox code
  is refused (never followed, on the host or anywhere), even if it is swapped in mid-walk.
  FIFOs and devices are refused (`O_NONBLOCK`, then `fstat` must say regular file).
  Bytes move with `sendfile` or 1 MiB chunks: nothing is held in memory whole.
- `EngineFiles` (volume mode): Docker's archive API, with only uncompressed tar built by us on
  upload (compressed uploads have run the container's decompressors as host root) and, on
  download, the tar read as a stream on the host: one member, vetted by `tarfile`'s `data`
  filter, a regular file, within the byte cap. Listing and deleting run `find`/`rm` in the
  sandbox as its own user, so any link resolves inside the container, never on the host.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import docker
import docker.errors

from jupyter_sandbox._exceptions import (
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RequestTooLargeError,
)
from jupyter_sandbox.backends.blobs import CHUNK, too_large
from jupyter_sandbox.types.container_file import ROOTS, check_path, is_valid_name, split_root

SANDBOX_UID = 1000
UPLOAD_PREFIX = ".jsbx-upload-"
MAX_SCAN_FILES = 100_000
"""A listing stops after this many files (an inode flood cannot stall the host)."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FoundFile:
    """A regular file seen in the sandbox."""

    path: str
    bytes: int
    mtime: float


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

    def scan(self) -> list[FoundFile]:
        """Every regular file under the roots."""
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


def _refusal(path: str, exc: OSError) -> BadRequestError | NotFoundError:
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


def _bad(path: str, message: str) -> BadRequestError:
    return BadRequestError(f"Invalid path {path!r}: {message}", param="path")


class HostFiles:
    """Files of a sandbox whose roots are host folders (the mounted, capped disk image)."""

    def __init__(self, roots: dict[str, Path], *, disk_limit: int | None = None) -> None:
        self._roots = roots
        self._disk_limit = disk_limit

    def _walk(self, path: str, *, create: bool) -> tuple[int, str]:
        """(descriptor of the parent folder, final name); every step refuses links."""
        root, parts = split_root(check_path(path))
        descriptor = os.open(self._roots[root], _DIR_FLAGS)
        try:
            for name in parts[:-1]:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=descriptor)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=descriptor)
                    child = os.open(name, _DIR_FLAGS, dir_fd=descriptor)
                    os.fchown(child, SANDBOX_UID, SANDBOX_UID)
                os.close(descriptor)
                descriptor = child
        except OSError as exc:
            os.close(descriptor)
            raise _refusal(path, exc) from None
        return descriptor, parts[-1]

    def write(self, path: str, source: IO[bytes], *, limit: int, size: int | None) -> int:
        """Write through a temporary name, then rename over the target (never through it)."""
        if size is not None and size > limit:
            raise too_large(limit)
        parent, name = self._walk(path, create=True)
        temporary = UPLOAD_PREFIX + secrets.token_hex(8)
        try:
            with contextlib.suppress(FileNotFoundError):
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    # Refused for clarity; a link swapped in later would still only be
                    # replaced by the rename below, never written through.
                    raise OSError(errno.ELOOP, "a symbolic link")
                if stat.S_ISDIR(mode):
                    raise OSError(errno.EISDIR, "a folder")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            descriptor = os.open(temporary, flags, 0o644, dir_fd=parent)
            try:
                os.fchown(descriptor, SANDBOX_UID, SANDBOX_UID)
                written = copy_stream(source, descriptor, limit=limit, size=size)
            finally:
                os.close(descriptor)
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RequestTooLargeError(
                    f"The container's disk is full (cap {self._disk_limit} bytes)", param="file"
                ) from None
            if isinstance(exc, OSError) and not isinstance(exc, RequestTooLargeError):
                raise _refusal(path, exc) from None
            raise
        finally:
            os.close(parent)
        return written

    def _open_file(self, path: str) -> int:
        parent, name = self._walk(path, create=False)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            descriptor = os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            raise _refusal(path, exc) from None
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise _bad(path, "it is not a regular file")
        return descriptor

    def open(self, path: str) -> BinaryContent:
        """A stream of the file (opened once: later swaps of the path do not matter)."""
        descriptor = self._open_file(path)
        return BinaryContent(os.fdopen(descriptor, "rb"), os.fstat(descriptor).st_size)

    def stat(self, path: str) -> FoundFile | None:
        """The regular file at `path`, or None."""
        try:
            descriptor = self._open_file(path)
        except NotFoundError:
            return None
        try:
            info = os.fstat(descriptor)
        finally:
            os.close(descriptor)
        return FoundFile(path, info.st_size, info.st_mtime)

    def delete(self, path: str) -> None:
        """Unlink the name (a link is removed itself, never followed)."""
        parent, name = self._walk(path, create=False)
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise _bad(path, "it is a folder, not a file")
            os.unlink(name, dir_fd=parent)
        except OSError as exc:
            raise _refusal(path, exc) from None
        finally:
            os.close(parent)

    def scan(self) -> list[FoundFile]:
        """Regular files under both roots, walked by descriptor without following links."""
        found: list[FoundFile] = []
        for root in ROOTS:
            stack = [(os.open(self._roots[root], _DIR_FLAGS), root)]
            while stack:
                descriptor, prefix = stack.pop()
                try:
                    with os.scandir(descriptor) as entries:
                        for entry in entries:
                            if len(found) >= MAX_SCAN_FILES:
                                break
                            if not is_valid_name(entry.name, len(prefix.encode())):
                                continue  # not addressable through the API
                            path = f"{prefix}/{entry.name}"
                            try:
                                if entry.is_dir(follow_symlinks=False):
                                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=descriptor)
                                    stack.append((child, path))
                                elif entry.is_file(follow_symlinks=False):
                                    if entry.name.startswith(UPLOAD_PREFIX):
                                        continue
                                    info = entry.stat(follow_symlinks=False)
                                    found.append(FoundFile(path, info.st_size, info.st_mtime))
                            except (ValueError, OSError):
                                continue  # unaddressable name, or it changed under us
                finally:
                    os.close(descriptor)
        return found


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks (for `tarfile` in stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def tar_stream(parts: list[str], source: IO[bytes], size: int, *, mtime: float) -> Iterator[bytes]:
    """An uncompressed tar of `parts[-1]` inside folders `parts[:-1]`, owned by the sandbox."""
    for depth in range(1, len(parts)):
        folder = tarfile.TarInfo("/".join(parts[:depth]))
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
        folder.uid = folder.gid = SANDBOX_UID
        yield folder.tobuf(format=tarfile.PAX_FORMAT)
    member = tarfile.TarInfo("/".join(parts))
    member.size, member.mode, member.mtime = size, 0o644, int(mtime)
    member.uid = member.gid = SANDBOX_UID
    yield member.tobuf(format=tarfile.PAX_FORMAT)
    remaining = size
    while remaining:
        chunk = source.read(min(CHUNK, remaining))
        if not chunk:
            raise BadRequestError(
                "The upload ended early (the file shrank while read)", param="file"
            )
        remaining -= len(chunk)
        yield chunk
    if source.read(1):
        raise BadRequestError("The upload grew while it was read", param="file")
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


class EngineFiles:
    """Files of a sandbox on plain Docker volumes, through the engine's archive and exec APIs."""

    def __init__(self, engine: docker.DockerClient, container_name: str, *, spool: Path) -> None:
        self._api = engine.api
        self._name = container_name
        self._spool = spool

    def _exec(self, *command: str) -> tuple[int, bytes, bytes]:
        try:
            created = self._api.exec_create(self._name, list(command), user=f"{SANDBOX_UID}")
            stdout, stderr = self._api.exec_start(created["Id"], demux=True)
            code = self._api.exec_inspect(created["Id"])["ExitCode"]
        except docker.errors.NotFound:
            raise NotFoundError("The container is not running", param="container_id") from None
        return int(code or 0), stdout or b"", stderr or b""

    def write(self, path: str, source: IO[bytes], *, limit: int, size: int | None) -> int:
        """Send an uncompressed tar that we build, member by member, as a stream."""
        root, parts = split_root(check_path(path))
        if size is None:
            return self._write_spooled(path, source, limit=limit)
        if size > limit:
            raise too_large(limit)
        try:
            self._api.put_archive(
                self._name, root, tar_stream(parts, source, size, mtime=time.time())
            )
        except docker.errors.APIError as exc:
            raise _bad(path, f"the engine refused: {exc.explanation}") from None
        return size

    def _write_spooled(self, path: str, source: IO[bytes], *, limit: int) -> int:
        self._spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=self._spool) as spool:
            size = copy_stream(source, spool.fileno(), limit=limit, size=None)
            spool.seek(0)
            return self.write(path, spool, limit=limit, size=size)

    def open(self, path: str) -> BinaryContent:
        """Read the file's tar as a stream; refuse anything but one regular file."""
        check_path(path)
        try:
            chunks, info = self._api.get_archive(self._name, path, chunk_size=CHUNK)
        except docker.errors.NotFound:
            raise NotFoundError(f"No file at {path!r} in the container", param="path") from None
        except docker.errors.APIError as exc:
            raise _bad(path, f"the engine refused: {exc.explanation}") from None
        if info.get("linkTarget") or not stat.S_ISREG(_go_mode(int(info.get("mode", 0)))):
            raise _bad(path, "it is not a regular file (links are never followed)")
        reader = io.BufferedReader(_ChunkReader(iter(chunks)), CHUNK)
        archive = tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK)  # noqa: SIM115 (closed with the content)
        try:
            member = archive.next()
            if member is None:
                raise _bad(path, "the engine sent an empty archive")
            try:
                # The data filter refuses absolute names, `..`, links and devices.
                member = tarfile.data_filter(member, "/nonexistent")
            except tarfile.FilterError as exc:
                raise _bad(path, f"unsafe archive member: {exc}") from None
            if not member.isreg() or member.size != int(info.get("size", -1)):
                raise _bad(path, "it is not a regular file")
            stream = archive.extractfile(member)
            if stream is None:
                raise _bad(path, "it is not a regular file")
        except BaseException:
            archive.close()
            raise
        return BinaryContent(stream, member.size, cleanup=archive.close)

    def stat(self, path: str) -> FoundFile | None:
        """The regular file at `path`, or None."""
        check_path(path)
        code, out, _ = self._exec("/usr/bin/stat", "-c", "%F\t%s\t%Y", "--", path)
        kind, _, rest = out.decode(errors="replace").strip().partition("\t")
        if code != 0 or (kind != "regular file" and kind != "regular empty file"):
            return None
        size, _, mtime = rest.partition("\t")
        return FoundFile(path, int(size), float(mtime))

    def delete(self, path: str) -> None:
        """`rm` in the sandbox, as its user."""
        check_path(path)
        if self.stat(path) is None:
            raise NotFoundError(f"No file at {path!r} in the container", param="path")
        code, _, err = self._exec("/bin/rm", "-f", "--", path)
        if code != 0:
            raise InternalServerError(f"cannot delete {path!r}: {err.decode(errors='replace')}")

    def scan(self) -> list[FoundFile]:
        """`find` in the sandbox, as its user (links are not followed: `-type f`)."""
        _, out, _ = self._exec(
            "/usr/bin/find", *ROOTS, "-xdev", "-type", "f", "-printf", "%s\\t%T@\\t%p\\0"
        )
        found: list[FoundFile] = []
        for record in out.split(b"\0"):
            size, _, rest = record.partition(b"\t")
            mtime, _, raw_path = rest.partition(b"\t")
            try:
                path = check_path(raw_path.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if path.rpartition("/")[2].startswith(UPLOAD_PREFIX):
                continue
            found.append(FoundFile(path, int(size), float(mtime)))
            if len(found) >= MAX_SCAN_FILES:
                break
        return found


def _go_mode(mode: int) -> int:
    """Docker's stat header carries Go's os.FileMode; turn it into a POSIX st_mode."""
    go_dir, go_symlink, go_other = 1 << 31, 1 << 27, (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21)
    if mode & go_dir:
        return stat.S_IFDIR
    if mode & go_symlink:
        return stat.S_IFLNK
    if mode & go_other:
        return stat.S_IFIFO
    return stat.S_IFREG | (mode & 0o777)
