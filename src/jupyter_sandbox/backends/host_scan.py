"""Walking a sandbox's folders from the host with a bounded number of open descriptors.

The walk is depth-first with an explicit stack. Each folder is opened relative to its
parent's descriptor with `O_NOFOLLOW | O_DIRECTORY` (a link planted by sandbox code is never
followed), read once, and only the names of its subfolders are kept. At most `WINDOW`
folder descriptors stay open (plus one while a folder is read): when the stack is deeper,
the shallowest descriptors are closed and reopened later, name by name from the nearest
open ancestor, again with `O_NOFOLLOW`. So 3,000 sibling folders cost one descriptor, a deep
tree at most `WINDOW`, whatever the sandbox holds; other threads of the host process (other
tenants' requests in `serve`) never meet `EMFILE` because of a listing.

Files and folders both count toward `MAX_SCAN_ENTRIES`, and the paths' bytes toward
`MAX_SCAN_PATH_BYTES`; a walk that reaches either stops and says so (`Scan.truncated`).
Depth needs no cap of its own: a path is at most 1,024 bytes, so at most 512 levels, and a
folder whose path would be longer is not addressable and not entered.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sandbox.backends.sandbox_files import (
    MAX_SCAN_ENTRIES,
    MAX_SCAN_PATH_BYTES,
    FoundFile,
    Scan,
)
from jupyter_sandbox.types.container_file import ROOTS, is_valid_name

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WINDOW = 8
"""Folder descriptors one walk keeps open at most (one more while a folder is read)."""


@dataclass
class _Frame:
    name: str
    """The folder's name in its parent ('' for a root)."""
    prefix: str
    """Its API path (`/mnt/data/a/b`)."""
    descriptor: int | None
    pending: list[str] = field(default_factory=list)
    """Subfolders still to visit."""


@dataclass
class _Budget:
    max_entries: int
    max_path_bytes: int
    entries: int = 0
    path_bytes: int = 0
    truncated: str | None = None

    def take(self, path: str) -> bool:
        """Count one entry; False (and the reason recorded) once a cap is reached."""
        if self.truncated is not None:
            return False
        if self.entries >= self.max_entries:
            self.truncated = f"more than {self.max_entries} files and folders"
            return False
        if self.path_bytes + len(path) > self.max_path_bytes:
            self.truncated = f"more than {self.max_path_bytes} bytes of paths"
            return False
        self.entries += 1
        self.path_bytes += len(path)
        return True


class _Walk:
    """One root's walk; appends to `found`, spends `budget`."""

    def __init__(self, folder: Path, root: str, found: list[FoundFile], budget: _Budget) -> None:
        self._folder = folder
        self._root = root
        self._found = found
        self._budget = budget
        self._stack: list[_Frame] = []

    def run(self) -> None:
        try:
            top = _Frame("", self._root, os.open(self._folder, DIR_FLAGS))
        except OSError:
            return
        self._stack.append(top)
        try:
            self._read(top)
            while self._stack:
                frame = self._stack[-1]
                if not frame.pending or self._budget.truncated is not None:
                    self._pop()
                    continue
                name = frame.pending.pop()
                parent = self._descriptor(len(self._stack) - 1)
                if parent is None:
                    frame.pending.clear()  # renamed away under us: nothing left to see there
                    continue
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=parent)
                except OSError:
                    continue  # gone, or swapped for a link (never followed)
                self._stack.append(_Frame(name, f"{frame.prefix}/{name}", child))
                self._limit_open()
                self._read(self._stack[-1])
        finally:
            while self._stack:
                self._pop()

    def _pop(self) -> None:
        frame = self._stack.pop()
        if frame.descriptor is not None:
            os.close(frame.descriptor)

    def _limit_open(self) -> None:
        open_frames = [f for f in self._stack if f.descriptor is not None]
        for frame in open_frames[: max(0, len(open_frames) - WINDOW)]:
            assert frame.descriptor is not None
            os.close(frame.descriptor)
            frame.descriptor = None

    def _descriptor(self, index: int) -> int | None:
        """The descriptor of stack[index], reopened by name from an open ancestor if closed."""
        frame = self._stack[index]
        if frame.descriptor is not None:
            return frame.descriptor
        start = index
        while start >= 0 and self._stack[start].descriptor is None:
            start -= 1
        try:
            ancestor = self._stack[start].descriptor if start >= 0 else None
            if ancestor is None:
                current, owned, start = os.open(self._folder, DIR_FLAGS), True, 0
            else:
                current, owned = ancestor, False
            for step in range(start + 1, index + 1):
                try:
                    following = os.open(self._stack[step].name, DIR_FLAGS, dir_fd=current)
                finally:
                    if owned:
                        os.close(current)
                current, owned = following, True
        except OSError:
            return None
        frame.descriptor = current
        self._limit_open()
        return current

    def _read(self, frame: _Frame) -> None:
        assert frame.descriptor is not None
        parent_bytes = len(frame.prefix.encode())
        with os.scandir(frame.descriptor) as entries:
            for entry in entries:
                if not is_valid_name(entry.name, parent_bytes):
                    continue  # not addressable through the API
                path = f"{frame.prefix}/{entry.name}"
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not self._budget.take(path):
                            return
                        frame.pending.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        if not self._budget.take(path):
                            return
                        self._found.append(FoundFile(path, info.st_size, info.st_mtime))
                except OSError:
                    continue  # it changed under us


def scan_roots(
    folders: dict[str, Path],
    *,
    max_entries: int = MAX_SCAN_ENTRIES,
    max_path_bytes: int = MAX_SCAN_PATH_BYTES,
) -> Scan:
    """Regular files under both roots (host folders by API root), within the caps."""
    found: list[FoundFile] = []
    budget = _Budget(max_entries, max_path_bytes)
    for root in ROOTS:
        _Walk(folders[root], root, found, budget).run()
    return Scan(found, budget.truncated)


def sweep_uploads(uploads: Path, *, older_than: float) -> list[str]:
    """Remove upload temporary files untouched for `older_than` seconds; return their names.

    `uploads` is a host-only folder (outside what the sandbox mounts), so it holds only what
    `HostFiles.write` made there; a fresh file may be an upload in flight in another process.
    """
    removed: list[str] = []
    cutoff = time.time() - older_than
    try:
        descriptor = os.open(uploads, DIR_FLAGS)
    except OSError:
        return removed
    try:
        with os.scandir(descriptor) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.name, dir_fd=descriptor)
                        removed.append(entry.name)
    finally:
        os.close(descriptor)
    return removed
