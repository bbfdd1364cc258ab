"""The cluster's errors, and engine errors mapped to them once, at the engine's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors

from jupyter_sandbox._exceptions import APIConnectionError, APIError

__all__ = ["ClusterError", "engine_errors"]


class ClusterError(APIError):
    """A node or the Swarm could not be set up; `message` says which step and why."""


@contextmanager
def engine_errors() -> Iterator[None]:
    """Engine errors as `ClusterError` (refused) or `APIConnectionError` (unreachable)."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise ClusterError(f"Docker engine refused: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise APIConnectionError(f"Docker engine unreachable: {exc}") from exc
