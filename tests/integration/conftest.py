"""Fixtures for the files tests: clients with custom settings, and mount leak checks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from tests.conftest import TEST_LABEL, labelled_client, mounts_under, remove_labelled


@pytest.fixture
def make_client(home: Path, test_label: str) -> Iterator[Callable[..., Client]]:
    """Clients with custom settings, all on `home` and labelled; swept and checked after."""
    made: list[Client] = []

    def make(**settings: object) -> Client:
        made.append(labelled_client(home, test_label, **settings))
        return made[-1]

    try:
        yield make
    finally:
        for client in made:
            client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        stuck = mounts_under(home)
        for mount in stuck:
            subprocess.run(["umount", "-l", mount], check=False)
        assert not leaked, f"leaked Docker objects: {leaked}"
        assert not stuck, f"leaked mounts: {stuck}"
