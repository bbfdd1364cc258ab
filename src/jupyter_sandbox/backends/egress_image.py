"""The egress proxy's image: Debian's squid, built offline like the kernel image.

`mmdebstrap` bootstraps `egress_recipe/packages.txt` into a base (`docker import`ed and kept as
a cache), then `egress_recipe/Dockerfile.egress` adds the entrypoint, the ACL helper and the
refusal pages, labelled with `egress_recipe_hash()`. squid.conf is not baked in: it is
rendered per store from `egress_recipe/squid.conf` (see `egress.EgressProxy.render_config`).

Built with `python -m jupyter_sandbox.backends.egress_image build`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import tarfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from string import Template

import docker
import docker.errors

from jupyter_sandbox._exceptions import APIConnectionError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import image_build, kernel_recipe
from jupyter_sandbox.backends.build_progress import BuildProgress, NullProgress, RichBuildProgress
from jupyter_sandbox.backends.images import ImageStatus
from jupyter_sandbox.settings import Settings

__all__ = [
    "EGRESS_REPOSITORY",
    "build_egress_image",
    "egress_image_status",
    "egress_recipe_hash",
    "recipe_files",
    "squid_conf_template",
]

EGRESS_REPOSITORY = "jupyter-sandbox-egress"
RECIPE_FILES = (
    "packages.txt",
    "Dockerfile.egress",
    "egress-entrypoint",
    "egress-policy",
    "egress-inject",
    "errors/ERR_JSBX_POLICY",
    "errors/ERR_JSBX_PORT",
    "errors/ERR_JSBX_ADDRESS",
    "errors/ERR_JSBX_LIMIT",
    "errors/ERR_JSBX_PROXY",
    "errors/ERR_JSBX_SCHEME",
    "errors/ERR_JSBX_METHOD",
)
_EXECUTABLES = ("egress-entrypoint", "egress-policy", "egress-inject")


def recipe_files() -> dict[str, bytes]:
    recipe = files("jupyter_sandbox.backends") / "egress_recipe"
    contents: dict[str, bytes] = {}
    for name in RECIPE_FILES:
        node = recipe
        for part in name.split("/"):
            node = node / part
        contents[name] = node.read_bytes()
    return contents


def squid_conf_template() -> str:
    """squid.conf as a string.Template (rendered per store, so not part of the image)."""
    return (files("jupyter_sandbox.backends") / "egress_recipe" / "squid.conf").read_text()


def egress_recipe_hash() -> str:
    """Hash of the proxy recipe and bootstrap options: the image's recipe-hash label."""
    recipe = recipe_files()
    digest = hashlib.sha256()
    for part in [
        EGRESS_REPOSITORY.encode(),
        *(o.encode() for o in kernel_recipe.BOOTSTRAP_OPTIONS),
        *(item for name in sorted(recipe) for item in (name.encode(), recipe[name])),
    ]:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def egress_image_status(docker_client: docker.DockerClient, tag: str) -> ImageStatus:
    """Whether the proxy image exists and was built from the current recipe."""
    try:
        image = docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        return ImageStatus(tag, exists=False, up_to_date=False, size_bytes=None, recipe_hash=None)
    except docker.errors.DockerException as exc:
        raise APIConnectionError(f"Docker engine unreachable: {exc}") from exc
    label = ((image.attrs.get("Config") or {}).get("Labels") or {}).get(
        kernel_recipe.RECIPE_HASH_LABEL
    )
    size = image.attrs.get("Size")
    return ImageStatus(
        tag,
        exists=True,
        up_to_date=label == egress_recipe_hash(),
        size_bytes=int(size) if size is not None else None,
        recipe_hash=label,
    )


def build_egress_image(
    docker_client: docker.DockerClient,
    *,
    tag: str | None = None,
    force: bool = False,
    progress: BuildProgress | None = None,
    cache_dir: Path | None = None,
) -> ImageStatus:
    """Build the proxy image offline unless `tag` already holds the current recipe.

    Raises:
        ImageBuildError: mmdebstrap or the build failed.
        APIConnectionError: the Docker engine is unreachable.
    """
    tag = tag or f"{EGRESS_REPOSITORY}:{__version__}"
    progress = progress or NullProgress()
    status = egress_image_status(docker_client, tag)
    if status.up_to_date and not force:
        return status
    recipe = recipe_files()
    packages = kernel_recipe.parse_packages(recipe["packages.txt"].decode())
    base = kernel_recipe.base_image_tag(packages).replace(
        kernel_recipe.BASE_REPOSITORY, f"{EGRESS_REPOSITORY}-base"
    )
    if image_build.lookup_image_id(docker_client, base) is None:
        with image_build.scratch_folder(cache_dir) as folder:
            tarball = folder / f"egress-rootfs-{base.partition(':')[2]}.tar"
            if not tarball.exists():
                progress.step(f"Bootstrapping Debian {kernel_recipe.SUITE} for the egress proxy")
                image_build.bootstrap(packages, tarball, progress)
            progress.step(f"Importing {base}")
            repository, _, base_tag = base.partition(":")
            with image_build.docker_errors():
                docker_client.api.import_image_from_file(
                    str(tarball), repository=repository, tag=base_tag
                )
    dockerfile = Template(recipe["Dockerfile.egress"].decode()).substitute(
        base_image=base, recipe_hash=egress_recipe_hash(), version=__version__
    )
    progress.step(f"Building {tag}")
    image_build.docker_build(
        docker_client,
        dockerfile,
        tag,
        pull=False,
        no_cache=False,
        progress=progress,
        context=_context_tar(dockerfile, recipe),
    )
    return egress_image_status(docker_client, tag)


def _context_tar(dockerfile: str, recipe: Mapping[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    entries = {"Dockerfile": dockerfile.encode(), **recipe}
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            info.mode = 0o755 if name in _EXECUTABLES else 0o644
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def main(argv: list[str] | None = None) -> int:
    """`python -m jupyter_sandbox.backends.egress_image build [--force]`: build the proxy image."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "build":
        sys.stderr.write("usage: python -m jupyter_sandbox.backends.egress_image build [--force]\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    with RichBuildProgress() as progress:
        status = build_egress_image(
            docker.from_env(), tag=settings.egress_image, force="--force" in args, progress=progress
        )
    sys.stdout.write(f"{status.tag}: recipe {status.recipe_hash}, {status.size_bytes} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
