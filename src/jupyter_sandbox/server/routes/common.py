"""Helpers the route modules share: JSON objects from bodies, streamed downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import Query, Request
from starlette.responses import StreamingResponse

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.blobs import CHUNK
from jupyter_sandbox.server import strict_json
from jupyter_sandbox.server.state import run
from jupyter_sandbox.types.binary import BinaryContent

Order = Annotated[
    Literal["asc", "desc"], Query(description="By creation time; default newest first.")
]
After = Annotated[
    str | None, Query(description="An object id: the page starts after it (in `order`).")
]
Limit = Annotated[int, Query(ge=1, le=100, description="Objects per page (1..100).")]


def list_params(limit: int, order: str, after: str | None) -> dict[str, Any]:
    """Keyword arguments for a client `list`."""
    params: dict[str, Any] = {"limit": limit, "order": order}
    if after is not None:
        params["after"] = after
    return params


async def json_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys, or BadRequestError."""
    raw = await request.body()
    body = strict_json.parse(raw) if raw else None
    if not isinstance(body, dict):
        raise BadRequestError(
            "We could not parse the JSON body of your request. The request body must be a "
            "JSON object (check the Content-Type header and the syntax)."
        )
    for key in body:
        if key not in allowed:
            raise BadRequestError(f"Invalid {key}: unknown parameter", param=str(key))
    return body


async def _chunks(content: BinaryContent) -> AsyncIterator[bytes]:
    try:
        while chunk := await run(content.read, CHUNK):
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):  # a client that leaves mid-download
            await run(content.close)


def download(
    content: BinaryContent,
    media_type: str = "application/octet-stream",
    *,
    fixed_size: bool = False,
) -> StreamingResponse:
    """Stream bytes from a worker thread, one MiB at a time, never whole in memory.

    Args:
        fixed_size: the bytes cannot change while they stream (stored blobs), so send a
            Content-Length; a sandbox's file may grow or shrink under us, so it goes chunked.
    """
    headers = {}
    if fixed_size and content.size is not None:
        headers["content-length"] = str(content.size)
    return StreamingResponse(_chunks(content), media_type=media_type, headers=headers)


BINARY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The raw bytes",
    }
}
