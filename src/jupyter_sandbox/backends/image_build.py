"""The image build pipeline: the steps `build_image` runs against the Docker engine.

Bootstrapping the base rootfs with `mmdebstrap` and `docker import`ing it, pulling a registry
image, `docker build` of the kernel stage, and dropping the image a rebuild replaced. Engine
errors become `ImageBuildError` (refused) or `APIConnectionError` (unreachable).
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors

from jupyter_sandbox._exceptions import APIConnectionError, APIError
from jupyter_sandbox.backends.build_progress import BuildProgress
from jupyter_sandbox.backends.kernel_recipe import (
    BOOTSTRAP_OPTIONS,
    MIRRORS,
    SUITE,
    base_image_tag,
    context_tar,
    parse_packages,
    recipe_files,
)

logger = logging.getLogger(__name__)

LOG_TAIL = 30


class ImageBuildError(APIError):
    """The kernel image could not be built; `message` carries the tail of the build log."""


@contextmanager
def docker_errors() -> Iterator[None]:
    """Engine errors as `ImageBuildError` (refused) or `APIConnectionError` (unreachable)."""
    try:
        yield
    except docker.errors.ImageNotFound:
        raise
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"Docker engine refused: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise APIConnectionError(f"Docker engine unreachable: {exc}") from exc


def lookup_image_id(docker_client: docker.DockerClient, tag: str) -> str | None:
    """The id of the image `tag` names, or None if the engine has no such image."""
    with docker_errors():
        try:
            return str(docker_client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None


def ensure_base(
    docker_client: docker.DockerClient, progress: BuildProgress, cache_dir: Path | None
) -> str:
    """The base image's tag, bootstrapping and importing it if the engine lacks it."""
    packages = parse_packages(recipe_files()["packages.txt"].decode())
    base = base_image_tag(packages)
    if lookup_image_id(docker_client, base) is not None:
        logger.info("Reusing base image %s", base)
        return base
    with scratch_folder(cache_dir) as folder:
        tarball = folder / f"rootfs-{base.partition(':')[2]}.tar"
        if not tarball.exists():
            progress.step(f"Bootstrapping Debian {SUITE} ({len(packages)} packages)")
            bootstrap(packages, tarball, progress)
        size = tarball.stat().st_size
        logger.info("Rootfs tarball %s: %d bytes", tarball, size)
        progress.step(f"Importing {base} ({size / 1e6:.0f} MB)")
        repository, _, base_tag = base.partition(":")
        with docker_errors():
            docker_client.api.import_image_from_file(
                str(tarball), repository=repository, tag=base_tag
            )
    return base


@contextmanager
def scratch_folder(cache_dir: Path | None) -> Iterator[Path]:
    """`cache_dir` (kept), or a temporary folder deleted on exit."""
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="jsb-rootfs-") as scratch:
        yield Path(scratch)


def bootstrap(
    packages: list[str],
    tarball: Path,
    progress: BuildProgress,
    options: Sequence[str] = BOOTSTRAP_OPTIONS,
) -> None:
    """Bootstrap Debian with `packages` into `tarball` with mmdebstrap (written atomically);
    `options` replace the kernel image's mmdebstrap options."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError(
            "mmdebstrap is not installed (apt-get install mmdebstrap), "
            "or build from a registry image with from_registry"
        )
    partial = tarball.with_suffix(".partial.tar")
    command = [
        mmdebstrap,
        *options,
        "--include=" + ",".join(packages),
        SUITE,
        str(partial),
        *MIRRORS,
    ]
    logger.debug("Running %s", command)
    _run(command, progress, what="mmdebstrap")
    partial.rename(tarball)  # atomic: a cached tarball is always complete


def _run(command: list[str], progress: BuildProgress, *, what: str) -> None:
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        for line in process.stdout or ():
            tail.append(line)
            progress.log(line)
    if process.returncode != 0:
        raise ImageBuildError(f"{what} failed with status {process.returncode}:\n" + "".join(tail))


def ensure_registry_image(
    docker_client: docker.DockerClient, reference: str, progress: BuildProgress
) -> None:
    """Pull `reference` unless the engine already has it."""
    if lookup_image_id(docker_client, reference) is not None:
        return
    progress.step(f"Pulling {reference}")
    try:
        docker_client.images.pull(reference)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(
            f"cannot pull {reference}: no registry reachable ({exc}); "
            "use the offline build (without from_registry)",
            param="from_registry",
        ) from exc


def docker_build(
    docker_client: docker.DockerClient,
    dockerfile: str,
    tag: str,
    *,
    pull: bool,
    no_cache: bool,
    progress: BuildProgress,
    context: io.BytesIO | None = None,
) -> None:
    """`docker build` of `dockerfile` as `tag`; the build context defaults to the kernel
    recipe's (`context` replaces it: an uncompressed tar holding a Dockerfile)."""
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    with docker_errors():
        stream = docker_client.api.build(
            fileobj=context if context is not None else context_tar(dockerfile),
            custom_context=True,
            tag=tag,
            pull=pull,
            nocache=no_cache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if line.strip():
                        tail.append(line)
                        progress.log(line)
            if "error" in chunk:
                raise ImageBuildError(
                    f"docker build of {tag} failed: {chunk['error']}\n" + "\n".join(tail)
                )


def remove_if_dangling(docker_client: docker.DockerClient, image_id: str | None, tag: str) -> None:
    """Drop the image `tag` named before this build, unless it is still tagged or in use."""
    if image_id is None or image_id == lookup_image_id(docker_client, tag):
        return
    try:
        if docker_client.images.get(image_id).tags:
            return
        docker_client.images.remove(image_id)
    except docker.errors.APIError as exc:  # e.g. a live sandbox still runs the old image
        logger.warning("Kept the previous image %s: %s", image_id[:19], exc.explanation)
