"""The last boundary of the public Python API: a raw exception from any layer below leaves a
public method as an InternalServerError (chained, logged), never as itself."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from jupyter_sandbox._exceptions import InternalServerError, JupyterSandboxError

logger = logging.getLogger("jupyter_sandbox")

_T = TypeVar("_T", bound=type)


def _mapped(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except JupyterSandboxError:
            raise
        except Exception as exc:
            logger.exception("%s failed unexpectedly", method.__qualname__)
            raise InternalServerError(
                f"{method.__qualname__} failed unexpectedly: {type(exc).__name__}: {exc}"
            ) from exc

    return call


def api_errors(cls: _T) -> _T:
    """Wrap every public method of `cls` (a resource class of the client) in the boundary."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and callable(value) and not isinstance(value, type):
            setattr(cls, name, _mapped(value))
    return cls
