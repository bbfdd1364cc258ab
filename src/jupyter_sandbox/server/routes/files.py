"""`/v1/files`: upload once (multipart), then copy into sandboxes by id."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from starlette.responses import StreamingResponse

from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.routes.common import (
    BINARY_RESPONSE,
    After,
    Order,
    download,
    list_params,
)
from jupyter_sandbox.server.state import TenantDep, run
from jupyter_sandbox.types.file import FileDeleted, FileObject, FilePurpose
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.params import FileExpiresAfterParam

router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERROR_RESPONSES)
FileId = Annotated[str, Path(description="The file's id (`file-...`).")]


@router.post("", response_model=FileObject, summary="Upload a file")
async def create_file(
    tenant: TenantDep,
    file: Annotated[UploadFile, File(description="The bytes, with a filename.")],
    purpose: Annotated[
        str,
        Form(description="assistants, batch, fine-tune, vision, user_data or evals."),
    ],
    expires_anchor: Annotated[
        str | None, Form(alias="expires_after[anchor]", description="`created_at`.")
    ] = None,
    expires_seconds: Annotated[
        int | None,
        Form(alias="expires_after[seconds]", description="3600..2592000 seconds."),
    ] = None,
) -> FileObject:
    """Store an upload (streamed and hashed; over the size limit is a 413)."""
    # The form's values as they came: the core validates purpose and expires_after (a 400).
    expires_after = None
    if expires_anchor is not None or expires_seconds is not None:
        expires_after = {"anchor": expires_anchor or "created_at", "seconds": expires_seconds}
    return await run(
        tenant.client.files.create,
        file=(file.filename or "upload", file.file),
        purpose=cast("FilePurpose", purpose),
        expires_after=cast("FileExpiresAfterParam | None", expires_after),
    )


@router.get("", response_model=CursorPage[FileObject], summary="List files")
async def list_files(
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=10000, description="1..10000.")] = 10000,
    order: Order = "desc",
    after: After = None,
    purpose: Annotated[str | None, Query(description="Only files with this purpose.")] = None,
) -> CursorPage[FileObject]:
    """A page of this project's files."""
    return await run(tenant.client.files.list, **list_params(limit, order, after), purpose=purpose)


@router.get("/{file_id}", response_model=FileObject, summary="Retrieve a file")
async def retrieve_file(file_id: FileId, tenant: TenantDep) -> FileObject:
    """One file's metadata."""
    return await run(tenant.client.files.retrieve, file_id)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses=BINARY_RESPONSE,
    summary="Retrieve file content",
)
async def file_content(file_id: FileId, tenant: TenantDep) -> StreamingResponse:
    """The file's bytes, streamed."""
    return download(await run(tenant.client.files.content.retrieve, file_id), fixed_size=True)


@router.delete("/{file_id}", response_model=FileDeleted, summary="Delete a file")
async def delete_file(file_id: FileId, tenant: TenantDep) -> FileDeleted:
    """Forget the file (copies already in sandboxes stay)."""
    return await run(tenant.client.files.delete, file_id)
