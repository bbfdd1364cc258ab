"""`/v1/skills`: folders with a SKILL.md, versioned; multipart `files[]` (paths inside one
top folder) or one `files` part holding a zip."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import IO, Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, field_validator
from starlette.datastructures import FormData, UploadFile
from starlette.responses import StreamingResponse

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.routes.common import (
    BINARY_RESPONSE,
    After,
    Limit,
    Order,
    download,
    list_params,
)
from jupyter_sandbox.server.state import TenantDep, run
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.skill import Skill, SkillDeleted, SkillVersion, SkillVersionDeleted

router = APIRouter(prefix="/v1/skills", tags=["skills"], responses=ERROR_RESPONSES)
SkillId = Annotated[str, Path(description="The skill's id (`skill_...`).")]
Version = Annotated[str, Path(description='A version number ("1", "2", ...) or "latest".')]
MAX_SKILL_PARTS = 1000


def _upload_body(with_default: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "files[]": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "The skill's files; filenames carry paths inside one top folder "
            "(`mytool/SKILL.md`). A single `files` part may instead hold a zip.",
        },
    }
    if with_default:
        properties["default"] = {"type": "string", "enum": ["true", "false"]}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": properties}}
            },
        }
    }


def _parts(form: FormData) -> list[tuple[str, IO[bytes]]]:
    uploads = [*form.getlist("files[]"), *form.getlist("files")]
    parts: list[tuple[str, IO[bytes]]] = [
        (item.filename or "upload", item.file) for item in uploads if isinstance(item, UploadFile)
    ]
    if not parts:
        raise BadRequestError(
            "Invalid files: send the skill's files as `files[]` parts, or a zip as `files`",
            param="files",
        )
    return parts


def _flag(value: Any) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise BadRequestError("Invalid default: must be 'true' or 'false'", param="default")


async def _form(request: Request, stack: AsyncExitStack) -> FormData:
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        raise BadRequestError("Invalid files: the body must be multipart/form-data", param="files")
    form = await request.form(max_files=MAX_SKILL_PARTS, max_fields=10)
    stack.push_async_callback(form.close)
    return form


@router.post("", response_model=Skill, summary="Create a skill", openapi_extra=_upload_body(False))
async def create_skill(request: Request, tenant: TenantDep) -> Skill:
    """A new skill (version 1) from its files or a zip."""
    async with AsyncExitStack() as stack:
        form = await _form(request, stack)
        return await run(tenant.client.skills.create, files=_parts(form))


@router.get("", response_model=CursorPage[Skill], summary="List skills")
async def list_skills(
    tenant: TenantDep, limit: Limit = 20, order: Order = "desc", after: After = None
) -> CursorPage[Skill]:
    """A page of this project's skills."""
    return await run(tenant.client.skills.list, **list_params(limit, order, after))


@router.get("/{skill_id}", response_model=Skill, summary="Retrieve a skill")
async def retrieve_skill(skill_id: SkillId, tenant: TenantDep) -> Skill:
    """One skill."""
    return await run(tenant.client.skills.retrieve, skill_id)


class SkillUpdateParams(BaseModel):
    """`POST /v1/skills/{id}`."""

    model_config = ConfigDict(extra="forbid")
    default_version: str
    """The version installed when a reference names none."""

    @field_validator("default_version", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


@router.post("/{skill_id}", response_model=Skill, summary="Update a skill")
async def update_skill(skill_id: SkillId, params: SkillUpdateParams, tenant: TenantDep) -> Skill:
    """Choose the default version."""
    return await run(tenant.client.skills.update, skill_id, default_version=params.default_version)


@router.delete("/{skill_id}", response_model=SkillDeleted, summary="Delete a skill")
async def delete_skill(skill_id: SkillId, tenant: TenantDep) -> SkillDeleted:
    """Forget a skill and every version (sandboxes that have it keep their copy)."""
    return await run(tenant.client.skills.delete, skill_id)


@router.get(
    "/{skill_id}/content",
    response_class=StreamingResponse,
    responses=BINARY_RESPONSE,
    summary="Retrieve skill content",
)
async def skill_content(skill_id: SkillId, tenant: TenantDep) -> StreamingResponse:
    """The default version's zip."""
    content = await run(tenant.client.skills.content.retrieve, skill_id)
    return download(content, "application/zip", fixed_size=True)


@router.post(
    "/{skill_id}/versions",
    response_model=SkillVersion,
    summary="Create a skill version",
    openapi_extra=_upload_body(True),
)
async def create_skill_version(
    skill_id: SkillId, request: Request, tenant: TenantDep
) -> SkillVersion:
    """Upload new files as the next version (`default=true` makes it the default)."""
    async with AsyncExitStack() as stack:
        form = await _form(request, stack)
        default = _flag(form.get("default"))
        return await run(
            tenant.client.skills.versions.create, skill_id, files=_parts(form), default=default
        )


@router.get(
    "/{skill_id}/versions", response_model=CursorPage[SkillVersion], summary="List versions"
)
async def list_skill_versions(
    skill_id: SkillId,
    tenant: TenantDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: After = None,
) -> CursorPage[SkillVersion]:
    """A page of the skill's versions."""
    return await run(
        tenant.client.skills.versions.list, skill_id, **list_params(limit, order, after)
    )


@router.get(
    "/{skill_id}/versions/{version}", response_model=SkillVersion, summary="Retrieve a version"
)
async def retrieve_skill_version(
    skill_id: SkillId, version: Version, tenant: TenantDep
) -> SkillVersion:
    """One version."""
    return await run(tenant.client.skills.versions.retrieve, version, skill_id=skill_id)


@router.delete(
    "/{skill_id}/versions/{version}",
    response_model=SkillVersionDeleted,
    summary="Delete a version",
)
async def delete_skill_version(
    skill_id: SkillId, version: Version, tenant: TenantDep
) -> SkillVersionDeleted:
    """Forget one version (a skill keeps at least one)."""
    return await run(tenant.client.skills.versions.delete, version, skill_id=skill_id)


@router.get(
    "/{skill_id}/versions/{version}/content",
    response_class=StreamingResponse,
    responses=BINARY_RESPONSE,
    summary="Retrieve version content",
)
async def skill_version_content(
    skill_id: SkillId, version: Version, tenant: TenantDep
) -> StreamingResponse:
    """One version's zip."""
    content = await run(tenant.client.skills.versions.content, version, skill_id=skill_id)
    return download(content, "application/zip", fixed_size=True)
