"""The tcp channel's liveness check before each execute: answered from the sandbox's init
process once the engine was asked, and still right when the container dies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from jupyter_sandbox import Client, ConflictError
from jupyter_sandbox.backends.runtime.docker import _process_start
from tests.conftest import TEST_LABEL, labelled_client, remove_labelled


def test_process_start_tells_a_live_process_from_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = _process_start(child.pid)
        assert started is not None
        assert started.isdigit()
        assert _process_start(child.pid) == started
    finally:
        child.kill()
        child.wait()
    assert _process_start(child.pid) is None


@pytest.fixture
def tcp_client(home: Path, test_label: str) -> Iterator[Client]:
    client = labelled_client(home, test_label, kernel_channel="tcp")
    try:
        yield client
    finally:
        client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


@pytest.mark.docker
def test_a_killed_tcp_sandbox_is_reported_terminated(tcp_client: Client) -> None:
    box = tcp_client.containers.create(name="liveness")
    assert tcp_client.containers.execute(box.id, "print(1)").stdout == "1\n"
    runtime = tcp_client._backend.runtime
    pid, _ = runtime._init_processes[box.id]  # noted by the first check
    engine = docker.from_env()
    try:
        engine.containers.get(f"jsbx-{box.id}").kill()
    finally:
        engine.close()
    assert tcp_client.containers.retrieve(box.id).status == "terminated"
    assert box.id not in runtime._init_processes or _process_start(pid) is None
    with pytest.raises(ConflictError) as caught:
        tcp_client.containers.execute(box.id, "print(1)")
    assert caught.value.param == "container_id"
    tcp_client.containers.delete(box.id)
