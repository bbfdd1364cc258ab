"""Build and check the kernel image every sandbox runs.

Offline (default), in two stages:

1. base: `mmdebstrap` bootstraps Debian bookworm with `image_recipe/packages.txt` into a
   tarball, `docker import`ed as `jupyter-sandbox-base:<base hash>` and kept as a cache;
2. kernel: `image_recipe/Dockerfile.kernel` adds the sandbox user, directories and
   `sandbox-init`, labelled with `recipe_hash()`.

With `from_registry`, a registry image (for example `python:3.11-slim`) replaces stage 1 and
pip installs the Python packages. The kernel image is rebuilt only when its recipe changed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Protocol

import docker
import docker.errors
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from jupyter_sandbox._exceptions import APIConnectionError, APIError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends.labels import PREFIX

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

KERNEL_REPOSITORY = "jupyter-sandbox-kernel"
BASE_REPOSITORY = "jupyter-sandbox-base"
RECIPE_HASH_LABEL = f"{PREFIX}.recipe-hash"
BASE_LABEL = f"{PREFIX}.base-image"

RECIPE_FILES = (
    "packages.txt",
    "Dockerfile.kernel",
    "sandbox-init",
    "sandbox_egress_reason.py",
)
SUITE = "bookworm"
# The host's sources (/etc/apt/sources.list.d/debian.sources), given explicitly because
# mmdebstrap reads mirrors from stdin when stdin is not a terminal.
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Part of the base hash: changing them rebuilds the base. Debian's python3-fonttools pulls in
# scipy, sympy and pythran (so gcc, g++, binutils and boost headers), and ipykernel pulls in
# debugpy and gdb: the packages stay (scipy and sympy are useful; postinst scripts need the
# compiler drivers), while the compilers proper (cc1*, lto), headers, static libraries and
# test suites, which nothing here runs, are left out.
BOOTSTRAP_OPTIONS = (
    "--variant=apt",
    '--aptopt=APT::Install-Recommends "false"',
    *(
        f"--dpkgopt=path-{rule}"
        for rule in (
            "exclude=/usr/share/doc/*",
            "include=/usr/share/doc/*/copyright",
            "exclude=/usr/share/man/*",
            "exclude=/usr/share/info/*",
            "exclude=/usr/share/locale/*",
            "include=/usr/share/locale/locale.alias",
            "exclude=/usr/share/lintian/*",
            "exclude=/usr/include/*",
            "exclude=/usr/lib/gcc/*",
            "exclude=/usr/bin/x86_64-linux-gnu-lto-dump-*",
            "exclude=/usr/lib/*.a",
        )
    ),
    # Test suites: removed after install, because py3compile needs their folders meanwhile.
    '--customize-hook=find "$1"/usr/lib/python3/dist-packages -type d -name tests -prune'
    " -exec rm -rf {} +",
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/*'
    ' "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log',
)
REGISTRY_PIP_PACKAGES = ("ipykernel", "numpy", "pandas", "matplotlib")
_LOG_TAIL = 30


class ImageBuildError(APIError):
    """The kernel image could not be built; `message` carries the tail of the build log."""


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


class BuildProgress(Protocol):
    """Receives a build's stages and output lines (the CLI shows them with rich)."""

    def step(self, description: str) -> None:
        """A new stage started."""

    def log(self, line: str) -> None:
        """One line of tool output within the current stage."""


