"""The kernel channel: its sockets refuse other host users, unsigned messages are ignored both
ways, and the socket folder (shared with the sandbox) can be neither filled nor used to steer
the host into another socket."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

from jupyter_sandbox import Client, InternalServerError
from jupyter_sandbox.backends import kernel_tcp
from tests.adversarial.conftest import Sandboxes, is_gvisor, run, stdout_of

pytestmark = pytest.mark.docker

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"


@pytest.fixture
def sandbox(sandboxes: Sandboxes) -> tuple[Client, str]:
    client = sandboxes.client()
    return client, client.containers.create(name="channel").id


def socket_dir(client: Client, container_id: str) -> Path:
    return Path(client._store.get(container_id).socket_dir)  # type: ignore[union-attr]


OTHER_USERS = {
    "nobody": ["runuser", "-u", "nobody", "--"],
    "uid-1001": ["setpriv", "--reuid=1001", "--regid=1001", "--clear-groups"],
}


@pytest.mark.parametrize("user", OTHER_USERS.values(), ids=OTHER_USERS.keys())
def test_kernel_sockets_refuse_other_host_users(
    sandbox: tuple[Client, str], user: list[str]
) -> None:
    client, container_id = sandbox
    folder = socket_dir(client, container_id)
    code = (
        "import errno, socket, sys\n"
        "for path in sys.argv[1:]:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(path); print('connected', path)\n"
        "    except OSError as e:\n        print(errno.errorcode[e.errno])\n"
        "try:\n    open(sys.argv[1].rsplit('/', 1)[0] + '/connection.json').read(); print('read')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    paths = [str(folder / f"k-{n}") for n in range(1, 6)]
    if is_gvisor():  # the tcp channel: the kernel listens only inside the sandbox's namespace
        code = code.replace("socket.AF_UNIX", "socket.AF_INET").replace(
            "s.connect(path)", "s.connect(('127.0.0.1', int(path)))"
        )
        paths = [str(port) for port in kernel_tcp.TCP_PORTS.values()]
        paths.append(str(folder / "k-1"))
        code = code.replace("sys.argv[1:]", "sys.argv[1:-1]").replace(
            "sys.argv[1].rsplit", "sys.argv[-1].rsplit"
        )
    result = subprocess.run(
        [*user, PYTHON, "-I", "-c", code, *paths], capture_output=True, text=True, check=False
    )
    refused = "ECONNREFUSED" if is_gvisor() else "EACCES"
    assert result.stdout.split() == [refused] * 5 + ["EACCES"], result


def dial_shell(client: Client, container_id: str) -> tuple[zmq.Socket[bytes], zmq.Context[Any]]:
    """A DEALER on the kernel's shell, as the host dials it (ipc, or tcp with its Curve keys)."""
    record = client._store.get(container_id)
    assert record is not None
    if "/tcp-" not in record.socket_dir:  # the Docker backend names tcp channel folders so
        context: zmq.Context[Any] = zmq.Context.instance()
        shell = context.socket(zmq.DEALER)
        shell.connect(f"ipc://{record.socket_dir}/k-1")
        return shell, context
    context = kernel_tcp.netns_context(client._backend.runtime.kernel_netns(container_id))
    keys = kernel_tcp.sandbox_keys(kernel_tcp.master_key(client.settings.home), container_id)
    shell = context.socket(zmq.DEALER)
    shell.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    shell.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
    shell.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
    shell.connect(f"tcp://127.0.0.1:{kernel_tcp.TCP_PORTS['shell']}")
    return shell, context


