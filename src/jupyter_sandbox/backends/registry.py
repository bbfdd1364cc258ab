"""Backends by name: what `Client(backend="...")` and the `backend` setting accept."""

from __future__ import annotations

import importlib
from typing import cast

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.base import Backend
from jupyter_sandbox.settings import Settings

BACKENDS = {
    "docker": "jupyter_sandbox.backends.docker_backend:DockerBackend",
    "local": "jupyter_sandbox.testing:LocalBackend",
    "swarm": "jupyter_sandbox.backends.swarm_backend:SwarmBackend",
}
"""Name: `module:class`; the class is built with the settings (imported only when named)."""


def build_backend(name: str, settings: Settings) -> Backend:
    """The backend called `name`, built for `settings`.

    Raises:
        BadRequestError: naming `backend`, for a name not in `BACKENDS`.
    """
    target = BACKENDS.get(name) if isinstance(name, str) else None
    if target is None:
        raise BadRequestError(
            f"Invalid backend: {name!r:.40} (known: {', '.join(sorted(BACKENDS))})",
            param="backend",
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadRequestError(
            f"Invalid backend: {name!r} is not available here ({exc})", param="backend"
        ) from exc
    return cast(Backend, getattr(module, class_name)(settings))
