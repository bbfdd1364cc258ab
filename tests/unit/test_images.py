"""The image recipe: hashes, package list and rendered Dockerfiles (no Docker needed)."""

from __future__ import annotations

import io
import re
import tarfile

import docker.errors
import pytest

from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import image_build, images, kernel_recipe, kernel_wheels


def test_default_tag_names_the_package_version() -> None:
    assert (
        images.default_image_tag()
        == f"jupyter-sandbox-kernel:{__version__}-{images.recipe_hash()[:8]}"
    )


def test_recipe_hash_is_16_hex_digits_and_stable() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", images.recipe_hash())
    assert images.recipe_hash() == images.recipe_hash()


@pytest.mark.parametrize("name", kernel_recipe.RECIPE_FILES)
def test_recipe_hash_changes_when_a_file_changes(name: str) -> None:
    recipe = kernel_recipe.recipe_files()
    changed = {**recipe, name: recipe[name] + b"\n"}
    assert kernel_recipe.hash_recipe(changed) != kernel_recipe.hash_recipe(recipe)


def test_recipe_hash_tells_file_boundaries_apart() -> None:
    recipe = kernel_recipe.recipe_files()
    shifted = {
        **recipe,
        "packages.txt": recipe["packages.txt"] + b"x",
        "sandbox-init": recipe["sandbox-init"][:-1],
    }
    assert kernel_recipe.hash_recipe(shifted) != kernel_recipe.hash_recipe(recipe)


def test_package_list() -> None:
    packages = kernel_recipe.parse_packages(kernel_recipe.recipe_files()["packages.txt"].decode())
    assert packages == [
        "python3",
        "python3-ipykernel",
        "python3-numpy",
        "python3-pandas",
        "python3-matplotlib",
        "python3-dill",
        "ca-certificates",
    ]


def test_parse_packages_skips_comments_and_blanks() -> None:
    assert kernel_recipe.parse_packages("# head\n\n tini  # init\npython3\n") == ["tini", "python3"]


def test_base_tag_depends_on_the_packages_not_their_order() -> None:
    tag = kernel_recipe.base_image_tag(["python3", "tini"])
    assert tag.startswith("jupyter-sandbox-base:")
    assert kernel_recipe.base_image_tag(["tini", "python3"]) == tag
    assert kernel_recipe.base_image_tag(["python3"]) != tag


def test_kernel_dockerfile() -> None:
    dockerfile = images.render_kernel_dockerfile("jupyter-sandbox-base:0123456789abcdef")
    lines = dockerfile.splitlines()
    assert "FROM jupyter-sandbox-base:0123456789abcdef" in lines
    assert f'LABEL org.jupyter-sandbox.recipe-hash="{images.recipe_hash()}" \\' in lines
    assert f'      org.jupyter-sandbox.version="{__version__}"' in lines
    assert "USER 1000:1000" in lines
    assert "WORKDIR /mnt/data" in lines
    assert lines[-1] == 'ENTRYPOINT ["/usr/local/bin/sandbox-init"]'
    assert "COPY sandbox-init /usr/local/bin/sandbox-init" in lines
    for env in (
        "HOME=/workspace",
        "MPLBACKEND=Agg",
        "MPLCONFIGDIR=/tmp/.mpl",
        "IPYTHONDIR=/tmp/.ipython",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "LANG=C.UTF-8",
    ):
        assert env in dockerfile
    assert "install -d -o 1000 -g 1000 -m 0755 /home/sandbox /mnt/data /workspace /mnt/skills" in (
        dockerfile
    )
    assert "install -d -o 1000 -g 1000 -m 0700 /run/kernel" in dockerfile
    assert "${" not in dockerfile  # every placeholder filled


def test_registry_dockerfile() -> None:
    dockerfile = images.render_registry_dockerfile("python:3.11-slim")
    lines = dockerfile.splitlines()
    assert lines[0] == "FROM python:3.11-slim AS sandbox-base"
    assert "RUN python3 -m pip install --no-cache-dir ipykernel numpy pandas matplotlib \\" in lines
    assert "apt-get" not in dockerfile  # nothing but pip: sandbox-init is PID 1, no tini
    # Stage 2 is the offline kernel recipe on top of the first stage.
    assert "FROM sandbox-base" in lines
    assert dockerfile.endswith(images.render_kernel_dockerfile("sandbox-base"))


def test_build_context_holds_an_executable_supervisor() -> None:
    context = kernel_recipe.context_tar("FROM scratch\n")
    with tarfile.open(fileobj=io.BytesIO(context.getvalue())) as archive:
        init = archive.getmember("sandbox-init")
        assert init.mode == 0o755
        dockerfile = archive.extractfile("Dockerfile")
        assert dockerfile is not None
        assert dockerfile.read() == b"FROM scratch\n"


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, description: str) -> None:
        self.steps.append(description)

    def log(self, line: str) -> None:
        pass


def test_registry_build_without_a_registry_says_so() -> None:
    class NoRegistry:
        class images:  # mimics DockerClient.images
            @staticmethod
            def get(name: str) -> object:
                raise docker.errors.ImageNotFound(name)

            @staticmethod
            def pull(name: str) -> object:
                raise docker.errors.APIError("connection refused")

    with pytest.raises(images.ImageBuildError, match=r"cannot pull python:3.11-slim.*offline"):
        image_build.ensure_registry_image(NoRegistry(), "python:3.11-slim", _Recorder())  # type: ignore[arg-type]


def test_wheels_are_pinned_with_hashes() -> None:
    pins = kernel_wheels.parse_wheels(kernel_recipe.recipe_files()["wheels.txt"].decode())
    assert pins["ipykernel"][0] == "7.4.0"
    assert pins["jupyter_client"][0] == "8.10.0"
    assert pins["pyzmq"][0] == "27.3.0"
    assert "pip" in pins


def test_an_unpinned_wheel_line_is_refused() -> None:
    with pytest.raises(ValueError, match="not `name==version"):
        kernel_wheels.parse_wheels("ipykernel>=7\n")


def test_the_context_carries_the_wheels() -> None:
    context = kernel_recipe.context_tar("FROM scratch\n", {"a-1-py3-none-any.whl": b"zip"})
    with tarfile.open(fileobj=context) as archive:
        names = set(archive.getnames())
    assert {"wheels/wheels.txt", "wheels/a-1-py3-none-any.whl"} <= names
