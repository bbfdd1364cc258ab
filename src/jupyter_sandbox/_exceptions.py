"""The error tree, modelled on the openai SDK so callers catch the same names.

    JupyterSandboxError
     └── APIError
          ├── APIConnectionError          Docker engine (or server) unreachable
          │    └── APITimeoutError
          └── APIStatusError              carries an HTTP-like status_code
               ├── BadRequestError        400  invalid parameter
               ├── AuthenticationError    401
               ├── PermissionDeniedError  403
               ├── NotFoundError          404
               ├── ConflictError          409  wrong state for the operation
               ├── RequestTooLargeError   413
               ├── UnprocessableEntityError 422
               ├── RateLimitError         429
               └── InternalServerError    500
                    └── StoreUnavailableError 503  the shared store is unreachable: retry

Embedded mode raises the same classes as the HTTP server maps to status codes.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "JupyterSandboxError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "StoreUnavailableError",
    "UnprocessableEntityError",
]


class JupyterSandboxError(Exception):
    """Catch this to catch everything we raise."""


class APIError(JupyterSandboxError):
    """An operation failed; `message` says why and `param` names the culprit, if any."""

    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class APIConnectionError(APIError):
    """The Docker engine (or the server) could not be reached."""


class APITimeoutError(APIConnectionError):
    """The engine did not answer in time."""


class APIStatusError(APIError):
    """An error with an HTTP-like status code."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "invalid_request_error"


class BadRequestError(APIStatusError):
    """A parameter is missing or invalid."""

    status_code = 400


class AuthenticationError(APIStatusError):
    """No or wrong API key."""

    status_code = 401
    code = "invalid_api_key"


class PermissionDeniedError(APIStatusError):
    """The caller may not do this."""

    status_code = 403


class NotFoundError(APIStatusError):
    """No such object."""

    status_code = 404


class ConflictError(APIStatusError):
    """The object is in the wrong state for this operation."""

    status_code = 409


class RequestTooLargeError(APIStatusError):
    """An upload or body exceeds its configured limit."""

    status_code = 413


class UnprocessableEntityError(APIStatusError):
    """The request was understood but cannot be processed."""

    status_code = 422


class RateLimitError(APIStatusError):
    """A quota (live sandboxes, request rate) was hit."""

    status_code = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class InternalServerError(APIStatusError):
    """Something broke on our side; the message never carries internals over HTTP."""

    status_code = 500
    type = "server_error"


class StoreUnavailableError(InternalServerError):
    """The shared store (PostgreSQL) cannot be reached or dropped the connection; the same
    call may succeed in a few seconds. Over HTTP a 503 with `Retry-After`."""

    status_code = 503
    code = "store_unavailable"
    retry_after: ClassVar[float] = 2.0
    """Seconds a caller should wait before retrying."""
