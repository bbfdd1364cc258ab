"""jupyter-sandbox: hardened Docker sandboxes running Jupyter kernels, OpenAI-shaped."""

from typing import Any

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
from jupyter_sandbox.types.params import NOT_GIVEN, NotGiven


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_sandbox`: register the `%sandbox` and `%%sandbox` magics."""
    from jupyter_sandbox.jupyter.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext jupyter_sandbox`: remove the magics."""
    from jupyter_sandbox.jupyter.magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "NOT_GIVEN",
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
    "NotGiven",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "Settings",
    "UnprocessableEntityError",
    "__version__",
]
