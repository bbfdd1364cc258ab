"""The exec tunnel (a remote engine's kernel channel) is contained: a sandbox that dials its
own kernel ports, kills its forwarders, or floods their streams with junk breaks at most its
own channel, which the host rebuilds; the host's listeners admit only the host's user."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends.kernel_tcp import TCP_PORTS
from jupyter_sandbox.backends.kernel_tunnel import TunnelKernelConnection
from tests.conftest import TEST_LABEL, remove_labelled

pytestmark = pytest.mark.docker

FORWARDERS = (
    "import os\n"
    "pids = [p for p in os.listdir('/proc') if p.isdigit() and p != str(os.getpid())\n"
    "        and b'forwarder' in open(f'/proc/{p}/cmdline', 'rb').read()]\n"
)

FLOOD = (
    FORWARDERS + "import threading\n"
    "def flood(p):\n"
    "    try:\n"
    "        with open(f'/proc/{p}/fd/1', 'wb', buffering=0) as out:\n"
    "            for _ in range(64): out.write(os.urandom(1 << 16))\n"
    "    except OSError: pass\n"
    "ts = [threading.Thread(target=flood, args=(p,)) for p in pids]\n"
    "[t.start() for t in ts]; [t.join() for t in ts]\n"
    "print('flooded', len(pids))\n"
)
"""Writes 4 MiB of random bytes into each forwarder's stdout: the exec stream to the host."""
KILL = FORWARDERS + "for p in pids: os.kill(int(p), 9)\nprint(len(pids) >= 3)\n"
"""Kills every forwarder (the host's connections end; ZeroMQ reconnects through new execs)."""


@pytest.fixture
def remote(home: Path, test_label: str) -> Iterator[tuple[Client, str]]:
    client = Client(home=home, engine_location="remote", extra_labels={TEST_LABEL: test_label})
    try:
        container_id = client.containers.create(name="tunnel").id
        yield client, container_id
        client.containers.delete(container_id)
    finally:
        client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def connection(client: Client, container_id: str) -> TunnelKernelConnection:
    found = client._kernels._sessions[container_id].connection
    assert isinstance(found, TunnelKernelConnection)
    return found


def test_host_listeners_are_private(remote: tuple[Client, str]) -> None:
    client, container_id = remote
    folder = connection(client, container_id).tunnel.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert folder.stat().st_uid == os.geteuid()


def test_dialling_its_own_kernel_ports_gets_nothing(remote: tuple[Client, str]) -> None:
    client, container_id = remote
    code = (
        "import socket\n"
        "got = []\n"
        f"for port in range({min(TCP_PORTS.values())}, {max(TCP_PORTS.values()) + 1}):\n"
        "    s = socket.create_connection(('127.0.0.1', port), timeout=3)\n"
        "    s.sendall(b'\\xff' + b'\\0' * 8 + b'\\x7f\\x03\\x00' + b'CURVE'.ljust(20, b'\\0')"
        " + b'\\0' * 32 + b'junk' * 100000)\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        while s.recv(65536): pass\n"
        "    except OSError: pass\n"
        "    got.append(port)\n"
        "print(len(got))\n"
    )
    ran = client.containers.execute(container_id, code=code, timeout=60)
    assert ran.outputs[0].text == "5\n", ran
    assert client.containers.execute(container_id, code="print(2 + 2)").outputs[0].text == "4\n"


def test_killing_the_forwarders_only_reconnects(remote: tuple[Client, str]) -> None:
    client, container_id = remote
    tunnel = connection(client, container_id).tunnel
    before = tunnel.execs
    killed = client.containers.execute(container_id, code=KILL, timeout=30)
    # The kill may cut the reply itself: the host reconnects and the next run works.
    assert killed.status in ("ok", "error", "died", "timeout"), killed
    after = client.containers.execute(container_id, code="print('still here')", timeout=60)
    assert after.outputs[0].text == "still here\n", after
    now = connection(client, container_id).tunnel
    if now is tunnel:
        assert now.execs > before  # ZeroMQ reconnected: new execs, new forwarders
    else:
        assert tunnel.live_links == 0  # or the kernel was restarted over a new tunnel


def test_junk_written_into_a_forwarder_stream_is_contained(remote: tuple[Client, str]) -> None:
    client, container_id = remote
    client.containers.execute(container_id, code=FLOOD, timeout=60)
    after = client.containers.execute(container_id, code="print(6 * 7)", timeout=60)
    assert after.outputs[0].text == "42\n", after
