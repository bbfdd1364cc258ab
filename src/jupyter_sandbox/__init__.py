"""jupyter-sandbox: hardened Docker sandboxes running Jupyter kernels, OpenAI-shaped."""

from jupyter_sandbox._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JupyterSandboxError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UnprocessableEntityError,
)
from jupyter_sandbox._version import __version__
from jupyter_sandbox.client import Client
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types import Container, Execution

__all__ = [
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
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "Settings",
    "UnprocessableEntityError",
    "__version__",
]
