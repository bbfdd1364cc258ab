"""`/v1/containers/{id}/files`: upload (multipart `file`, or JSON `{"file_id"}`; `path` as an
extension in either), list, retrieve, stream the content, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.routes.common import (
    BINARY_RESPONSE,
    After,
    Limit,
    Order,
    download,
    json_object,
    list_params,
)
from jupyter_sandbox.server.state import TenantDep, run
from jupyter_sandbox.types.container_file import (
    ContainerFile,
    ContainerFileDeleted,
    ContainerFilePage,
)

router = APIRouter(
    prefix="/v1/containers/{container_id}/files",
    tags=["container files"],
    responses=ERROR_RESPONSES,
)
ContainerId = Annotated[str, Path(description="The container's id (`cntr_...`).")]
FileId = Annotated[str, Path(description="The container file's id (`cfile_...`).")]

_PATH_SCHEMA = {
    "type": "string",
    "description": "Extension (the seed's): absolute path under /mnt/data or /workspace; "
    "default /mnt/data/<file name>.",
}
CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "path": _PATH_SCHEMA,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["file_id"],
                    "additionalProperties": False,
                    "properties": {
                        "file_id": {"type": "string", "description": "An uploaded file's id."},
                        "path": _PATH_SCHEMA,
                    },
                }
            },
        },
    }
}


def _text(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"Invalid {param}: must be a string", param=param)
    return value


@router.post(
    "",
    response_model=ContainerFile,
    summary="Create a container file",
    openapi_extra=CREATE_BODY,
)
async def create_container_file(
    container_id: ContainerId, request: Request, tenant: TenantDep
) -> ContainerFile:
    """Put a file in the sandbox: multipart `file` (bytes and filename), or JSON `file_id`
    (copies an uploaded file). The branch follows the Content-Type."""
    files = tenant.client.containers.files
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            path = _text(form.get("path"), "path")
            file_id = _text(form.get("file_id"), "file_id")
            if isinstance(upload, UploadFile):
                return await run(
                    files.create,
                    container_id,
                    file=(upload.filename or "upload", upload.file),
                    path=path,
                )
            if file_id is None:
                raise BadRequestError("Invalid file: this parameter is required", param="file")
            return await run(files.create, container_id, file_id=file_id, path=path)
    body = await json_object(request, {"file_id", "path"})
    file_id = _text(body.get("file_id"), "file_id")
    if file_id is None:
        raise BadRequestError(
            "Invalid file_id: this parameter is required (or send multipart `file`)",
            param="file_id",
        )
    return await run(
        files.create, container_id, file_id=file_id, path=_text(body.get("path"), "path")
    )


@router.get("", response_model=ContainerFilePage, summary="List container files")
async def list_container_files(
    container_id: ContainerId,
    tenant: TenantDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: After = None,
) -> ContainerFilePage:
    """A page of the sandbox's files, including those its code wrote (`source: assistant`).
    On the first page, `truncated` (extension) says why the walk stopped early, if it did."""
    return await run(
        tenant.client.containers.files.list, container_id, **list_params(limit, order, after)
    )


@router.get("/{file_id}", response_model=ContainerFile, summary="Retrieve a container file")
async def retrieve_container_file(
    container_id: ContainerId, file_id: FileId, tenant: TenantDep
) -> ContainerFile:
    """One file's metadata (its current size)."""
    return await run(tenant.client.containers.files.retrieve, container_id, file_id)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses=BINARY_RESPONSE,
    summary="Retrieve container file content",
)
async def container_file_content(
    container_id: ContainerId, file_id: FileId, tenant: TenantDep
) -> StreamingResponse:
    """The file's bytes, streamed (a link at its path is refused, never followed)."""
    content = await run(
        tenant.client.containers.files.content.retrieve, file_id, container_id=container_id
    )
    return download(content)


@router.delete("/{file_id}", response_model=ContainerFileDeleted, summary="Delete a container file")
async def delete_container_file(
    container_id: ContainerId, file_id: FileId, tenant: TenantDep
) -> ContainerFileDeleted:
    """Remove the file from the sandbox; answers 200 with a JSON body."""
    return await run(tenant.client.containers.files.delete, container_id, file_id)
