"""Clients on the in-memory `FakeBackend`: the whole core, no Docker, no kernel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_sandbox import Client
from tests.unit.core.fake_backend import FakeBackend


@pytest.fixture
def backend(tmp_path: Path) -> FakeBackend:
    """A fresh in-memory backend."""
    return FakeBackend(tmp_path / "fake")


@pytest.fixture
def make_client(tmp_path: Path, backend: FakeBackend) -> Iterator[Callable[..., Client]]:
    """Clients with custom settings, sharing one store and the backend; closed after."""
    made: list[Client] = []

    def make(**settings: Any) -> Client:
        made.append(Client(home=tmp_path / "home", backend=backend, **settings))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    """A client with the default settings (a short start timeout: nothing here is slow)."""
    return make_client(start_timeout=2.0)
