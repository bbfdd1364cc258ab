"""The names users import are a promise: pin them."""

from __future__ import annotations

import jupyter_sandbox
from jupyter_sandbox import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BadRequestError,
    ConflictError,
    JupyterSandboxError,
    NotFoundError,
)


def test_all_is_pinned() -> None:
    assert sorted(jupyter_sandbox.__all__) == sorted(
        [
            "APIConnectionError",
            "APIError",
            "APIStatusError",
            "APITimeoutError",
            "AuthenticationError",
            "BadRequestError",
            "Client",
            "ConflictError",
            "Container",
            "Execution",
            "InternalServerError",
            "JupyterSandboxError",
            "NOT_GIVEN",
            "NotFoundError",
            "NotGiven",
            "PermissionDeniedError",
            "RateLimitError",
            "RequestTooLargeError",
            "Settings",
            "UnprocessableEntityError",
            "__version__",
        ]
    )


def test_error_tree_has_one_root_and_openai_status_codes() -> None:
    assert issubclass(APIError, JupyterSandboxError)
    assert issubclass(APIConnectionError, APIError)
    assert not issubclass(APIConnectionError, APIStatusError)
    assert (BadRequestError.status_code, NotFoundError.status_code, ConflictError.status_code) == (
        400,
        404,
        409,
    )
    error = BadRequestError("Invalid name", param="name")
    assert (str(error), error.param) == ("Invalid name", "name")
