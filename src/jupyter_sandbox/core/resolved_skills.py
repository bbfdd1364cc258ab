"""Resolved skills: the files a sandbox receives, from an inline spec or a stored version.

An inline skill (the seed's `files`, or the hosted API's base64 zip) is checked like an
upload and named from its SKILL.md front matter, its folder, or its position. `install` then
writes every resolved skill read-only under the sandbox's skills folder.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.core.skill_files import (
    SKILL_MD,
    Budget,
    Bundle,
    check_relative,
    front_matter,
    read_zip,
    strip_top_folder,
)
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.skill import (
    SKILLS_ROOT,
    InlineFilesSource,
    InlineSkill,
    InstalledSkill,
    check_skill_name,
)


@dataclass(frozen=True)
class ResolvedSkill:
    """A skill ready to install: its files and where it came from."""

    name: str
    bundle: Bundle
    skill_id: str | None
    version: str | None


ResolvedSkills = list[ResolvedSkill]


def resolve_inline(item: InlineSkill, number: int, settings: Settings) -> ResolvedSkill:
    """The files of the `number`th inline skill of a create, checked and named."""
    budget = Budget(settings)
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
            bundle, folder = strip_top_folder(read_zip(io.BytesIO(raw), budget))
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
