"""OpenAI's error body for every failure, mapped from our error tree at this one boundary.

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

Statuses come from the exception classes (`_exceptions.py`), so the openai SDK raises the
class of the same name. Never a framework `{"detail": ...}`, never a 422 for a bad parameter
(400, as OpenAI), never internals in a 500.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from jupyter_sandbox._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BadRequestError,
    ConflictError,
    RateLimitError,
    RequestTooLargeError,
    StoreUnavailableError,
)
from jupyter_sandbox.core.validation import bad_request_from

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "The server had an error while processing your request. Sorry about that!"
STORE_UNAVAILABLE_MESSAGE = (
    "The server's store is unavailable (restarting or unreachable); retry after the "
    "Retry-After seconds"
)


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    model_config = ConfigDict(extra="allow")
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class QuotaExceededError(RateLimitError):
    """A per-key or per-project limit; says when to come back and whether retrying helps."""

    def __init__(self, message: str, *, retry_after: float, should_retry: bool, code: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.limit_code = code


class BodyTooLarge(HTTPException):
    """Raised from the body stream once a request passes the size limit (FastAPI re-raises
    HTTPExceptions from body parsing as they are, instead of turning them into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413)
        self.limit = limit


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers=dict(headers or {}))


def too_large_message(limit: int) -> str:
    """What a 413 says."""
    return f"Request body too large: the limit is {limit} bytes"


def api_error_parts(exc: APIError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for one of our exceptions."""
    headers: dict[str, str] = {}
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        type_ = exc.type
        code = exc.code
        if isinstance(exc, QuotaExceededError):
            code = exc.limit_code
            seconds = max(1, math.ceil(exc.retry_after))
            headers["retry-after"] = str(seconds)
            headers["retry-after-ms"] = str(max(1, math.ceil(exc.retry_after * 1000)))
            headers["x-should-retry"] = "true" if exc.should_retry else "false"
        elif isinstance(exc, ConflictError):
            # Our 409s mean "wrong state" (expired, failed): retrying cannot help.
            headers["x-should-retry"] = "false"
        elif isinstance(exc, RequestTooLargeError):
            code = "request_too_large"
        message = exc.message
        if isinstance(exc, StoreUnavailableError):
            # The store's address stays in the server's log; the caller learns when to retry.
            message = STORE_UNAVAILABLE_MESSAGE
            headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
            headers["x-should-retry"] = "true"
        elif status >= 500 and not getattr(exc, "public_message", False):
            message = INTERNAL_MESSAGE
    elif isinstance(exc, APIConnectionError):
        status, type_, code = 503, "server_error", "engine_unavailable"
        message = "The sandbox engine is unavailable; try again later"
    else:
        status, type_, code, message = 500, "server_error", None, INTERNAL_MESSAGE
    return status, error_body(message, type=type_, param=exc.param, code=code), headers


def validation_message(errors: list[Any]) -> APIError:
    """A framework validation failure as a BadRequestError naming the parameter."""
    error = dict(errors[0]) if errors else {"loc": (), "msg": "invalid", "type": "value_error"}
    location = tuple(error.get("loc", ()))
    where = location[0] if location else None
    if error.get("type") == "json_invalid":
        return BadRequestError(
            "We could not parse the JSON body of your request. The request body must be a "
            "JSON object (check the Content-Type header and the syntax)."
        )
    if where == "body" and len(location) == 1:
        return BadRequestError("The request body must be a JSON object.")
    if where in ("body", "query", "path", "header"):
        location = location[1:]
    error["loc"] = location
    error.setdefault("input", None)
    return bad_request_from(error)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into OpenAI's error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        status, body, headers = api_error_parts(exc)
        if status >= 500:
            logger.error(
                "request %s failed: %r", request.scope.get("state", {}).get("request_id"), exc
            )
        return _json(status, body, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        status, body, headers = api_error_parts(validation_message(list(exc.errors())))
        return _json(status, body, headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if isinstance(exc, BodyTooLarge):
            body = error_body(
                too_large_message(exc.limit),
                type="invalid_request_error",
                code="request_too_large",
            )
            return _json(413, body, {"connection": "close"})
        if exc.status_code in (404, 405):
            # OpenAI answers an unknown route or method with 404 "Invalid URL".
            body = error_body(
                f"Invalid URL ({request.method} {request.url.path})",
                type="invalid_request_error",
                code="unknown_url",
            )
            return _json(404, body)
        if exc.status_code == 400:
            detail = exc.detail if isinstance(exc.detail, str) else "Invalid request"
            return _json(400, error_body(detail, type="invalid_request_error"))
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        type_ = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        if exc.status_code >= 500:
            message = INTERNAL_MESSAGE
        return _json(exc.status_code, error_body(message, type=type_), exc.headers)


async def send_error(
    send: Send,
    status: int,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Write an error response straight to ASGI (for the middleware, before any route)."""
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