def test_unsigned_and_badly_signed_requests_are_ignored(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    for key in (b"", b"wrong-key"):
        forger = Session(key=key, signature_scheme="hmac-sha256")
        shell, context = dial_shell(client, container_id)
        shell.setsockopt(zmq.LINGER, 0)
        code = f"open('/mnt/data/pwned-{len(key)}', 'w').write('x')"
        forger.send(shell, "execute_request", {"code": code, "silent": False})
        assert not shell.poll(1500)  # no reply: the kernel dropped it
        shell.close()
        if context is not zmq.Context.instance():
            context.term()
    assert run(client, container_id, "import os; print(os.listdir('/mnt/data'))") == "[]\n"
    # The control: the same socket with the real key is answered.
    record = client._store.get(container_id)
    assert record is not None
    genuine = Session(key=record.kernel_key.encode(), signature_scheme="hmac-sha256")
    shell, context = dial_shell(client, container_id)
    shell.setsockopt(zmq.LINGER, 0)
    genuine.send(shell, "kernel_info_request", {})
    assert shell.poll(10_000)
    shell.close()
    if context is not zmq.Context.instance():
        context.term()


FORGE = """
from jupyter_client.session import Session
kernel = get_ipython().kernel
forger = Session(key=b'not-the-key', signature_scheme='hmac-sha256')
forger.send(kernel.iopub_socket, 'stream', {'name': 'stdout', 'text': 'FORGED\\n'},
            parent=kernel.get_parent())
forger.send(kernel.iopub_socket, 'status', {'execution_state': 'idle'}, parent=kernel.get_parent())
import time; time.sleep(0.5)
print('genuine')
"""


def test_badly_signed_messages_from_the_kernel_are_dropped(
    sandbox: tuple[Client, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, container_id = sandbox
    with caplog.at_level(logging.WARNING):
        execution = client.containers.execute(container_id, FORGE, timeout=30)
    assert execution.status == "ok"
    assert stdout_of(execution) == "genuine\n"
    assert "badly signed" in caplog.text


def test_filling_the_socket_folder_stops_at_its_cap(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    folder = socket_dir(client, container_id)
    code = (
        "import errno\nwritten, error = 0, None\n"
        "try:\n    with open('/run/kernel/fill', 'wb', buffering=0) as f:\n"
        "        while written < 2**30:\n            written += f.write(b'x' * 4096)\n"
        "except OSError as e:\n    error = errno.errorcode[e.errno]\n"
        "print(error, written)"
    )
    error, written = run(client, container_id, code).split()
    assert error == "ENOSPC"
    assert int(written) <= 2**20
    stats = os.statvfs(folder)
    assert stats.f_blocks * stats.f_frsize <= 2**20  # a 1 MiB tmpfs, not the host's disk
    run(client, container_id, "import os; os.remove('/run/kernel/fill')")
    assert run(client, container_id, "print(1)") == "1\n"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A host Unix socket standing in for the engine's: records anyone who connects."""
    path = Path("/tmp") / f"jsbx-canary-{os.getpid()}-{tmp_path.name[-8:]}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(conn.recv(64))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path, seen
    stop.set()
    thread.join()
    server.close()
    path.unlink()


SWAP = """
import os
if os.path.lexists('/run/kernel/k-{port}'):
    os.remove('/run/kernel/k-{port}')
os.symlink({target!r}, '/run/kernel/k-{port}')
"""


@pytest.mark.parametrize("target", ["canary", "/var/run/docker.sock"])
def test_a_socket_swapped_for_a_link_is_refused_and_restart_recovers(
    sandbox: tuple[Client, str],
    sandboxes: Sandboxes,
    listener: tuple[Path, list[bytes]],
    target: str,
) -> None:
    client, container_id = sandbox
    canary, seen = listener
    link_target = str(canary) if target == "canary" else target
    for port in (1, 2, 4):  # shell, iopub, control
        run(client, container_id, SWAP.format(port=port, target=link_target))
    fresh = sandboxes.client()
    if is_gvisor():  # the tcp channel never dials into the folder: the links change nothing
        assert run(fresh, container_id, "print('fresh')") == "fresh\n"
    else:  # a new process (no open connection yet) must refuse the links, and say so
        with pytest.raises(InternalServerError, match="refusing to connect"):
            fresh.containers.execute(container_id, "print(1)", timeout=20)
    # The operator restarts the kernel: the links go, a fresh kernel answers.
    client.containers.restart(container_id)
    assert run(client, container_id, "print('back')") == "back\n"
    assert run(fresh, container_id, "print('fresh')") == "fresh\n"
    assert seen == []  # nothing ever connected to the link's target


def test_a_heartbeat_socket_swapped_for_a_link_is_refused(
    sandbox: tuple[Client, str],
    listener: tuple[Path, list[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, container_id = sandbox
    canary, seen = listener
    code = SWAP.format(port=5, target=str(canary)) + "import time; time.sleep(2)"
    with caplog.at_level(logging.WARNING):
        execution = client.containers.execute(container_id, code, timeout=30)
    if is_gvisor():  # the tcp heartbeat never looks at the folder
        assert execution.status == "ok"
    else:  # the liveness probe refused the link: the kernel is treated as dead and replaced
        assert execution.status == "died"
        assert "not a socket owned by the sandbox" in caplog.text
    assert run(client, container_id, "print('back')") == "back\n"
    assert seen == []
