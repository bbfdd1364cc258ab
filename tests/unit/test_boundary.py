"""Raw exceptions never leave the public API: the client's resource classes and the store map
them to our error tree at one boundary each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from jupyter_sandbox import ConflictError, InternalServerError
from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from jupyter_sandbox.client.containers import Containers
from jupyter_sandbox.client.files import ContainerFiles, Files
from jupyter_sandbox.client.skills import Skills


@api_errors
class _Resource:
    def raw(self) -> None:
        raise KeyError("shell")

    def ours(self) -> None:
        raise ConflictError("wrong state", param="container_id")

    def fine(self) -> int:
        return 1


def test_a_raw_exception_becomes_internal_server_error() -> None:
    resource = _Resource()
    with pytest.raises(InternalServerError, match="KeyError") as caught:
        resource.raw()
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(ConflictError):
        resource.ours()
    assert resource.fine() == 1


@pytest.mark.parametrize("cls", [Containers, ContainerFiles, Files, Skills])
def test_every_public_method_of_the_client_is_wrapped(cls: type) -> None:
    public = [v for k, v in vars(cls).items() if not k.startswith("_") and callable(v)]
    assert public
    for method in public:
        if isinstance(method, type):
            continue
        assert hasattr(method, "__wrapped__"), method


def test_store_failures_are_api_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    store._db.close()  # any sqlite3 failure from here on
    with pytest.raises(InternalServerError) as caught:
        store.get("cntr_x")
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(InternalServerError, match="cannot open the store"):
        Store(tmp_path / "folder.db")
