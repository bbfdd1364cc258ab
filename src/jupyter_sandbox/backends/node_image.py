"""The cluster node's image: Debian's Docker engine in a container, built offline.

`mmdebstrap` bootstraps `node_recipe/packages.txt` (docker.io, containerd, runc, iptables,
fuse-overlayfs) into a base (`docker import`ed and kept as a cache), then
`node_recipe/Dockerfile.node` adds the entrypoint. The tag is the recipe's digest
(`jupyter-sandbox-node:<hash>`), so a changed recipe is a new image and never disturbs a
running cluster. The node runs with every capability but one (`cluster_nodes.NODE_CAP_DROP`):
it is the operator's own machine, not a sandbox.

Built by `jupyter-sandbox cluster up` when missing, or with
`python -m jupyter_sandbox.backends.node_image build`.
"""

from __future__ import annotations

import io
import logging
import sys
import tarfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from string import Template

import docker

from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import image_build, kernel_recipe
from jupyter_sandbox.backends.build_progress import BuildProgress, NullProgress

__all__ = [
    "NODE_REPOSITORY",
    "build_node_image",
    "node_image_tag",
    "node_recipe_hash",
    "recipe_files",
]

logger = logging.getLogger(__name__)

NODE_REPOSITORY = "jupyter-sandbox-node"
RECIPE_FILES = ("packages.txt", "Dockerfile.node", "node-entrypoint", "sshd_config")
_EXECUTABLES = ("node-entrypoint",)
# The kernel image's options, minus its hook that prunes Python test suites (no Python here).
BOOTSTRAP_OPTIONS = tuple(
    option for option in kernel_recipe.BOOTSTRAP_OPTIONS if "dist-packages" not in option
)


def recipe_files() -> dict[str, bytes]:
    """The contents of `node_recipe/`, by file name."""
    recipe = files("jupyter_sandbox.backends") / "node_recipe"
    return {name: (recipe / name).read_bytes() for name in RECIPE_FILES}


def node_recipe_hash(recipe: Mapping[str, bytes] | None = None) -> str:
    """Digest of the node recipe and the bootstrap options: 16 hex digits."""
    recipe = recipe_files() if recipe is None else recipe
    parts = [NODE_REPOSITORY.encode(), *(o.encode() for o in BOOTSTRAP_OPTIONS)]
    for name in sorted(recipe):
        parts += [name.encode(), recipe[name]]
    return kernel_recipe._digest(parts)


def node_image_tag() -> str:
    """The node image this recipe builds: its tag is the recipe's digest."""
    return f"{NODE_REPOSITORY}:{node_recipe_hash()}"


def build_node_image(
    docker_client: docker.DockerClient,
    *,
    progress: BuildProgress | None = None,
    cache_dir: Path | None = None,
) -> str:
    """Build the node image unless the engine has it already; returns its tag.

    Raises:
        ImageBuildError: mmdebstrap or the build failed.
        APIConnectionError: the Docker engine is unreachable.
    """
    tag = node_image_tag()
    progress = progress or NullProgress()
    if image_build.lookup_image_id(docker_client, tag) is not None:
        return tag
    recipe = recipe_files()
    packages = kernel_recipe.parse_packages(recipe["packages.txt"].decode())
    digest = kernel_recipe._digest(
        [*(o.encode() for o in BOOTSTRAP_OPTIONS), *map(str.encode, sorted(packages))]
    )
    base = f"{NODE_REPOSITORY}-base:{digest}"
    if image_build.lookup_image_id(docker_client, base) is None:
        with image_build.scratch_folder(cache_dir) as folder:
            tarball = folder / f"node-rootfs-{base.partition(':')[2]}.tar"
            if not tarball.exists():
                progress.step(f"Bootstrapping Debian {kernel_recipe.SUITE} for the cluster node")
                image_build.bootstrap(packages, tarball, progress, BOOTSTRAP_OPTIONS)
            progress.step(f"Importing {base}")
            repository, _, base_tag = base.partition(":")
            with image_build.docker_errors():
                docker_client.api.import_image_from_file(
                    str(tarball), repository=repository, tag=base_tag
                )
    dockerfile = Template(recipe["Dockerfile.node"].decode()).substitute(
        base_image=base, recipe_hash=node_recipe_hash(recipe), version=__version__
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
    return tag


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
    """`python -m jupyter_sandbox.backends.node_image build`: build the node image."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["build"]:
        sys.stderr.write("usage: python -m jupyter_sandbox.backends.node_image build\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from jupyter_sandbox.backends.build_progress import RichBuildProgress

    with RichBuildProgress() as progress:
        tag = build_node_image(docker.from_env(), progress=progress)
    sys.stdout.write(f"{tag}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
