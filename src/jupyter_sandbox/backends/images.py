"""Build and check the kernel image every sandbox runs.

Offline (default), in two stages:

1. base: `mmdebstrap` bootstraps Debian bookworm with `image_recipe/packages.txt` into a
   tarball, `docker import`ed as `jupyter-sandbox-base:<base hash>` and kept as a cache;
2. kernel: `image_recipe/Dockerfile.kernel` adds the sandbox user, directories and
   `sandbox-init`, labelled with `recipe_hash()`.

With `from_registry`, a registry image (for example `python:3.11-slim`) replaces stage 1 and
pip installs the Python packages. The kernel image is rebuilt only when its recipe changed.

This module holds the entry points (`image_status`, `build_image`); the recipe (hashes, tags,
Dockerfiles) lives in `kernel_recipe`, the pipeline's steps in `image_build` and progress
reporting in `build_progress`; import their names from there.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from jupyter_sandbox.backends import kernel_wheels
from jupyter_sandbox.backends.build_progress import BuildProgress, NullProgress, RichBuildProgress
from jupyter_sandbox.backends.image_build import (
    ImageBuildError,
    docker_build,
    docker_errors,
    ensure_base,
    ensure_registry_image,
    lookup_image_id,
    remove_if_dangling,
)
from jupyter_sandbox.backends.kernel_recipe import (
    BASE_REPOSITORY,
    KERNEL_REPOSITORY,
    RECIPE_HASH_LABEL,
    context_tar,
    default_image_tag,
    recipe_files,
    recipe_hash,
    render_kernel_dockerfile,
    render_registry_dockerfile,
)

__all__ = [
    "BASE_REPOSITORY",
    "KERNEL_REPOSITORY",
    "RECIPE_HASH_LABEL",
    "BuildProgress",
    "ImageBuildError",
    "ImageStatus",
    "RichBuildProgress",
    "build_image",
    "default_image_tag",
    "image_status",
    "recipe_hash",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageStatus:
    """What the engine holds under one tag."""

    tag: str
    exists: bool
    up_to_date: bool
    """True when the image's recipe-hash label equals `recipe_hash()`."""
    size_bytes: int | None
    recipe_hash: str | None
    """The image's recipe-hash label, if it has one."""


def image_status(docker_client: docker.DockerClient, tag: str) -> ImageStatus:
    """Whether `tag` exists locally and was built from the current recipe.

    Raises:
        APIConnectionError: the Docker engine is unreachable.
    """
    with docker_errors():
        try:
            image = docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            return ImageStatus(
                tag, exists=False, up_to_date=False, size_bytes=None, recipe_hash=None
            )
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    label = labels.get(RECIPE_HASH_LABEL)
    size = image.attrs.get("Size")
    return ImageStatus(
        tag,
        exists=True,
        up_to_date=label == recipe_hash(),
        size_bytes=int(size) if size is not None else None,
        recipe_hash=label,
    )


def wheel_cache(cache_dir: Path | None) -> Path:
    """Where downloaded wheels are kept: `cache_dir/wheels`, else the user's cache folder."""
    if cache_dir is not None:
        return cache_dir / "wheels"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "jupyter-sandbox" / "wheels"


def build_image(
    docker_client: docker.DockerClient,
    *,
    tag: str | None = None,
    force: bool = False,
    from_registry: str | None = None,
    progress: BuildProgress | None = None,
    cache_dir: Path | None = None,
) -> ImageStatus:
    """Build the kernel image unless `tag` already holds the current recipe.

    Args:
        tag: defaults to `default_image_tag()`.
        force: rebuild the kernel stage even if up to date, without Docker's layer cache
            (the base image is still reused; remove `jupyter-sandbox-base:*` to re-bootstrap).
        from_registry: base on this registry image instead of bootstrapping Debian.
        cache_dir: keep the rootfs tarball here (reused if the base image is missing);
            by default it lives in a temporary folder, deleted after the import.

    Raises:
        ImageBuildError: a stage failed, mmdebstrap is missing, or the registry is unreachable.
        APIConnectionError: the Docker engine is unreachable.
    """
    tag = tag or default_image_tag()
    progress = progress or NullProgress()
    progress.step(f"Checking {tag}")
    status = image_status(docker_client, tag)
    if status.up_to_date and not force:
        logger.info("Image %s is up to date (recipe %s)", tag, status.recipe_hash)
        return status
    old_id = lookup_image_id(docker_client, tag)
    started = time.monotonic()
    if from_registry is None:
        base = ensure_base(docker_client, progress, cache_dir)
        dockerfile, pull = render_kernel_dockerfile(base), False
    else:
        ensure_registry_image(docker_client, from_registry, progress)
        dockerfile, pull = render_registry_dockerfile(from_registry), False
    progress.step("Downloading the image's wheels (wheels.txt)")
    wheels = kernel_wheels.download(recipe_files()["wheels.txt"], wheel_cache(cache_dir))
    progress.step(f"Building {tag}")
    docker_build(
        docker_client,
        dockerfile,
        tag,
        pull=pull,
        no_cache=force,
        progress=progress,
        context=context_tar(dockerfile, wheels),
    )
    remove_if_dangling(docker_client, old_id, tag)
    logger.info("Built %s in %.1f s", tag, time.monotonic() - started)
    return image_status(docker_client, tag)
