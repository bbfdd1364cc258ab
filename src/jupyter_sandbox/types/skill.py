"""Skills (OpenAI's `/v1/skills` shapes) and the forms `containers.create(skills=...)` accepts."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SKILLS_ROOT = "/mnt/skills"
"""Where skills are installed in a sandbox, read-only, one folder per skill."""
MAX_INLINE_ZIP_CHARS = 70_254_592
"""The hosted API's ceiling on an inline skill's base64 zip."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_skill_name(name: str) -> str:
    """A skill name that is also a safe folder name, or ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"skill name {name!r:.80} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Skill(BaseModel):
    """A reusable bundle of instructions and code (a folder with a SKILL.md)."""

    model_config = ConfigDict(extra="allow")
    id: str
    """`skill_` + 32 hex."""
    object: Literal["skill"] = "skill"
    name: str
    """From the SKILL.md front matter (or the folder name)."""
    description: str
    default_version: str
    """The version installed when a reference gives none."""
    latest_version: str
    created_at: int


class SkillVersion(BaseModel):
    """One immutable upload of a skill's files."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["skill.version"] = "skill.version"
    skill_id: str
    version: str
    """`"1"`, `"2"`, ..."""
    name: str
    description: str
    created_at: int


class SkillDeleted(BaseModel):
    """The body a skill delete returns."""

    id: str
    object: Literal["skill.deleted"] = "skill.deleted"
    deleted: bool = True


class SkillVersionDeleted(BaseModel):
    """The body a skill-version delete returns."""

    id: str
    object: Literal["skill.version.deleted"] = "skill.version.deleted"
    deleted: bool = True
    version: str


class InstalledSkill(BaseModel):
    """A skill installed in a sandbox (extension field `skills` of the container object)."""

    id: str | None
    """The skill's id, or None for an inline skill."""
    name: str
    version: str | None
    path: str
    """`/mnt/skills/<name>`: on the kernel's `sys.path`, so its modules import by name."""
    skill_md: str | None
    """`/mnt/skills/<name>/SKILL.md`, when the skill has one."""


class SkillReference(BaseModel):
    """`{"type": "skill_reference", "skill_id": ..., "version"?: "latest" | "3"}`; the seed's
    bare `{"skill_id": ...}` is accepted too."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["skill_reference"] = "skill_reference"
    skill_id: str = Field(min_length=1, max_length=64)
    version: str | None = None
    """None: the default version; `"latest"`: the newest."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class InlineFile(BaseModel):
    """One file of a seed-style inline skill."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1024)
    """Relative path inside the skill folder."""
    content: str
    """The file's text."""


class InlineFilesSource(BaseModel):
    """The seed's inline form: `{"files": [{"path", "content"}]}`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["files"] = "files"
    files: list[InlineFile] = Field(min_length=1, max_length=1000)


class InlineZipSource(BaseModel):
    """The hosted API's inline form: a base64 zip of the skill folder."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["base64"]
    media_type: Literal["application/zip"] = "application/zip"
    data: str = Field(min_length=1, max_length=MAX_INLINE_ZIP_CHARS)


class InlineSkill(BaseModel):
    """A skill defined in the create request itself (installed in that sandbox only)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["inline"]
    name: str | None = None
    """Required by the hosted API; the seed's form may omit it (then `inline-<n>`)."""
    description: str | None = None
    source: InlineZipSource | InlineFilesSource

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        return None if name is None else check_skill_name(name)

    @field_validator("source", mode="before")
    @classmethod
    def _pick_source(cls, value: Any) -> Any:
        if isinstance(value, dict) and "files" in value and "type" not in value:
            return {**value, "type": "files"}
        return value


SkillParam = Annotated[SkillReference | InlineSkill, Field(discriminator="type")]


class SkillParams(BaseModel):
    """The `skills` list of `containers.create`."""

    model_config = ConfigDict(extra="forbid")
    skills: list[SkillParam] = Field(default_factory=list, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _seed_reference(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("skills"), list):
            data = {
                **data,
                "skills": [
                    {**item, "type": "skill_reference"}
                    if isinstance(item, dict) and "type" not in item and "skill_id" in item
                    else item
                    for item in data["skills"]
                ],
            }
        return data
