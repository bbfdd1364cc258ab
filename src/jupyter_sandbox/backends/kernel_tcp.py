"""The encrypted TCP kernel channel: CurveZMQ over TCP inside the sandbox's own network.

Where ipc cannot work (gVisor binds ipc sockets in its own file system view, which the host
never sees), the kernel listens on 127.0.0.1 inside the sandbox's network namespace, which
nothing else joins (with a disabled network it holds only `lo`). The host enters that
namespace (`setns` on `/proc/<pid>/ns/net`, root only) in a dedicated thread that makes the
connection's ZeroMQ context, so the context's I/O thread, which does every connect, lives
there. Every socket is a CurveZMQ client: the kernel holds a server key pair made for this
sandbox alone, the host a client key pair it never gives away; the kernel's launcher admits
only the host's public client key (a ZAP handler), and Jupyter's HMAC signing stays.

Keys are derived from a host-only master secret (`curve-master.key`, mode 0600, in the
state folder) and the sandbox id, so a host process that restarts reconnects without reading
anything the sandbox could have written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.utils.z85

from jupyter_sandbox._exceptions import APIError, APITimeoutError
from jupyter_sandbox.backends.kernel import CHANNELS, KernelConnection

LOOPBACK = "127.0.0.1"
TCP_PORTS = {name: 29001 + index for index, name in enumerate(CHANNELS)}
"""Fixed: the namespace is the sandbox's alone, so no port can be taken by anyone else. Below
Linux's ephemeral range (32768-60999): a connect that ZeroMQ retries before the kernel binds
could otherwise pick the kernel's own port as its source port, connect to itself, and hold the
port, so the kernel's bind would fail ("Address already in use")."""
CLIENT_KEY_FIELD = "jupyter_sandbox_curve_client"
"""Connection-file field: the host's public client key, the only one the kernel admits."""
MASTER_KEY_FILE = "curve-master.key"
_CLONE_NEWNET = 0x40000000
_RECONNECT_MS = 20


class ChannelSetupError(APIError):
    """The encrypted channel cannot be set up here (no Curve support, not root, ...)."""


@dataclass(frozen=True)
class CurveKeys:
    """One sandbox's CurveZMQ keys, Z85-encoded."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


def require_curve() -> None:
    """Fail closed unless this pyzmq's libzmq can encrypt (CurveZMQ, libsodium)."""
    if not zmq.has("curve"):
        raise ChannelSetupError(
            "the tcp kernel channel needs CurveZMQ, but this pyzmq's libzmq has no Curve "
            "support: install a pyzmq wheel (it bundles libsodium)",
            param="kernel_channel",
        )


def master_key(home: Path) -> bytes:
    """The host-only secret the sandboxes' keys derive from (created once, mode 0600)."""
    path = home / MASTER_KEY_FILE
    with contextlib.suppress(FileExistsError):
        home.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) != 32:
        raise ChannelSetupError(f"{path} is not a 32-byte key; delete it to make a new one")
    return data


def sandbox_keys(master: bytes, container_id: str) -> CurveKeys:
    """The server and client key pairs of one sandbox (fresh per sandbox id)."""

    def pair(role: str) -> tuple[bytes, bytes]:
        raw = hmac.new(master, f"{role}:{container_id}".encode(), hashlib.sha256).digest()
        secret = zmq.utils.z85.encode(raw)
        return zmq.curve_public(secret), secret

    server_public, server_secret = pair("server")
    client_public, client_secret = pair("client")
    return CurveKeys(server_public, server_secret, client_public, client_secret)


def tcp_connection_info(key: str, keys: CurveKeys) -> dict[str, Any]:
    """A Jupyter connection file's content for the tcp transport with Curve: the kernel's
    own key pair and the one client key it admits (never the client's secret)."""
    return {
        "transport": "tcp",
        "ip": LOOPBACK,
        **{f"{name}_port": port for name, port in TCP_PORTS.items()},
        "key": key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
        "curve_publickey": keys.server_public.decode(),
        "curve_secretkey": keys.server_secret.decode(),
        CLIENT_KEY_FIELD: keys.client_public.decode(),
    }


