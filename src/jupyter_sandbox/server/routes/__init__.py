"""The `/v1` routes, one module per resource, as the openai SDK's resources mirror the URLs."""

from __future__ import annotations

from typing import Any

from jupyter_sandbox.server.errors import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid parameter (`param` names it)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "No such object in your project, or URL"},
    409: {"model": ErrorResponse, "description": "Wrong state (x-should-retry: false)"},
    413: {"model": ErrorResponse, "description": "Body or upload over the limit"},
    429: {"model": ErrorResponse, "description": "Rate or live-sandbox quota (retry-after)"},
    500: {"model": ErrorResponse, "description": "Server error (no internals)"},
}
"""Documented on every route (the middleware can answer any of them)."""
