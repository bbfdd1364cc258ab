"""The public API's contract, written once and run on every backend.

`api` is a `Client` on a fresh store, on Docker (marked `docker`) or on
`jupyter_sandbox.testing.LocalBackend`; tests/cluster/test_remote_contract.py runs it on a
remote engine too (`remote`: Docker, with DOCKER_HOST naming a second engine). Either way
the test fails if it leaves a sandbox, a Docker object or a local kernel process behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.testing import LocalBackend
from tests.conftest import TEST_LABEL, remove_labelled

BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), "local"]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Which backend the contract runs on."""
    return str(request.param)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def make_api(backend_name: str, home: Path, test_label: str) -> Iterator[Callable[..., Client]]:
    """Clients with custom settings on `home`, on the backend under test; checked after."""
    made: list[Client] = []
    local: list[LocalBackend] = []

    def make(**settings: Any) -> Client:
        if backend_name in ("docker", "remote"):
            made.append(Client(home=home, extra_labels={TEST_LABEL: test_label}, **settings))
        else:
            local.append(LocalBackend())
            made.append(Client(home=home, backend=local[-1], **settings))
        return made[-1]

    try:
        yield make
    finally:
        for client in made:
            client.close()
        leaked: dict[str, list[str]] = {}
        if backend_name in ("docker", "remote"):  # the docker CLI follows DOCKER_HOST
            leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        for backend in local:
            running = sorted(backend.running_sandboxes())
            supervisors = [process.pid for process in backend._processes.values()]
            backend.close()
            assert not backend.root.exists(), "the local backend left its folder"
            assert not [pid for pid in supervisors if _pid_alive(pid)], "left a supervisor"
            if running:
                leaked["local sandbox"] = running
        assert not leaked, f"the test left sandboxes behind: {leaked}"


@pytest.fixture
def api(make_api: Callable[..., Client]) -> Client:
    """A client with the default settings on the backend under test."""
    return make_api()
