"""Skills: folders with a SKILL.md, stored as versioned zips, installed read-only in sandboxes.

Every way in (a folder, a zip, a list of files, the seed's inline `files`, the hosted API's
inline base64 zip) becomes one list of `(relative path, bytes)`, checked once: relative,
normalised names, regular files only, at most `skill_max_files` files and `skill_size_limit`
bytes (counted while reading, never trusting a zip's header).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import posixpath
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.blobs import BlobStore
from jupyter_sandbox.backends.file_store import FileStore, SkillRecord, SkillVersionRecord
from jupyter_sandbox.backends.transfer import BinaryContent
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.files import open_upload
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.page import CursorPage, ListParams
from jupyter_sandbox.types.skill import (
    SKILLS_ROOT,
    InlineFilesSource,
    InlineSkill,
    InstalledSkill,
    Skill,
    SkillDeleted,
    SkillParams,
    SkillReference,
    SkillVersion,
    SkillVersionDeleted,
    check_skill_name,
)

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


class _Budget:
    def __init__(self, settings: Settings) -> None:
        self.files = settings.skill_max_files
        self.bytes = settings.skill_size_limit

    def take(self, size: int) -> None:
        self.files -= 1
        self.bytes -= size
        if self.files < 0:
            raise ValueError("the skill has too many files")
        if self.bytes < 0:
            raise ValueError("the skill is larger than the size limit")


def _strip_top_folder(bundle: Bundle) -> tuple[Bundle, str | None]:
    tops = {path.split("/", 1)[0] for path, _ in bundle}
    if len(tops) == 1 and all("/" in path for path, _ in bundle):
        top = tops.pop()
        return [(path.split("/", 1)[1], data) for path, data in bundle], top
    return bundle, None


def read_zip(data: Any, budget: _Budget) -> Bundle:
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


def read_folder(folder: Path, budget: _Budget) -> Bundle:
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


@dataclass(frozen=True)
class ResolvedSkill:
    """A skill ready to install: its files and where it came from."""

    name: str
    bundle: Bundle
    skill_id: str | None
    version: str | None


ResolvedSkills = list[ResolvedSkill]
SkillSpecs = list[dict[str, Any]]


def to_skill(record: SkillRecord) -> Skill:
    """API shape of a skill record."""
    return Skill(
        id=record.id,
        name=record.name,
        description=record.description,
        default_version=record.default_version,
        latest_version=record.latest_version,
        created_at=int(record.created_at),
    )


def to_version(record: SkillVersionRecord) -> SkillVersion:
    """API shape of a version record."""
    return SkillVersion(
        id=record.id,
        skill_id=record.skill_id,
        version=record.version,
        name=record.name,
        description=record.description,
        created_at=int(record.created_at),
    )


class SkillService:
    """Create, version, list and delete skills; resolve and install them for sandboxes."""

    def __init__(self, settings: Settings, records: FileStore, blobs: BlobStore) -> None:
        self._settings = settings
        self._records = records
        self._blobs = blobs

    # reading what the caller gave

    def _bundle(self, files: Any) -> tuple[Bundle, str | None]:
        """(files, folder name) from a folder, a zip, or a list of files."""
        budget = _Budget(self._settings)
        try:
            if isinstance(files, os.PathLike) and Path(files).is_dir():
                return read_folder(Path(files), budget), Path(files).resolve().name
            items = (
                list(files) if isinstance(files, list | tuple) and not _is_pair(files) else [files]
            )
            if len(items) == 1:
                with open_upload(items[0], param="files") as upload:
                    if upload.name.endswith(".zip"):
                        return _strip_top_folder(read_zip(upload.stream, budget))
            bundle: Bundle = []
            paths = [Path(item) for item in items if isinstance(item, os.PathLike)]
            common = (
                Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else None
            )
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
            return _strip_top_folder(bundle)
        except ValueError as exc:
            raise BadRequestError(f"Invalid files: {exc}", param="files") from None

    def _describe(self, bundle: Bundle, folder: str | None) -> tuple[str, str]:
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

    def _store_zip(self, name: str, bundle: Bundle) -> tuple[str, int]:
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
                for path, content in sorted(bundle):
                    info = zipfile.ZipInfo(f"{name}/{path}", date_time=(2020, 1, 1, 0, 0, 0))
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, content)
            spool.seek(0)
            return self._blobs.put(spool, limit=2**40)

    # the API

    def create(self, files: Any, *, project: str = "default") -> Skill:
        """A new skill from a folder with a SKILL.md, a zip, or a list of files (version 1)."""
        bundle, folder = self._bundle(files)
        name, description = self._describe(bundle, folder)
        digest, size = self._store_zip(name, bundle)
        now = time.time()
        skill_id = ids.skill_id()
        skill = SkillRecord(skill_id, project, name, description, "1", "1", now)
        version = SkillVersionRecord(
            skill_id, "1", "skillver_" + ids.skill_id()[6:], name, description, digest, size, now
        )
        self._records.add_skill_version(version, skill)
        return to_skill(skill)

    def create_version(
        self, skill_id: str, files: Any, *, default: bool = False, project: str = "default"
    ) -> SkillVersion:
        """Upload new files for a skill; `default=True` makes them the default version."""
        skill = self.get_record(skill_id, project)
        bundle, folder = self._bundle(files)
        name, description = self._describe(bundle, folder)
        digest, size = self._blobs_put(name, bundle)
        number = self._records.next_version(skill.id)
        now = time.time()
        version = SkillVersionRecord(
            skill.id, number, "skillver_" + ids.skill_id()[6:], name, description, digest, size, now
        )
        updated = SkillRecord(
            skill.id,
            skill.project,
            name if default else skill.name,
            description if default else skill.description,
            number if default else skill.default_version,
            number,
            skill.created_at,
        )
        self._records.add_skill_version(version, updated)
        return to_version(version)

    def _blobs_put(self, name: str, bundle: Bundle) -> tuple[str, int]:
        return self._store_zip(name, bundle)

    def get_record(self, skill_id: str, project: str = "default") -> SkillRecord:
        """The skill, or NotFoundError."""
        record = self._records.get_skill(skill_id) if isinstance(skill_id, str) else None
        if record is None or record.project != project:
            raise NotFoundError(f"No skill found with id {skill_id!r}", param="skill_id")
        return record

    def retrieve(self, skill_id: str, *, project: str = "default") -> Skill:
        """One skill."""
        return to_skill(self.get_record(skill_id, project))

    def update(self, skill_id: str, *, default_version: str, project: str = "default") -> Skill:
        """Choose the default version."""
        skill = self.get_record(skill_id, project)
        version = self._version(skill, str(default_version), param="default_version")
        return to_skill(
            self._records.update_skill(
                SkillRecord(
                    skill.id, skill.project, version.name, version.description,
                    version.version, skill.latest_version, skill.created_at,
                )
            )
        )  # fmt: skip

    def list(self, params: dict[str, Any], *, project: str = "default") -> CursorPage[Skill]:
        """A page of skills; iterate it to walk every page."""
        query = parse(ListParams, params)
        try:
            records, more = self._records.skills_page(
                project, limit=query.limit, order=query.order, after=query.after
            )
        except LookupError:
            raise NotFoundError(f"Invalid after: no skill {query.after!r}", param="after") from None
        data = [to_skill(r) for r in records]
        page = CursorPage[Skill](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )
        return page.with_next(lambda after: self.list({**params, "after": after}, project=project))

    def delete(self, skill_id: str, *, project: str = "default") -> SkillDeleted:
        """Forget a skill and every version (sandboxes that have it keep their copy)."""
        skill = self.get_record(skill_id, project)
        for digest in self._records.delete_skill(skill.id):
            if not self._records.blob_in_use(digest):
                self._blobs.delete(digest)
        return SkillDeleted(id=skill.id)

    def content(
        self, skill_id: str, *, version: str | None = None, project: str = "default"
    ) -> BinaryContent:
        """The zip of a version (default: the default version)."""
        skill = self.get_record(skill_id, project)
        record = self._version(skill, version or skill.default_version, param="version")
        return BinaryContent(self._blobs.open(record.sha256), record.bytes)

    def _version(self, skill: SkillRecord, version: str, *, param: str) -> SkillVersionRecord:
        number = skill.latest_version if version == "latest" else version
        record = self._records.get_skill_version(skill.id, number)
        if record is None:
            raise NotFoundError(f"Skill {skill.id} has no version {version!r}", param=param)
        return record

    def retrieve_version(
        self, skill_id: str, version: str, *, project: str = "default"
    ) -> SkillVersion:
        """One version."""
        return to_version(
            self._version(self.get_record(skill_id, project), str(version), param="version")
        )

    def list_versions(
        self, skill_id: str, params: dict[str, Any], *, project: str = "default"
    ) -> CursorPage[SkillVersion]:
        """A page of a skill's versions, newest first by default."""
        skill = self.get_record(skill_id, project)
        query = parse(ListParams, params)
        try:
            records, more = self._records.skill_versions_page(
                skill.id, limit=query.limit, order=query.order, after=query.after
            )
        except LookupError:
            raise NotFoundError(
                f"Invalid after: no version {query.after!r}", param="after"
            ) from None
        data = [to_version(r) for r in records]
        page = CursorPage[SkillVersion](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )
        return page.with_next(
            lambda after: self.list_versions(skill_id, {**params, "after": after}, project=project)
        )

    def delete_version(
        self, skill_id: str, version: str, *, project: str = "default"
    ) -> SkillVersionDeleted:
        """Forget one version (not the only one; the default moves to the latest left)."""
        skill = self.get_record(skill_id, project)
        record = self._version(skill, str(version), param="version")
        page, _ = self._records.skill_versions_page(skill.id, limit=2, order="desc", after=None)
        if len(page) < 2:
            raise BadRequestError(
                "Invalid version: a skill keeps at least one version; delete the skill instead",
                param="version",
            )
        self._records.delete_skill_version(skill.id, record.version)
        if not self._records.blob_in_use(record.sha256):
            self._blobs.delete(record.sha256)
        latest = self._records.skill_versions_page(skill.id, limit=1, order="desc", after=None)[0][
            0
        ]
        default = skill.default_version
        if default == record.version:
            default = latest.version
        self._records.update_skill(
            SkillRecord(
                skill.id, skill.project, skill.name, skill.description,
                default, latest.version, skill.created_at,
            )
        )  # fmt: skip
        return SkillVersionDeleted(id=record.id, version=record.version)

    # sandboxes

    def resolve(self, skills: SkillSpecs, *, project: str = "default") -> ResolvedSkills:
        """Check every skill a create asks for and load its files (before anything starts)."""
        params = parse(SkillParams, {"skills": skills})
        resolved: ResolvedSkills = []
        inline_count = 0
        for item in params.skills:
            if isinstance(item, SkillReference):
                skill = self._records.get_skill(item.skill_id)
                if skill is None or skill.project != project:
                    raise NotFoundError(f"No skill found with id {item.skill_id!r}", param="skills")
                record = self._version(skill, item.version or skill.default_version, param="skills")
                with self._blobs.open(record.sha256) as blob:
                    bundle, _ = _strip_top_folder(read_zip(blob, _Budget(self._settings)))
                resolved.append(ResolvedSkill(record.name, bundle, skill.id, record.version))
            else:
                inline_count += 1
                resolved.append(self._inline(item, inline_count))
        names = [skill.name for skill in resolved]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise BadRequestError(
                f"Invalid skills: two skills are named {duplicates[0]!r}", param="skills"
            )
        return resolved

    def _inline(self, item: InlineSkill, number: int) -> ResolvedSkill:
        budget = _Budget(self._settings)
        folder: str | None = None
        try:
            if isinstance(item.source, InlineFilesSource):
                bundle: Bundle = []
                for entry in item.source.files:
                    content = entry.content.encode()
                    budget.take(len(content))
                    bundle.append((check_relative(entry.path), content))
            else:
                try:
                    raw = base64.b64decode(item.source.data, validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError("source.data is not valid base64") from None
                bundle, folder = _strip_top_folder(read_zip(io.BytesIO(raw), budget))
        except ValueError as exc:
            raise BadRequestError(
                f"Invalid skills: inline skill {number}: {exc}", param="skills"
            ) from None
        name = item.name
        if name is None:
            manifest = dict(bundle).get(SKILL_MD)
            meta = front_matter(manifest.decode("utf-8", "replace")) if manifest else {}
            name = meta.get("name") or folder or f"inline-{number}"
            try:
                check_skill_name(name)
            except ValueError as exc:
                raise BadRequestError(f"Invalid skills: {exc}", param="skills") from None
        return ResolvedSkill(name, bundle, None, None)


def install(skills: Iterable[ResolvedSkill], target: Path) -> list[InstalledSkill]:
    """Write each skill under `target/<name>/` (read-only for the sandbox: root-owned, 0644)."""
    installed: list[InstalledSkill] = []
    for skill in skills:
        folder = target / skill.name
        folder.mkdir(mode=0o755)
        for relative, content in skill.bundle:
            destination = folder / check_relative(relative)
            destination.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            descriptor = os.open(
                destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
            )
            with os.fdopen(descriptor, "wb") as sink:
                sink.write(content)
        has_manifest = any(relative == SKILL_MD for relative, _ in skill.bundle)
        path = f"{SKILLS_ROOT}/{skill.name}"
        installed.append(
            InstalledSkill(
                id=skill.skill_id,
                name=skill.name,
                version=skill.version,
                path=path,
                skill_md=f"{path}/{SKILL_MD}" if has_manifest else None,
            )
        )
    return installed


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
