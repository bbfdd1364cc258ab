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

import pytest
import zmq
from jupyter_client.session import Session

from jupyter_sandbox import Client, InternalServerError
from tests.adversarial.conftest import Sandboxes, run, stdout_of

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
    result = subprocess.run(
        [*user, PYTHON, "-I", "-c", code, *paths], capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["EACCES"] * 6, result


def test_unsigned_and_badly_signed_requests_are_ignored(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    folder = socket_dir(client, container_id)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    for key in (b"", b"wrong-key"):
        forger = Session(key=key, signature_scheme="hmac-sha256")
        shell = context.socket(zmq.DEALER)
        shell.setsockopt(zmq.LINGER, 0)
        shell.connect(f"ipc://{folder}/k-1")
        code = f"open('/mnt/data/pwned-{len(key)}', 'w').write('x')"
        forger.send(shell, "execute_request", {"code": code, "silent": False})
        assert not shell.poll(1500)  # no reply: the kernel dropped it
        shell.close()
    assert run(client, container_id, "import os; print(os.listdir('/mnt/data'))") == "[]\n"


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
    # A new process (no open connection yet) must refuse the links, and say so.
    fresh = sandboxes.client()
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
    # The liveness probe refused the link: the kernel is treated as dead and replaced.
    assert execution.status == "died"
    assert "not a socket owned by the sandbox" in caplog.text
    assert run(client, container_id, "print('back')") == "back\n"
    assert seen == []
