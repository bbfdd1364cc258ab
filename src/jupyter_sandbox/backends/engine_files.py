"""The archive-API channel: a sandbox's files on Docker volumes, moved through the engine.

`EngineFiles` (volume mode) uses Docker's archive API, with only uncompressed tar built by us
on upload (compressed uploads have run the container's decompressors as host root) and, on
download, the tar read as a stream on the host: one member, vetted by `tarfile`'s `data`
filter, a regular file, within the byte cap. Listing and deleting run `find`/`rm` in the
sandbox as its own user, so any link resolves inside the container, never on the host.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from jupyter_sandbox._exceptions import BadRequestError, InternalServerError, NotFoundError
from jupyter_sandbox.backends.blobs import CHUNK, too_large
from jupyter_sandbox.backends.exec_output import run_exec
from jupyter_sandbox.backends.sandbox_files import (
    MAX_SCAN_ENTRIES,
    MAX_SCAN_PATH_BYTES,
    SANDBOX_UID,
    STALE_UPLOAD_SECONDS,
    UPLOAD_PREFIX,
    FoundFile,
    Scan,
    bad_path,
    copy_stream,
    path_refusal,
)
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.container_file import ROOTS, check_path, split_root

# The upload's last step, as the sandbox user: a link or folder at the target is refused (as
# `HostFiles` does); a link swapped in after the test is only replaced by the rename
# (`mv -T`), never written through.
_REPLACE = (
    f'if [ -d "$2" ] && [ ! -L "$2" ]; then exit {errno.EISDIR}; fi; '
    'p="$2"; while [ "$p" != /mnt/data ] && [ "$p" != /workspace ] && [ "$p" != / ]; do '
    f'if [ -L "$p" ]; then exit {errno.ELOOP}; fi; p=$(dirname -- "$p"); done; '
    'exec /bin/mv -fT -- "$1" "$2"'
)
"""Move the staged upload into place unless the target or a folder above it (inside the
sandbox's roots) is a link, or the target is a folder: links are never followed."""

# Paths plus their sizes and times: the path budget, with room for the other fields.
_SCAN_OUTPUT_BYTES = MAX_SCAN_PATH_BYTES + 64 * (MAX_SCAN_ENTRIES + 1)
_EXEC_OUTPUT_BYTES = 64 * 1024
"""What the host reads of `stat`, `mv` or `rm` (sandbox code can write into their output)."""
EXEC_TIMEOUT = 120.0
"""Seconds the host waits for one exec's output in all (sandbox code can hold it open)."""
_COUNT = re.compile(rb"[0-9]{1,18}")
_STAMP = re.compile(rb"[0-9]{1,12}(\.[0-9]{0,10})?")


def _size_and_time(size: bytes, mtime: bytes) -> tuple[int, float] | None:
    """A size and a modification time as `find` and `stat` print them; None for anything
    else (the sandbox can write what it likes into their output: no sign, NaN, exponent)."""
    if _COUNT.fullmatch(size) is None or _STAMP.fullmatch(mtime) is None:
        return None
    return int(size), float(mtime)


def parse_find(out: bytes) -> Scan:
    """The files in `find`'s NUL-separated `type\\tsize\\tmtime\\tpath` records, within the caps."""
    found: list[FoundFile] = []
    records = out.split(b"\0")
    # A last record without its NUL was cut by `head -c`: the output reached the byte cap.
    truncated = f"more than {MAX_SCAN_PATH_BYTES} bytes of paths" if records[-1] else None
    entries = path_bytes = 0
    for record in records[:-1]:
        kind, _, rest = record.partition(b"\t")
        size, _, rest = rest.partition(b"\t")
        mtime, _, raw_path = rest.partition(b"\t")
        entries += 1
        path_bytes += len(raw_path)
        if entries > MAX_SCAN_ENTRIES:
            truncated = f"more than {MAX_SCAN_ENTRIES} files and folders"
            break
        if path_bytes > MAX_SCAN_PATH_BYTES:
            truncated = f"more than {MAX_SCAN_PATH_BYTES} bytes of paths"
            break
        numbers = _size_and_time(size, mtime)
        if kind != b"f" or numbers is None:
            continue
        try:
            path = check_path(raw_path.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        found.append(FoundFile(path, *numbers))
    return Scan(found, truncated)


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

    def _exec(self, *command: str, limit: int = _EXEC_OUTPUT_BYTES) -> tuple[int, bytes, bytes]:
        """Exit code (-1 if the output was cut: over `limit`, or held open past
        `EXEC_TIMEOUT`), stdout and stderr's tail."""
        try:
            done = run_exec(
                self._api,
                self._name,
                list(command),
                user=f"{SANDBOX_UID}",
                limit=limit,
                timeout=EXEC_TIMEOUT,
            )
        except docker.errors.NotFound:
            raise NotFoundError("The container is not running", param="container_id") from None
        code = done.code if done.complete and done.code is not None else -1
        return code, done.stdout, done.stderr

    def write(self, path: str, source: IO[bytes], *, limit: int, size: int | None) -> int:
        """Send an uncompressed tar that we build, member by member, as a stream, to a
        temporary name beside the target, then `mv` it into place in the sandbox, as its
        user. An interrupted upload (the engine extracts as it receives) is removed at once;
        one left by a killed process is removed by the next listing once 10 minutes stale."""
        root, parts = split_root(check_path(path))
        if size is None:
            return self._write_spooled(path, source, limit=limit)
        if size > limit:
            raise too_large(limit)
        staged = [*parts[:-1], UPLOAD_PREFIX + secrets.token_hex(8)]
        staged_path = f"{root}/{'/'.join(staged)}"
        try:
            try:
                self._api.put_archive(
                    self._name, root, tar_stream(staged, source, size, mtime=time.time())
                )
            except docker.errors.APIError as exc:
                raise bad_path(path, f"the engine refused: {exc.explanation}") from None
            code, _, err = self._exec("/bin/sh", "-c", _REPLACE, "mv", staged_path, path)
            if code in (errno.ELOOP, errno.EISDIR):
                raise path_refusal(path, OSError(code, os.strerror(code)))
            if code != 0:
                raise bad_path(path, err.decode(errors="replace").strip() or "cannot replace it")
        except BaseException:
            with contextlib.suppress(Exception):
                self._exec("/bin/rm", "-f", "--", staged_path)
            raise
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
            raise bad_path(path, f"the engine refused: {exc.explanation}") from None
        if info.get("linkTarget") or not stat.S_ISREG(_go_mode(int(info.get("mode", 0)))):
            raise bad_path(path, "it is not a regular file (links are never followed)")
        reader = io.BufferedReader(_ChunkReader(iter(chunks)), CHUNK)
        archive = tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK)  # noqa: SIM115 (closed with the content)
        try:
            member = archive.next()
            if member is None:
                raise bad_path(path, "the engine sent an empty archive")
            try:
                # The data filter refuses absolute names, `..`, links and devices.
                member = tarfile.data_filter(member, "/nonexistent")
            except tarfile.FilterError as exc:
                raise bad_path(path, f"unsafe archive member: {exc}") from None
            if not member.isreg() or member.size != int(info.get("size", -1)):
                raise bad_path(path, "it is not a regular file")
            stream = archive.extractfile(member)
            if stream is None:
                raise bad_path(path, "it is not a regular file")
        except BaseException:
            archive.close()
            raise
        return BinaryContent(stream, member.size, cleanup=archive.close)

    def stat(self, path: str) -> FoundFile | None:
        """The regular file at `path`, or None."""
        check_path(path)
        code, out, _ = self._exec("/usr/bin/stat", "-c", "%F\t%s\t%Y", "--", path)
        kind, _, rest = out.strip().partition(b"\t")
        if code != 0 or (kind != b"regular file" and kind != b"regular empty file"):
            return None
        size, _, mtime = rest.partition(b"\t")
        numbers = _size_and_time(size, mtime)
        if numbers is None:
            raise bad_path(path, "the sandbox's `stat` answered nonsense")
        return FoundFile(path, *numbers)

    def delete(self, path: str) -> None:
        """`rm` in the sandbox, as its user."""
        check_path(path)
        if self.stat(path) is None:
            raise NotFoundError(f"No file at {path!r} in the container", param="path")
        code, _, err = self._exec("/bin/rm", "-f", "--", path)
        if code != 0:
            raise InternalServerError(f"cannot delete {path!r}: {err.decode(errors='replace')}")

    def scan(self) -> Scan:
        """`find` in the sandbox, as its user (links are not followed: `-type f`).

        Upload temporaries (`.jsbx-upload-*`, a reserved prefix) are not listed, and removed
        once 10 minutes stale (a killed uploader's). Folders count toward the caps as files
        do; `head` in the sandbox bounds what the host reads to one record more than
        `MAX_SCAN_ENTRIES` and `MAX_SCAN_PATH_BYTES` plus a margin, so a flood costs the host
        a bounded amount of memory.
        """
        script = (
            f'find "$@" -xdev -mindepth 1 \\( -type f -name "{UPLOAD_PREFIX}*" '
            f"\\( -mmin +{STALE_UPLOAD_SECONDS // 60} -delete -o -true \\) \\) "
            '-o \\( -type d -printf "d\\t0\\t0\\t%p\\0" \\) '
            '-o \\( -type f -printf "f\\t%s\\t%T@\\t%p\\0" \\) 2>/dev/null'
            f" | head -z -n {MAX_SCAN_ENTRIES + 1} | head -c {_SCAN_OUTPUT_BYTES}"
        )
        code, out, _ = self._exec("/bin/sh", "-c", script, "find", *ROOTS, limit=_SCAN_OUTPUT_BYTES)
        scan = parse_find(out)
        if code == -1:  # cut: what the sandbox held open or flooded is not a listing
            scan.truncated = (
                f"the listing was cut (not ended within {EXEC_TIMEOUT:g} s, or over its cap)"
            )
        return scan


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
