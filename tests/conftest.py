"""Shared fixtures: a client per test whose every Docker object is labelled and swept."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends.kernel_recipe import default_image_tag

TEST_LABEL = "org.jupyter-sandbox.test"
SESSION_RUN = f"s{uuid4().hex[:8]}"
IMAGE = default_image_tag()


def docker_ready() -> str | None:
    """None if Docker and the kernel image are usable, else why not."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"the kernel image {IMAGE} is missing (run `jupyter-sandbox image build`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = docker_ready()
    if reason is None:
        return
    if os.environ.get("JUPYTER_SANDBOX_REQUIRE_DOCKER") == "1":
        raise pytest.UsageError(f"Docker tests are required but cannot run: {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


def labelled_objects(label: str) -> dict[str, list[str]]:
    """Docker objects carrying `label`, by kind."""
    found: dict[str, list[str]] = {}
    for kind, extra in (("container", ["-a"]), ("volume", []), ("network", [])):
        out = subprocess.run(
            ["docker", kind, "ls", *extra, "-q", "--filter", f"label={label}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if out:
            found[kind] = out
    return found


def remove_labelled(label: str) -> dict[str, list[str]]:
    """Remove every Docker object carrying `label`; return what there was."""
    leaked = labelled_objects(label)
    for container in leaked.get("container", []):
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True, check=False)
    for kind in ("volume", "network"):
        for name in leaked.get(kind, []):
            subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)
    return leaked


@pytest.fixture
def test_label() -> str:
    """A label value unique to this test, put on every object its clients create."""
    return f"{SESSION_RUN}-{uuid4().hex[:8]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private state folder."""
    return tmp_path / "home"


@pytest.fixture
def client(home: Path, test_label: str) -> Iterator[Client]:
    """A Client on a fresh store; fails the test if it leaves any Docker object or socket folder."""
    sandbox_client = Client(home=home, extra_labels={TEST_LABEL: test_label})
    sockets_root = sandbox_client.settings.sockets_root
    try:
        yield sandbox_client
    finally:
        records = sandbox_client._store.all()
        sandbox_client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        live = [r.id for r in records if r.is_live]
        leftovers = [p.name for p in sockets_root.iterdir()] if sockets_root.is_dir() else []
        for record in records:
            socket_dir = Path(record.socket_dir)
            if os.path.ismount(socket_dir):
                subprocess.run(["umount", "-l", str(socket_dir)], check=False)
            disk = home / "sandboxes" / record.id / "disk"  # a failed test's disk image
            if os.path.ismount(disk):
                subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(sockets_root, ignore_errors=True)
        assert not leaked, f"leaked Docker objects: {leaked} (live records: {live})"
        assert not leftovers, f"leaked socket folders: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Fail the run if any object labelled by this test session survives it."""
    yield
    if docker_ready() is not None:
        return
    leaked = {k: v for k, v in labelled_objects(TEST_LABEL).items() if v}
    mine = {
        kind: [name for name in names if SESSION_RUN in _label_of(kind, name)]
        for kind, names in leaked.items()
    }
    mine = {k: v for k, v in mine.items() if v}
    for kind, names in mine.items():
        for name in names:
            subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)
    assert not mine, f"this test session leaked: {mine}"


def _label_of(kind: str, name: str) -> str:
    fmt = '{{index .Config.Labels "%s"}}' if kind == "container" else '{{index .Labels "%s"}}'
    return subprocess.run(
        ["docker", kind, "inspect", "-f", fmt % TEST_LABEL, name],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
