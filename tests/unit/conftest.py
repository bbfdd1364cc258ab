"""The store fixtures: each store test runs against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_sandbox.backends.store import Store
from tests.store_specs import STORES, open_spec


@pytest.fixture(params=STORES)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind, named so that other processes can open it too."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "store.sqlite3")


@pytest.fixture
def open_store(spec: str) -> Iterator[Callable[[], Store]]:
    """Opens the test's store (as another process would), closing each at the end."""
    opened: list[Store] = []

    def opener() -> Store:
        opened.append(open_spec(spec))
        return opened[-1]

    yield opener
    for each in opened:
        each.close()
