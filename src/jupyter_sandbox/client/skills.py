"""`client.skills`: skills, their versions and their zips; resources mirror the URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox.client.files import list_params
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.params import NOT_GIVEN, NotGiven, SkillFilesInput
from jupyter_sandbox.types.skill import Skill, SkillDeleted, SkillVersion, SkillVersionDeleted

if TYPE_CHECKING:
    from jupyter_sandbox.client._services import ClientServices

__all__ = ["SkillContent", "SkillVersions", "Skills"]


@api_errors
class SkillContent:
    """`client.skills.content`."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client

    def retrieve(self, skill_id: str) -> BinaryContent:
        """The default version's zip."""
        return self._client._skills.content(skill_id, project=self._client.project)


@api_errors
class SkillVersions:
    """`client.skills.versions`."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client

    def create(
        self, skill_id: str, *, files: SkillFilesInput, default: bool = False
    ) -> SkillVersion:
        """Upload new files as the next version."""
        return self._client._skills.create_version(
            skill_id, files, default=default, project=self._client.project
        )

    def retrieve(self, version: str, *, skill_id: str) -> SkillVersion:
        """One version."""
        return self._client._skills.retrieve_version(
            skill_id, version, project=self._client.project
        )

    def list(
        self,
        skill_id: str,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | NotGiven | None = NOT_GIVEN,
    ) -> CursorPage[SkillVersion]:
        """A page of versions, newest first."""
        return self._client._skills.list_versions(
            skill_id, list_params(limit, order, after), project=self._client.project
        )

    def delete(self, version: str, *, skill_id: str) -> SkillVersionDeleted:
        """Forget one version (a skill keeps at least one)."""
        return self._client._skills.delete_version(skill_id, version, project=self._client.project)

    def content(self, version: str, *, skill_id: str) -> BinaryContent:
        """One version's zip."""
        return self._client._skills.content(skill_id, version=version, project=self._client.project)


@api_errors
class Skills:
    """`client.skills`: folders with a SKILL.md, installed by id at container creation."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client
        self.content = SkillContent(client)
        self.versions = SkillVersions(client)

    def create(self, *, files: SkillFilesInput) -> Skill:
        """A skill from a folder with a SKILL.md (front matter: name, description), a zip, or
        a list of files (Paths or `(path, content)` pairs).

        Raises:
            BadRequestError: no SKILL.md, an unsafe path, a link, or over the size limits.
        """
        return self._client._skills.create(files, project=self._client.project)

    def retrieve(self, skill_id: str) -> Skill:
        """One skill."""
        return self._client._skills.retrieve(skill_id, project=self._client.project)

    def update(self, skill_id: str, *, default_version: str) -> Skill:
        """Choose the version installed when a reference names none."""
        return self._client._skills.update(
            skill_id, default_version=default_version, project=self._client.project
        )

    def list(
        self,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | NotGiven | None = NOT_GIVEN,
    ) -> CursorPage[Skill]:
        """A page of skills, newest first."""
        return self._client._skills.list(
            list_params(limit, order, after), project=self._client.project
        )

    def delete(self, skill_id: str) -> SkillDeleted:
        """Forget a skill and its versions."""
        return self._client._skills.delete(skill_id, project=self._client.project)
