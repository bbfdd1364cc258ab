"""The kernel image's recipe: its files, hashes, tags and rendered Dockerfiles.

Everything here is pure (no Docker): `image_recipe/` read as bytes, `recipe_hash()` (the
label that says whether an image is up to date), the cached base image's tag, the stage-2
and registry Dockerfiles, and the in-memory build context.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from importlib.resources import files
from string import Template

from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends.labels import PREFIX

KERNEL_REPOSITORY = "jupyter-sandbox-kernel"
BASE_REPOSITORY = "jupyter-sandbox-base"
RECIPE_HASH_LABEL = f"{PREFIX}.recipe-hash"
BASE_LABEL = f"{PREFIX}.base-image"

RECIPE_FILES = (
    "packages.txt",
    "Dockerfile.kernel",
    "sandbox-init",
    "sandbox_egress_reason.py",
    "wheels.txt",
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


def default_image_tag() -> str:
    """The tag this version of the package runs sandboxes from: the version and the recipe
    hash, so a changed recipe is a new tag (images built from others' recipes stay)."""
    return f"{KERNEL_REPOSITORY}:{__version__}-{recipe_hash()[:8]}"


def recipe_files() -> dict[str, bytes]:
    """The contents of `image_recipe/`, by file name (`RECIPE_FILES`)."""
    recipe = files("jupyter_sandbox.backends") / "image_recipe"
    return {name: (recipe / name).read_bytes() for name in RECIPE_FILES}


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(part)
    return digest.hexdigest()[:16]


def hash_recipe(recipe: Mapping[str, bytes]) -> str:
    """Hash of these recipe files and the bootstrap options: 16 hex digits."""
    parts = [BASE_REPOSITORY.encode(), *(o.encode() for o in BOOTSTRAP_OPTIONS)]
    for name in sorted(recipe):
        parts += [name.encode(), recipe[name]]
    return _digest(parts)


def recipe_hash() -> str:
    """Hash of the recipe files and bootstrap options: 16 hex digits, the image's label."""
    return hash_recipe(recipe_files())


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
    recipe = recipe_files() if recipe is None else recipe
    template = Template(recipe["Dockerfile.kernel"].decode())
    return template.substitute(
        base_image=base_image, recipe_hash=hash_recipe(recipe), version=__version__
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


def context_tar(dockerfile: str, wheels: Mapping[str, bytes] | None = None) -> io.BytesIO:
    """An in-memory build context: the Dockerfile, sandbox-init (mode 0755), site hooks, and
    `wheels/` (the downloaded wheels, by file name, and `wheels.txt`)."""
    buffer = io.BytesIO()
    entries = {
        "Dockerfile": (dockerfile.encode(), 0o644),
        "sandbox-init": (recipe_files()["sandbox-init"], 0o755),
        "sandbox_egress_reason.py": (recipe_files()["sandbox_egress_reason.py"], 0o644),
        "wheels/wheels.txt": (recipe_files()["wheels.txt"], 0o644),
        **{f"wheels/{name}": (data, 0o644) for name, data in (wheels or {}).items()},
    }
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (data, mode) in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
