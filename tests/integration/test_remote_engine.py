"""The remote-engine path on the local engine (`engine_location="remote"`): the kernel channel
through exec tunnels, the connection and deadline files through the archive API, no host path
bound into the sandbox. tests/cluster/test_remote_engine.py runs it against a real second
engine over TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from jupyter_sandbox import BadRequestError, Client
from jupyter_sandbox.backends.kernel_tunnel import TunnelKernelConnection
from tests.conftest import TEST_LABEL, remove_labelled

pytestmark = pytest.mark.docker

STUBBORN = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
"""Ignores the interrupt: a timeout must restart the kernel."""


def remote_client(home: Path, test_label: str, **settings: object) -> Client:
    return Client(
        home=home, engine_location="remote", extra_labels={TEST_LABEL: test_label}, **settings
    )


@pytest.fixture
def remote(home: Path, test_label: str) -> Iterator[Client]:
    """A Client that treats the local engine as remote; fails the test if it leaks."""
    client = remote_client(home, test_label)
    try:
        yield client
    finally:
        client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def tunnel_of(client: Client, container_id: str) -> TunnelKernelConnection:
    session = client._kernels._sessions[container_id]
    assert isinstance(session.connection, TunnelKernelConnection)
    return session.connection


def test_create_execute_files_restart_delete(remote: Client) -> None:
    box = remote.containers.create(name="remote")
    record = remote._store.get(box.id)
    assert record is not None
    assert Path(record.socket_dir).name.startswith("tcp-")  # the tcp channel
    engine = docker.from_env()
    try:
        mounts = engine.api.inspect_container(f"jsbx-{box.id}")["Mounts"]
    finally:
        engine.close()
    assert {m["Type"] for m in mounts} == {"volume"}, mounts  # no host path at all
    assert remote.containers.execute(box.id, code="x = 6 * 7").error is None
    assert remote.containers.execute(box.id, code="print(x)").outputs[0].text == "42\n"

    payload = bytes(range(256)) * 1000
    made = remote.containers.files.create(box.id, file=("blob.bin", payload))
    assert remote.containers.files.content.retrieve(made.id, container_id=box.id).read() == payload
    ex = remote.containers.execute(
        box.id, code="print(open('/run/sandbox/deadline').read()[:4], __import__('os').getuid())"
    )
    assert ex.outputs[0].text == f"{str(int(record.expires_at))[:4]} 1000\n"
    denied = remote.containers.execute(
        box.id, code="open('/run/sandbox/deadline', 'w')", timeout=20
    )
    assert denied.error is not None
    assert denied.error.ename == "PermissionError"

    tunnel = tunnel_of(remote, box.id).tunnel
    slow = remote.containers.execute(box.id, code=STUBBORN, timeout=2)
    assert slow.status == "timeout", slow
    assert "restarted" in (slow.message or "")
    after = remote.containers.execute(box.id, code="print('x' in dir())")
    assert after.outputs[0].text == "False\n"  # a fresh kernel, reached by new execs
    assert tunnel.live_links == 0  # the old connection's tunnel is closed whole
    assert not tunnel.folder.exists()
    tunnel = tunnel_of(remote, box.id).tunnel
    assert tunnel.live_links >= 3  # shell, iopub, control (and heartbeat)

    remote.containers.delete(box.id)
    assert tunnel.live_links == 0
    assert not tunnel.folder.exists()


def test_remote_refuses_an_ipc_kernel_channel(remote: Client) -> None:
    # (Allowlist networks work on a remote engine: tests/cluster/test_remote_egress.py.)
    with pytest.raises(BadRequestError) as ipc:
        Client(
            home=remote.settings.home, engine_location="remote", kernel_channel="ipc"
        ).containers.create(name="ipc")
    assert ipc.value.param == "kernel_channel"


def test_a_pool_claim_rewrites_the_deadline_through_the_engine(home: Path, test_label: str) -> None:
    client = remote_client(home, test_label, pool_size=1)
    try:
        assert client.wait_for_pool(120)
        box = client.containers.create(name="claimed", lifetime_seconds=600)
        want = int(client._store.get(box.id).expires_at)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while True:
            seen = (
                client.containers.execute(
                    box.id, code="print(open('/run/sandbox/deadline').read())"
                )
                .outputs[0]
                .text
            )
            if int(float(seen)) == want or time.monotonic() > deadline:
                break
        assert int(float(seen)) == want
        client.containers.delete(box.id)
    finally:
        client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def test_another_process_reconnects_and_close_leaves_no_thread(home: Path, test_label: str) -> None:
    first = remote_client(home, test_label)
    try:
        box = first.containers.create(name="lasting")
        assert first.containers.execute(box.id, code="x = 'kept'").status == "ok"
    finally:
        first.close()  # the sandbox keeps running; its tunnel closes
    assert not [t.name for t in threading.enumerate() if t.name.startswith("jsbx-tunnel")]
    second = remote_client(home, test_label)
    try:
        assert second.containers.execute(box.id, code="print(x)").outputs[0].text == "kept\n"
        second.containers.delete(box.id)
    finally:
        second.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("jsbx-tunnel")]


def test_file_ids_at_create_arrive_through_the_archive_api(remote: Client) -> None:
    uploaded = remote.files.create(file=("seed.csv", b"a,b\n1,2\n"))
    box = remote.containers.create(name="seeded", file_ids=[uploaded.id])
    ran = remote.containers.execute(box.id, code="print(open('/mnt/data/seed.csv').read())")
    assert ran.outputs[0].text == "a,b\n1,2\n\n"
    remote.containers.delete(box.id)


def test_out_of_memory_is_reported_with_the_limit(remote: Client) -> None:
    box = remote.containers.create(name="oom", memory_limit="512m")
    ran = remote.containers.execute(
        box.id, "blocks = []\nwhile True: blocks.append(bytearray(64 * 2**20))", timeout=60
    )
    assert ran.status == "died", ran
    assert "out of memory" in (ran.message or "")
    assert "512m" in (ran.message or "")
    assert remote.containers.execute(box.id, "print(2 + 2)").stdout == "4\n"
    remote.containers.delete(box.id)


def test_skills_arrive_through_the_archive_api_and_stay_read_only(remote: Client) -> None:
    box = remote.containers.create(
        name="skilled",
        skills=[
            {
                "type": "inline",
                "source": {
                    "files": [{"path": "helper.py", "content": "def up(s): return s.upper()"}]
                },
            }
        ],
    )
    ran = remote.containers.execute(box.id, "from helper import up; print(up('abc'))")
    assert ran.stdout == "ABC\n", ran
    code = (
        "import os, glob\n"
        "for p in ['/mnt/skills/x', *glob.glob('/mnt/skills/*/helper.py')]:\n"
        "    try:\n        open(p, 'a').write('#'); print('wrote', p)\n"
        "    except OSError as e:\n        print(type(e).__name__)\n"
    )
    assert remote.containers.execute(box.id, code).stdout == "PermissionError\nPermissionError\n"
    remote.containers.delete(box.id)
