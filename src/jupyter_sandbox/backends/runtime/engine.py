"""The Docker engine connection and its errors, mapped to ours once, at this edge."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
from docker.utils import kwargs_from_env

from jupyter_sandbox._exceptions import APIConnectionError, InternalServerError, NotFoundError

_ENGINE_HINT = (
    "start it with `sudo systemctl start docker` (or `sudo dockerd &`), "
    "or point DOCKER_HOST at a running engine"
)


_FIRST_API = "1.24"
"""Only for the first request (`/version`, unversioned); then the engine's own version."""


class ImageNotBuiltError(NotFoundError):
    """The kernel image is missing; the message says how to build it."""


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Map the docker SDK's errors to ours, once, at this edge."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageNotBuiltError(
            f"The kernel image is missing ({exc.explanation}): build it with "
            "`jupyter-sandbox image build`",
            param="image",
        ) from exc
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what}: not found in the Docker engine") from exc
    except docker.errors.APIError as exc:
        raise InternalServerError(f"{what}: the Docker engine refused: {exc.explanation}") from exc
    except (docker.errors.DockerException, OSError) as exc:
        raise APIConnectionError(f"Docker engine unreachable ({exc}); {_ENGINE_HINT}") from exc
    except Exception as exc:
        if not is_ssh_error(exc):
            raise
        raise APIConnectionError(f"Docker engine unreachable over ssh ({exc!r})") from exc


def is_ssh_error(exc: BaseException) -> bool:
    """Whether `exc` is paramiko's (an `ssh://` engine's transport: a refused channel, a
    dropped connection), which docker-py lets through unmapped."""
    paramiko = sys.modules.get("paramiko")  # never imported for other engines
    return paramiko is not None and isinstance(exc, paramiko.SSHException)


def is_local_engine() -> bool:
    """Whether DOCKER_HOST names this machine's engine (unset, or a unix socket)."""
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


@contextmanager
def _ssh_errors(host: str) -> Iterator[None]:
    """An `ssh://` engine: paramiko's errors (a refused key, an unknown host key) are not
    docker-py's; map them here too, and say how to get paramiko if it is missing."""
    if not host.startswith("ssh://"):
        yield
        return
    try:
        import paramiko
    except ImportError:
        raise APIConnectionError(
            f"DOCKER_HOST={host} needs paramiko (docker-py's ssh transport): "
            "pip install 'jupyter-sandbox[ssh]'"
        ) from None
    try:
        yield
    except paramiko.SSHException as exc:
        raise APIConnectionError(
            f"Docker engine unreachable over ssh ({type(exc).__name__}: {exc}); docker-py "
            "reads the key and host key from ~/.ssh/config and ~/.ssh/known_hosts"
        ) from exc


def connect_engine(timeout: float = 60) -> docker.DockerClient:
    """A client for the engine named by the environment (DOCKER_HOST, or the local socket)."""
    client: docker.DockerClient | None = None
    try:
        with (
            _ssh_errors(os.environ.get("DOCKER_HOST", "")),
            docker_errors("connecting to the Docker engine"),
        ):
            # Not from_env's "auto" version: it asks the engine before trust_env can be
            # turned off, and requests would then verify a TLS engine against
            # REQUESTS_CA_BUNDLE instead of DOCKER_CERT_PATH's CA (or route it via *_PROXY).
            client = docker.DockerClient(
                **kwargs_from_env(), timeout=int(timeout), version=_FIRST_API
            )
            client.api.trust_env = False
            version = str(client.api.version(api_version=False)["ApiVersion"])
            client.api._version = version  # type: ignore[attr-defined]  # what "auto" sets
            client.ping()
    except BaseException:
        if client is not None:
            client.close()
        raise
    return client
