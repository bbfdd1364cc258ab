"""The kernel channel's sockets against a local ZeroMQ peer (no Docker)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Runs in a child process: a wedged ZeroMQ I/O thread would otherwise hang this one for good.
_PEER_DROPS_WHILE_CLOSING = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import zmq
    from jupyter_sandbox.backends.kernel import KernelConnection, SOCKET_PREFIX

    folder = Path(sys.argv[1])
    peer = zmq.Context()
    kinds = {1: zmq.ROUTER, 2: zmq.PUB, 4: zmq.ROUTER, 5: zmq.REP}
    peers = []
    for port, kind in kinds.items():
        sock = peer.socket(kind)
        sock.linger = 0
        sock.bind(f"ipc://{folder}/{SOCKET_PREFIX}-{port}")
        peers.append(sock)
    connection = KernelConnection(folder, "k" * 64, os.getuid())
    connection.connect(time.monotonic() + 5)
    time.sleep(0.2)  # connected on every channel
    monitors = set(connection._monitors)
    original_close = zmq.Socket.close

    def close(self, linger=None):
        original_close(self, linger)
        if self in monitors:  # the kernel goes away right after a monitor is closed
            for sock in peers:
                sock.close(linger=0)
            peers.clear()
            time.sleep(0.3)  # the I/O thread sees every disconnect now

    zmq.Socket.close = close
    connection.close()
    zmq.Socket.close = original_close

    # The process's shared context must still carry messages over ipc (its I/O thread).
    server = zmq.Context.instance().socket(zmq.PULL)
    server.bind(f"ipc://{folder}/probe")
    client = zmq.Context.instance().socket(zmq.PUSH)
    client.linger = 0
    client.connect(f"ipc://{folder}/probe")
    client.send(b"alive")
    if not server.poll(3000):
        print("the ZeroMQ I/O thread is wedged", flush=True)
        os._exit(1)
    print(server.recv().decode(), flush=True)
    os._exit(0)
    """
)


def test_the_kernel_leaving_while_we_close_never_wedges_zeromq(tmp_path: Path) -> None:
    """A disconnect reported to a closed monitor once blocked every later kernel connection."""
    folder = Path("/tmp") / f"jsbx-test-{tmp_path.name[-20:]}"
    folder.mkdir(mode=0o700)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PEER_DROPS_WHILE_CLOSING, str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    assert (done.returncode, done.stdout) == (0, "alive\n"), done.stderr