def netns_context(netns: str) -> zmq.Context[Any]:
    """A ZeroMQ context whose I/O thread runs in the network namespace at `netns`.

    Raises:
        ChannelSetupError: the namespace cannot be entered (not root, or the sandbox ended).
    """
    made: list[zmq.Context[Any]] = []
    failed: list[str] = []

    def enter() -> None:
        try:
            descriptor = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failed.append(f"cannot open {netns}: {exc.strerror}")
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                failed.append(f"setns: {os.strerror(ctypes.get_errno())} (needs root)")
                return
        finally:
            os.close(descriptor)
        context: zmq.Context[Any] = zmq.Context(io_threads=1)
        context.socket(zmq.PAIR).close(linger=0)  # the I/O thread starts here, in the namespace
        made.append(context)

    thread = threading.Thread(target=enter, name="jsbx-netns", daemon=True)
    thread.start()
    thread.join()
    if not made:
        raise ChannelSetupError(
            "cannot enter the sandbox's network namespace for its encrypted kernel channel: "
            + (failed[0] if failed else "unknown error"),
            param="kernel_channel",
        )
    return made[0]


class TcpKernelConnection(KernelConnection):
    """Signed, CurveZMQ-encrypted ZeroMQ sockets to one kernel, inside its network namespace."""

    def __init__(self, netns: str, key: str, keys: CurveKeys, max_message: int = -1) -> None:
        super().__init__(Path(netns), key, 0, max_message)
        self._keys = keys
        self._context = netns_context(netns)
        self._hb_lock = threading.Lock()  # a heartbeat in one thread, close in another

    def connect(self, deadline: float, check: Callable[[], None] | None = None) -> None:
        """Open every socket; ZeroMQ retries the connects until the kernel listens."""
        for name in ("shell", "iopub", "control"):
            self._open(name)
        with self._hb_lock:
            if not self._closed and self._hb is None:
                self._hb = self._heartbeat_socket()

    def _heartbeat_socket(self) -> zmq.Socket[bytes]:
        # One lasting connection: the Curve handshake (and the kernel's ZAP check, which
        # needs its GIL) happens once, so a busy kernel's C heartbeat still answers at once.
        sock: zmq.Socket[bytes] = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)
        sock.setsockopt(zmq.REQ_RELAXED, 1)  # a ping may go unanswered: send the next anyway
        sock.setsockopt(zmq.REQ_CORRELATE, 1)  # and never take an old echo for a new one
        self._secure(sock)
        sock.connect(self._endpoint("hb"))
        return sock

    def _endpoint(self, name: str) -> str:
        return f"tcp://{LOOPBACK}:{TCP_PORTS[name]}"

    def _prepare(self, sock: zmq.Socket[bytes]) -> None:
        self._secure(sock)

    def _secure(self, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self._keys.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._keys.client_secret)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 250)

    def _wait_for_socket(
        self, name: str, deadline: float, check: Callable[[], None] | None = None
    ) -> None:
        return  # nothing to inspect: a TCP connect is retried by ZeroMQ itself

    def heartbeat(self, timeout: float) -> bool:
        """True if the kernel's heartbeat echoes within `timeout` seconds."""
        with self._hb_lock:
            if self._closed:
                return False
            if self._hb is None:
                self._hb = self._heartbeat_socket()
            try:
                self._hb.send(b"ping", zmq.NOBLOCK)
                if not self._hb.poll(int(timeout * 1000)):
                    return False
                with contextlib.suppress(zmq.Again):
                    self._hb.recv(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again (no peer), or the namespace's context is gone
                return False
            return True

    def wait_kernel_gone(self, deadline: float) -> None:
        """Block until the running kernel drops our connection (before a restart's new
        kernel is dialled, so the old one cannot answer for it)."""
        while time.monotonic() < deadline:
            for msg in self.receive(min(0.1, max(0.0, deadline - time.monotonic()))):
                if msg.msg_type == "_connection_dropped":
                    return
        raise APITimeoutError("the old kernel did not stop in time")

    _closed = False
    _hb: zmq.Socket[bytes] | None = None

    def close(self) -> None:
        """Close every socket and the context (its I/O thread leaves the namespace)."""
        with self._hb_lock:
            if self._closed:
                return
            self._closed = True
            if self._hb is not None:
                self._hb.close(linger=0)
                self._hb = None
        super().close()
        with contextlib.suppress(zmq.ZMQError):
            self._context.destroy(linger=0)  # never blocks on a socket left open
