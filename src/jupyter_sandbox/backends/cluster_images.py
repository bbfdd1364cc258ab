"""Copying images into cluster nodes: `docker save` on the host engine, `load` on each node.

No registry is involved (none exists where the images are built offline): each image is saved
once to a scratch tarball, then streamed into every node's engine over its TLS connection.
`LoadProgress` reports bytes so the CLI can draw a progress bar.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import docker
import docker.errors

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.cluster_errors import ClusterError, engine_errors

__all__ = ["LoadProgress", "NullLoadProgress", "copy_images"]

CHUNK = 1 << 20


class LoadProgress(Protocol):
    """Receives the bytes of each save or load as it goes."""

    def start(self, description: str, total: int | None) -> None:
        """A new transfer of about `total` bytes began."""

    def advance(self, count: int) -> None:
        """`count` more bytes went through."""


class NullLoadProgress:
    """A `LoadProgress` that draws nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


def copy_images(
    engine: docker.DockerClient,
    tags: list[str],
    nodes: dict[str, docker.DockerClient],
    progress: LoadProgress,
) -> dict[str, float]:
    """Copy the images `tags` from `engine` into every node (name -> client); returns the
    seconds each step took ("save <tag>", "load <tag> <node>").

    Raises:
        BadRequestError: the engine lacks one of the images (param `images`).
        ClusterError: a node refused an image.
    """
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="jsb-cluster-images-") as scratch:
        for tag in tags:
            tarball = Path(scratch) / "image.tar"
            started = time.monotonic()
            _save(engine, tag, tarball, progress)
            timings[f"save {tag}"] = round(time.monotonic() - started, 2)
            for name, client in nodes.items():
                started = time.monotonic()
                _load(client, tarball, f"{tag} -> {name}", progress)
                timings[f"load {tag} {name}"] = round(time.monotonic() - started, 2)
    return timings


def _save(engine: docker.DockerClient, tag: str, tarball: Path, progress: LoadProgress) -> None:
    with engine_errors():
        try:
            image = engine.images.get(tag)
        except docker.errors.ImageNotFound as exc:
            raise BadRequestError(
                f"the engine has no image {tag!r}: build it with `jupyter-sandbox image build`",
                param="images",
            ) from exc
        size = image.attrs.get("Size")
        progress.start(f"save {tag}", int(size) if size else None)
        with tarball.open("wb") as file:
            for chunk in image.save(chunk_size=CHUNK, named=True):
                file.write(chunk)
                progress.advance(len(chunk))


def _load(client: docker.DockerClient, tarball: Path, what: str, progress: LoadProgress) -> None:
    progress.start(f"load {what}", tarball.stat().st_size)

    def chunks() -> Iterator[bytes]:
        with tarball.open("rb") as file:
            while data := file.read(CHUNK):
                progress.advance(len(data))
                yield data

    with engine_errors():
        for message in client.api.load_image(chunks()):  # type: ignore[no-untyped-call]
            if isinstance(message, dict) and message.get("error"):
                raise ClusterError(f"loading {what} failed: {message['error']}")
