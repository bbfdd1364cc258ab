"""Skills: folders with a SKILL.md, stored as versioned zips, installed read-only in sandboxes.

`SkillService` keeps the skill and version records and their zips, and resolves the skills a
sandbox create asks for. Reading and checking uploaded files and SKILL.md front matter live in
`skill_files`; inline skills and installing into a sandbox in `resolved_skills`. Their names
are re-exported here.
"""

from __future__ import annotations

import stat
import tempfile
import time
import zipfile
from typing import Any

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.blobs import Blobs
from jupyter_sandbox.backends.file_store import FileStore, SkillRecord, SkillVersionRecord
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.resolved_skills import ResolvedSkill, ResolvedSkills, resolve_inline
from jupyter_sandbox.core.skill_files import (
    Budget,
    Bundle,
    describe,
    read_bundle,
    read_zip,
    strip_top_folder,
)
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.page import CursorPage, ListParams, invalid_after
from jupyter_sandbox.types.skill import (
    Skill,
    SkillDeleted,
    SkillParams,
    SkillReference,
    SkillVersion,
    SkillVersionDeleted,
)

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

    def __init__(self, settings: Settings, records: FileStore, blobs: Blobs) -> None:
        self._settings = settings
        self._records = records
        self._blobs = blobs

    # storing

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

    def create(self, files: Any, *, project: str) -> Skill:
        """A new skill from a folder with a SKILL.md, a zip, or a list of files (version 1)."""
        bundle, folder = read_bundle(files, self._settings)
        name, description = describe(bundle, folder)
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
        self, skill_id: str, files: Any, *, default: bool = False, project: str
    ) -> SkillVersion:
        """Upload new files for a skill; `default=True` makes them the default version."""
        skill = self.get_record(skill_id, project=project)
        bundle, folder = read_bundle(files, self._settings)
        name, description = describe(bundle, folder)
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

    def get_record(self, skill_id: str, *, project: str) -> SkillRecord:
        """The skill, or NotFoundError."""
        record = self._records.get_skill(skill_id) if isinstance(skill_id, str) else None
        if record is None or record.project != project:
            raise NotFoundError(f"No skill found with id {skill_id!r}", param="skill_id")
        return record

    def retrieve(self, skill_id: str, *, project: str) -> Skill:
        """One skill."""
        return to_skill(self.get_record(skill_id, project=project))

    def update(self, skill_id: str, *, default_version: str, project: str) -> Skill:
        """Choose the default version."""
        skill = self.get_record(skill_id, project=project)
        version = self._version(skill, str(default_version), param="default_version")
        return to_skill(
            self._records.update_skill(
                SkillRecord(
                    skill.id, skill.project, version.name, version.description,
                    version.version, skill.latest_version, skill.created_at,
                )
            )
        )  # fmt: skip

    def list(self, params: dict[str, Any], *, project: str) -> CursorPage[Skill]:
        """A page of skills; iterate it to walk every page."""
        query = parse(ListParams, params)
        try:
            records, more = self._records.skills_page(
                project, limit=query.limit, order=query.order, after=query.after
            )
        except LookupError:
            raise invalid_after(query.after, "skill") from None
        data = [to_skill(r) for r in records]
        page = CursorPage[Skill](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )
        return page.with_next(lambda after: self.list({**params, "after": after}, project=project))

    def delete(self, skill_id: str, *, project: str) -> SkillDeleted:
        """Forget a skill and every version (sandboxes that have it keep their copy)."""
        skill = self.get_record(skill_id, project=project)
        for digest in self._records.delete_skill(skill.id):
            if not self._records.blob_in_use(digest):
                self._blobs.delete(digest)
        return SkillDeleted(id=skill.id)

    def content(self, skill_id: str, *, version: str | None = None, project: str) -> BinaryContent:
        """The zip of a version (default: the default version)."""
        skill = self.get_record(skill_id, project=project)
        record = self._version(skill, version or skill.default_version, param="version")
        return BinaryContent(self._blobs.open(record.sha256), record.bytes)

    def _version(self, skill: SkillRecord, version: str, *, param: str) -> SkillVersionRecord:
        number = skill.latest_version if version == "latest" else version
        record = self._records.get_skill_version(skill.id, number)
        if record is None:
            raise NotFoundError(f"Skill {skill.id} has no version {version!r}", param=param)
        return record

    def retrieve_version(self, skill_id: str, version: str, *, project: str) -> SkillVersion:
        """One version."""
        return to_version(
            self._version(self.get_record(skill_id, project=project), str(version), param="version")
        )

    def list_versions(
        self, skill_id: str, params: dict[str, Any], *, project: str
    ) -> CursorPage[SkillVersion]:
        """A page of a skill's versions, newest first by default."""
        skill = self.get_record(skill_id, project=project)
        query = parse(ListParams, params)
        try:
            records, more = self._records.skill_versions_page(
                skill.id, limit=query.limit, order=query.order, after=query.after
            )
        except LookupError:
            raise invalid_after(query.after, "version of this skill") from None
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

    def delete_version(self, skill_id: str, version: str, *, project: str) -> SkillVersionDeleted:
        """Forget one version (not the only one; the default moves to the latest left)."""
        skill = self.get_record(skill_id, project=project)
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

    def resolve(self, skills: SkillSpecs, *, project: str) -> ResolvedSkills:
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
                    bundle, _ = strip_top_folder(read_zip(blob, Budget(self._settings)))
                resolved.append(ResolvedSkill(record.name, bundle, skill.id, record.version))
            else:
                inline_count += 1
                resolved.append(resolve_inline(item, inline_count, self._settings))
        names = [skill.name for skill in resolved]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise BadRequestError(
                f"Invalid skills: two skills are named {duplicates[0]!r}", param="skills"
            )
        return resolved
