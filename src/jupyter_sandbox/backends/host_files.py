"""The host-mount channel: a sandbox's files opened on its mounted disk image, never via links.

`HostFiles` (loop mode, the default as root) has the host open files on the sandbox's mounted
disk image directly. Every path is walked one name at a time from the root folder with
`O_NOFOLLOW` relative to the parent's descriptor, so a symbolic link planted by sandbox code
is refused (never followed, on the host or anywhere), even if it is swapped in mid-walk.
FIFOs and devices are refused (`O_NONBLOCK`, then `fstat` must say regular file).
Bytes move with `sendfile` or 1 MiB chunks: nothing is held in memory whole. An upload is
written in a host-only folder on the same disk image, then renamed into place: sandbox code
never sees it half-written, and a leftover (the host process was killed) is found in one place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import IO

from jupyter_sandbox._exceptions import NotFoundError, RequestTooLargeError
from jupyter_sandbox.backends.blobs import too_large
from jupyter_sandbox.backends.host_scan import DIR_FLAGS as _DIR_FLAGS
from jupyter_sandbox.backends.host_scan import scan_roots, sweep_uploads
from jupyter_sandbox.backends.sandbox_files import (
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
from jupyter_sandbox.types.container_file import check_path, split_root


class HostFiles:
    """Files of a sandbox whose roots are host folders (the mounted, capped disk image)."""

    def __init__(
        self,
        roots: dict[str, Path],
        *,
        uploads: Path,
        disk_limit: int | None = None,
        owner: int | None = SANDBOX_UID,
    ) -> None:
        """`roots`: host folder of each API root; `uploads`: a host-only folder on the same
        file system (not mounted in the sandbox) for uploads in flight; `owner`: the uid
        that gets what is written (None: whoever writes, as for a local kernel)."""
        self._roots = roots
        self._uploads = uploads
        self._disk_limit = disk_limit
        self._owner = owner

    def _chown(self, descriptor: int) -> None:
        if self._owner is not None:
            os.fchown(descriptor, self._owner, self._owner)

    def _uploads_descriptor(self) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self._uploads, 0o700)
        return os.open(self._uploads, _DIR_FLAGS)

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
                    self._chown(child)
                os.close(descriptor)
                descriptor = child
        except OSError as exc:
            os.close(descriptor)
            raise path_refusal(path, exc) from None
        return descriptor, parts[-1]

    def write(self, path: str, source: IO[bytes], *, limit: int, size: int | None) -> int:
        """Write a temporary file in the host-only uploads folder, then rename it over the
        target (never written through). The temporary file is removed on any failure,
        KeyboardInterrupt included; one left by a killed process is swept (`sweep_uploads`)."""
        if size is not None and size > limit:
            raise too_large(limit)
        parent, name = self._walk(path, create=True)
        temporary = UPLOAD_PREFIX + secrets.token_hex(8)
        try:
            uploads = self._uploads_descriptor()
        except BaseException:
            os.close(parent)
            raise
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
            descriptor = os.open(temporary, flags, 0o644, dir_fd=uploads)
            try:
                self._chown(descriptor)
                written = copy_stream(source, descriptor, limit=limit, size=size)
            finally:
                os.close(descriptor)
            os.rename(temporary, name, src_dir_fd=uploads, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=uploads)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RequestTooLargeError(
                    f"The container's disk is full (cap {self._disk_limit} bytes)", param="file"
                ) from None
            if isinstance(exc, OSError) and not isinstance(exc, RequestTooLargeError):
                raise path_refusal(path, exc) from None
            raise
        finally:
            os.close(uploads)
            os.close(parent)
        return written

    def _open_file(self, path: str) -> int:
        parent, name = self._walk(path, create=False)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            descriptor = os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            raise path_refusal(path, exc) from None
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise bad_path(path, "it is not a regular file")
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
                raise bad_path(path, "it is a folder, not a file")
            os.unlink(name, dir_fd=parent)
        except OSError as exc:
            raise path_refusal(path, exc) from None
        finally:
            os.close(parent)

    def scan(self) -> Scan:
        """Regular files under both roots: a bounded walk by descriptor (see `host_scan`)."""
        return scan_roots(self._roots)

    def sweep_uploads(self, *, older_than: float = STALE_UPLOAD_SECONDS) -> list[str]:
        """Remove leftover upload temporary files (a host process killed mid-upload)."""
        return sweep_uploads(self._uploads, older_than=older_than)
