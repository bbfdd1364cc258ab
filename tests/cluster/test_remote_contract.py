"""The public-API contract (tests/contract), run on a `Client` whose engine is a second
Docker engine: a one-node Docker-in-Docker cluster with the kernel image loaded, reached as
an operator would, `DOCKER_HOST=tcp://node:2376` with the cluster's mutual TLS.

The contract's tests are imported, not copied; only the backend fixture differs. The
contract's leak check (`docker ls --filter label=...`) follows DOCKER_HOST, so it sweeps
the node's engine.
"""

from __future__ import annotations

import pytest

from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from tests.contract.conftest import api, make_api  # noqa: F401  # its fixtures
from tests.contract.test_api import *  # noqa: F403  # the whole contract, as written

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture
def backend_name(one_node: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """The remote engine: its DOCKER_HOST and TLS settings in the environment (restored after
    the test, and after the contract's leak check has swept the node)."""
    for name, value in one_node.env().items():
        monkeypatch.setenv(name, value)
    return "remote"
