"""Skill files: reading and checking what a caller uploads as a skill, and its SKILL.md.

Every way in (a folder, a zip, a list of files, the seed's inline `files`, the hosted API's
inline base64 zip) becomes one list of `(relative path, bytes)`, checked once: relative,
normalised names, regular files only, at most `skill_max_files` files and `skill_size_limit`
bytes (counted while reading, never trusting a zip's header).
"""

from __future__ import annotations

import os
import posixpath
import stat
import zipfile
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.core.files import open_upload
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.skill import check_skill_name

SKILL_MD = "SKILL.md"
Bundle = list[tuple[str, bytes]]


def check_relative(path: str) -> str:
    """A safe relative path inside a skill, or ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError("file paths must be non-empty strings")
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise ValueError(f"{path!r:.80}: NUL and control characters are not allowed")
    if path.startswith("/") or "\\" in path:
        raise ValueError(f"{path!r:.80}: paths must be relative, with '/' separators")
    parts = path.split("/")
    if ".." in parts or "." in parts or "" in parts or posixpath.normpath(path) != path:
        raise ValueError(f"{path!r:.80}: paths must be normalised, without '..'")
    if len(path.encode()) > 1024 or any(len(p.encode()) > 255 for p in parts):
        raise ValueError(f"{path!r:.80}: the path or a name in it is too long")
    return path


class Budget:
    """The files and bytes a skill may still take (`skill_max_files`, `skill_size_limit`)."""

    def __init__(self, settings: Settings) -> None:
        self.files = settings.skill_max_files
        self.bytes = settings.skill_size_limit

    def take(self, size: int) -> None:
        """Count one more file of `size` bytes; ValueError once either limit is passed."""
        self.files -= 1
        self.bytes -= size
        if self.files < 0:
            raise ValueError("the skill has too many files")
        if self.bytes < 0:
            raise ValueError("the skill is larger than the size limit")


def strip_top_folder(bundle: Bundle) -> tuple[Bundle, str | None]:
    """The bundle without a folder every file shares at the top, and that folder's name."""
    tops = {path.split("/", 1)[0] for path, _ in bundle}
    if len(tops) == 1 and all("/" in path for path, _ in bundle):
        top = tops.pop()
        return [(path.split("/", 1)[1], data) for path, data in bundle], top
    return bundle, None


def read_zip(data: Any, budget: Budget) -> Bundle:
    """The regular files of a zip; links, devices, absolute or `..` names are refused."""
    try:
        archive = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a valid zip file ({exc})") from None
    bundle: Bundle = []
    with archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # no type bits: a plain file
                raise ValueError(f"{info.filename!r:.80}: only regular files are allowed")
            if info.flag_bits & 0x1:
                raise ValueError(f"{info.filename!r:.80}: encrypted entries are not allowed")
            name = check_relative(info.filename)
            with archive.open(info) as member:
                content = member.read(budget.bytes + 1)  # bounded, whatever the header says
            budget.take(len(content))
            bundle.append((name, content))
    return bundle


def read_folder(folder: Path, budget: Budget) -> Bundle:
    """The regular files under a folder; a link inside it is an error."""
    bundle: Bundle = []
    for base, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            full = Path(base) / name
            if full.is_symlink():
                raise ValueError(f"{full}: links are not allowed in a skill")
        for name in sorted(files):
            full = Path(base) / name
            if not full.is_file():
                raise ValueError(f"{full}: only regular files are allowed")
            relative = check_relative(full.relative_to(folder).as_posix())
            budget.take(full.stat().st_size)
            bundle.append((relative, full.read_bytes()))
    return bundle


def front_matter(text: str) -> dict[str, str]:
    """`key: value` lines between the leading `---` fences of a SKILL.md."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t")):
            found[key.strip()] = value.strip().strip("'\"")
    return found


def read_bundle(files: Any, settings: Settings) -> tuple[Bundle, str | None]:
    """(files, folder name) from a folder, a zip, or a list of files."""
    budget = Budget(settings)
    try:
        if isinstance(files, os.PathLike) and Path(files).is_dir():
            return read_folder(Path(files), budget), Path(files).resolve().name
        items = list(files) if isinstance(files, list | tuple) and not _is_pair(files) else [files]
        if len(items) == 1:
            with open_upload(items[0], param="files") as upload:
                if upload.name.endswith(".zip"):
                    return strip_top_folder(read_zip(upload.stream, budget))
        bundle: Bundle = []
        paths = [Path(item) for item in items if isinstance(item, os.PathLike)]
        common = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else None
        for item in items:
            with open_upload(item, param="files") as upload:
                if isinstance(item, os.PathLike) and common is not None:
                    name = Path(item).resolve().relative_to(common).as_posix()
                else:
                    name = upload.name
                content = upload.stream.read(budget.bytes + 1)
                budget.take(len(content))
                bundle.append((check_relative(name), content))
        if common is not None and len(paths) == len(items):
            return bundle, common.name
        return strip_top_folder(bundle)
    except ValueError as exc:
        raise BadRequestError(f"Invalid files: {exc}", param="files") from None


def describe(bundle: Bundle, folder: str | None) -> tuple[str, str]:
    """(name, description) from the SKILL.md front matter; the name defaults to `folder`."""
    manifest = dict(bundle).get(SKILL_MD)
    if manifest is None:
        raise BadRequestError(
            f"Invalid files: a skill needs a {SKILL_MD} at its top level", param="files"
        )
    meta = front_matter(manifest.decode("utf-8", "replace"))
    name = meta.get("name") or folder
    if not name:
        raise BadRequestError(
            f"Invalid files: {SKILL_MD} has no `name:` in its front matter", param="files"
        )
    try:
        check_skill_name(name)
    except ValueError as exc:
        raise BadRequestError(f"Invalid files: {exc}", param="files") from None
    return name, meta.get("description", "")


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
