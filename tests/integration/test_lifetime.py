"""Lifetimes and crashes: hard deadlines hold with no host process alive; orphans are reaped.

Under runc and under runsc (gVisor): the adversarial suite's `runtime` fixture sets it for the
child processes too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from tests.adversarial.conftest import runtime
from tests.conftest import TEST_LABEL, labelled_client, labelled_objects, wait_until

__all__ = ["runtime"]  # an autouse fixture, re-exported for pytest

pytestmark = pytest.mark.docker

_CHILD = """
import json, sys, time
from jupyter_sandbox import Client
client = Client(home=sys.argv[1], extra_labels=json.loads(sys.argv[2]))
container = client.containers.create(name="child", lifetime_seconds=int(sys.argv[3]))
print(container.id, flush=True)
time.sleep(600)
"""


def start_child(home: Path, label: str, lifetime: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home), json.dumps({TEST_LABEL: label}), str(lifetime)],
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def test_hard_lifetime_ends_the_sandbox_with_no_host_process(home: Path, test_label: str) -> None:
    child = start_child(home, test_label, lifetime=15)
    assert child.stdout is not None
    container_id = child.stdout.readline().strip()
    kill(child)
    assert container_id.startswith("cntr_")
    selector = f"{TEST_LABEL}={test_label}"
    assert "container" in labelled_objects(selector)
    wait_until(lambda: "container" not in labelled_objects(selector), 15 + 60, interval=0.2)
    with labelled_client(home, test_label) as client:
        assert client.containers.retrieve(container_id).status == "expired"
        assert labelled_objects(selector) == {}


def test_a_crash_during_create_is_reaped_by_the_next_client(home: Path, test_label: str) -> None:
    child = start_child(home, test_label, lifetime=600)
    selector = f"{TEST_LABEL}={test_label}"
    wait_until(lambda: "container" in labelled_objects(selector), 30, interval=0.2)
    kill(child)  # mid-create: the container exists, the kernel may not
    with labelled_client(home, test_label) as client:
        records = client._store.all()
        assert len(records) == 1
        record = records[0]
        if record.status == "ready":  # the kill came after create returned: a live sandbox
            client.containers.delete(record.id)
        else:
            assert record.status == "failed"
            assert "creator stopped" in (record.error or "")
        assert labelled_objects(selector) == {}
        root = client.settings.sockets_root
        assert not root.exists() or list(root.iterdir()) == []


def test_a_ready_sandbox_outlives_its_creator_and_serves_another_process(
    home: Path, test_label: str
) -> None:
    child = start_child(home, test_label, lifetime=600)
    assert child.stdout is not None
    container_id = child.stdout.readline().strip()
    kill(child)
    with labelled_client(home, test_label) as client:
        assert client.containers.retrieve(container_id).status == "ready"
        assert client.containers.execute(container_id, "print(6 * 7)").stdout == "42\n"
        client.containers.delete(container_id)
    assert labelled_objects(f"{TEST_LABEL}={test_label}") == {}


def test_objects_without_a_record_are_orphans(client: Client, test_label: str) -> None:
    container = client.containers.create(name="orphan-to-be")
    client._store.update(container.id, status="terminated", deleted=True)  # record lost
    report = client.reconcile()
    assert container.id in report.removed
    assert labelled_objects(f"{TEST_LABEL}={test_label}") == {}
    assert not os.path.exists(client._store.get(container.id).socket_dir) or not os.listdir(  # type: ignore[union-attr]
        client._store.get(container.id).socket_dir  # type: ignore[union-attr]
    )