class RichBuildProgress:
    """A `BuildProgress` drawn as a rich spinner with the stage, last output line and time."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("[dim]{task.fields[line]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichBuildProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish()
        self._progress.stop()

    def step(self, description: str) -> None:
        self._finish()
        self._task = self._progress.add_task(description, total=None, line="")

    def log(self, line: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, line=line.strip()[:60])

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=1, completed=1, line="")
            self._task = None


class _NullProgress:
    def step(self, description: str) -> None:
        logger.info("%s", description)

    def log(self, line: str) -> None:
        logger.debug("%s", line.rstrip())


def default_image_tag() -> str:
    """The tag this version of the package runs sandboxes from."""
    return f"{KERNEL_REPOSITORY}:{__version__}"


def _recipe_files() -> dict[str, bytes]:
    recipe = files("jupyter_sandbox.backends") / "image_recipe"
    return {name: (recipe / name).read_bytes() for name in RECIPE_FILES}


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(part)
    return digest.hexdigest()[:16]


def _hash_recipe(recipe: Mapping[str, bytes]) -> str:
    parts = [BASE_REPOSITORY.encode(), *(o.encode() for o in BOOTSTRAP_OPTIONS)]
    for name in sorted(recipe):
        parts += [name.encode(), recipe[name]]
    return _digest(parts)


def recipe_hash() -> str:
    """Hash of the recipe files and bootstrap options: 16 hex digits, the image's label."""
    return _hash_recipe(_recipe_files())


def parse_packages(text: str) -> list[str]:
    """Package names from `packages.txt`: one per line, `#` comments, blank lines ignored."""
    names = (line.partition("#")[0].strip() for line in text.splitlines())
    return [name for name in names if name]


def base_image_tag(packages: Iterable[str]) -> str:
    """The cached base image for a package list (and the bootstrap options)."""
    parts = [*(o.encode() for o in BOOTSTRAP_OPTIONS), *(p.encode() for p in sorted(packages))]
    return f"{BASE_REPOSITORY}:{_digest(parts)}"


def render_kernel_dockerfile(base_image: str, recipe: Mapping[str, bytes] | None = None) -> str:
    """The stage-2 Dockerfile: `Dockerfile.kernel` filled in for `base_image`."""
    recipe = _recipe_files() if recipe is None else recipe
    template = Template(recipe["Dockerfile.kernel"].decode())
    return template.substitute(
        base_image=base_image, recipe_hash=_hash_recipe(recipe), version=__version__
    )


def render_registry_dockerfile(from_registry: str) -> str:
    """A multi-stage Dockerfile: pip packages on `from_registry`, then stage 2."""
    prelude = "\n".join(
        [
            f"FROM {from_registry} AS sandbox-base",
            "USER root",
            "RUN python3 -m pip install --no-cache-dir " + " ".join(REGISTRY_PIP_PACKAGES) + " \\",
            # sandbox-init's shebang is /usr/bin/python3; official images put it in /usr/local.
            ' && { [ -e /usr/bin/python3 ] || ln -s "$(command -v python3)" /usr/bin/python3; }',
            f'LABEL {BASE_LABEL}="{from_registry}"',
            "",
        ]
    )
    return prelude + "\n" + render_kernel_dockerfile("sandbox-base")


def image_status(docker_client: docker.DockerClient, tag: str) -> ImageStatus:
    """Whether `tag` exists locally and was built from the current recipe.

    Raises:
        APIConnectionError: the Docker engine is unreachable.
    """
    with _docker_errors():
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
    progress = progress or _NullProgress()
    progress.step(f"Checking {tag}")
    status = image_status(docker_client, tag)
    if status.up_to_date and not force:
        logger.info("Image %s is up to date (recipe %s)", tag, status.recipe_hash)
        return status
    old_id = _image_id(docker_client, tag)
    started = time.monotonic()
    if from_registry is None:
        base = _ensure_base(docker_client, progress, cache_dir)
        dockerfile, pull = render_kernel_dockerfile(base), False
    else:
        _ensure_registry_image(docker_client, from_registry, progress)
        dockerfile, pull = render_registry_dockerfile(from_registry), False
    progress.step(f"Building {tag}")
    _docker_build(docker_client, dockerfile, tag, pull=pull, no_cache=force, progress=progress)
    _remove_if_dangling(docker_client, old_id, tag)
    logger.info("Built %s in %.1f s", tag, time.monotonic() - started)
    return image_status(docker_client, tag)


