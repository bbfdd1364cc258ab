"""Files inside a sandbox (`cfile_` ids) and the rules every path must follow."""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

from jupyter_sandbox.types.page import CursorPage

ROOTS = ("/mnt/data", "/workspace")
"""The only sandbox folders files can be uploaded to, listed from or downloaded from."""
DEFAULT_DIR = "/mnt/data"
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

ContainerFileSource = Literal["user", "assistant"]
"""`user`: uploaded or copied through the API; `assistant`: written by code in the sandbox."""


class ContainerFile(BaseModel):
    """A file in a sandbox, as the container-files API returns it."""

    model_config = ConfigDict(extra="allow")
    id: str
    """`cfile_` + 32 hex; stable while the file stays at its path."""
    object: Literal["container.file"] = "container.file"
    container_id: str
    path: str
    """Absolute path inside the sandbox, under /mnt/data or /workspace."""
    bytes: int
    created_at: int
    source: ContainerFileSource

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> int:
        """The seed's name for `bytes`."""
        return self.bytes


class ContainerFilePage(CursorPage[ContainerFile]):
    """A page of a sandbox's files, with why the walk stopped early, if it did."""

    truncated: str | None = None
    """Extension, first page only: set when the walk of the sandbox's folders reached a cap
    (100,000 files and folders, or 16 MiB of paths); the listing then holds only the files seen
    (a warning is logged too). None when every file was seen."""


class ContainerFileDeleted(BaseModel):
    """The body a container-file delete returns."""

    id: str
    object: Literal["container.file.deleted"] = "container.file.deleted"
    deleted: bool = True


def check_path(path: object) -> str:
    """Return `path` if it is a safe sandbox file path, else raise ValueError saying why.

    Safe: a string, absolute, already normalised (no `.`, `..`, `//` or trailing `/`), no NUL
    or control characters, at most 1024 bytes with names of at most 255, strictly inside
    /mnt/data or /workspace. Symbolic links are checked later, by the host, on every access.
    """
    if not isinstance(path, str) or not path:
        raise ValueError("path must be a non-empty string")
    if _CONTROL.search(path):
        raise ValueError("path must not contain NUL or control characters")
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise ValueError(f"path is longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/"):
        raise ValueError("path must be absolute (start with /mnt/data/ or /workspace/)")
    parts = path.split("/")[1:]
    if ".." in parts:
        raise ValueError("path must not contain '..'")
    if posixpath.normpath(path) != path or "" in parts or "." in parts:
        raise ValueError("path must be normalised (no '.', '//' or trailing '/')")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in parts):
        raise ValueError(f"a name in the path is longer than {MAX_NAME_BYTES} bytes")
    if not any(path.startswith(root + "/") for root in ROOTS):
        raise ValueError(f"path must be inside {' or '.join(ROOTS)}")
    return path


def split_root(path: str) -> tuple[str, list[str]]:
    """`("/mnt/data", ["a", "b.txt"])` for a checked path `/mnt/data/a/b.txt`."""
    for root in ROOTS:
        if path.startswith(root + "/"):
            return root, path[len(root) + 1 :].split("/")
    raise ValueError(f"path must be inside {' or '.join(ROOTS)}")


def is_valid_name(name: str, parent_bytes: int) -> bool:
    """Whether a directory entry's name, below a valid folder path of `parent_bytes` bytes,
    gives a valid path (the fast check used while walking thousands of files)."""
    if name in (".", "..") or _CONTROL.search(name):
        return False
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return size <= MAX_NAME_BYTES and parent_bytes + 1 + size <= MAX_PATH_BYTES