@contextmanager
def _docker_errors() -> Iterator[None]:
    try:
        yield
    except docker.errors.ImageNotFound:
        raise
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"Docker engine refused: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise APIConnectionError(f"Docker engine unreachable: {exc}") from exc


def _image_id(docker_client: docker.DockerClient, tag: str) -> str | None:
    with _docker_errors():
        try:
            return str(docker_client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None


def _ensure_base(
    docker_client: docker.DockerClient, progress: BuildProgress, cache_dir: Path | None
) -> str:
    """The base image's tag, bootstrapping and importing it if the engine lacks it."""
    packages = parse_packages(_recipe_files()["packages.txt"].decode())
    base = base_image_tag(packages)
    if _image_id(docker_client, base) is not None:
        logger.info("Reusing base image %s", base)
        return base
    with _scratch_folder(cache_dir) as folder:
        tarball = folder / f"rootfs-{base.partition(':')[2]}.tar"
        if not tarball.exists():
            progress.step(f"Bootstrapping Debian {SUITE} ({len(packages)} packages)")
            _bootstrap(packages, tarball, progress)
        size = tarball.stat().st_size
        logger.info("Rootfs tarball %s: %d bytes", tarball, size)
        progress.step(f"Importing {base} ({size / 1e6:.0f} MB)")
        repository, _, base_tag = base.partition(":")
        with _docker_errors():
            docker_client.api.import_image_from_file(
                str(tarball), repository=repository, tag=base_tag
            )
    return base


@contextmanager
def _scratch_folder(cache_dir: Path | None) -> Iterator[Path]:
    """`cache_dir` (kept), or a temporary folder deleted on exit."""
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="jsb-rootfs-") as scratch:
        yield Path(scratch)


def _bootstrap(packages: list[str], tarball: Path, progress: BuildProgress) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError(
            "mmdebstrap is not installed (apt-get install mmdebstrap), "
            "or build from a registry image with from_registry"
        )
    partial = tarball.with_suffix(".partial.tar")
    command = [
        mmdebstrap,
        *BOOTSTRAP_OPTIONS,
        "--include=" + ",".join(packages),
        SUITE,
        str(partial),
        *MIRRORS,
    ]
    logger.debug("Running %s", command)
    _run(command, progress, what="mmdebstrap")
    partial.rename(tarball)  # atomic: a cached tarball is always complete


def _run(command: list[str], progress: BuildProgress, *, what: str) -> None:
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
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


def _ensure_registry_image(
    docker_client: docker.DockerClient, reference: str, progress: BuildProgress
) -> None:
    if _image_id(docker_client, reference) is not None:
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


def _context_tar(dockerfile: str) -> io.BytesIO:
    """An in-memory build context: the Dockerfile, sandbox-init (mode 0755), site hooks."""
    buffer = io.BytesIO()
    entries = {
        "Dockerfile": (dockerfile.encode(), 0o644),
        "sandbox-init": (_recipe_files()["sandbox-init"], 0o755),
        "sandbox_egress_reason.py": (_recipe_files()["sandbox_egress_reason.py"], 0o644),
    }
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (data, mode) in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _docker_build(
    docker_client: docker.DockerClient,
    dockerfile: str,
    tag: str,
    *,
    pull: bool,
    no_cache: bool,
    progress: BuildProgress,
) -> None:
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    with _docker_errors():
        stream = docker_client.api.build(
            fileobj=_context_tar(dockerfile),
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


def _remove_if_dangling(docker_client: docker.DockerClient, image_id: str | None, tag: str) -> None:
    """Drop the image `tag` named before this build, unless it is still tagged or in use."""
    if image_id is None or image_id == _image_id(docker_client, tag):
        return
    try:
        if docker_client.images.get(image_id).tags:
            return
        docker_client.images.remove(image_id)
    except docker.errors.APIError as exc:  # e.g. a live sandbox still runs the old image
        logger.warning("Kept the previous image %s: %s", image_id[:19], exc.explanation)
