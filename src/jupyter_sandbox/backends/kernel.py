"""The kernel channel: ZeroMQ over `ipc` sockets in a private per-sandbox folder.

The host never follows a link the sandbox planted: every socket is `lstat`ed (a socket,
owned by the sandbox user) before connecting, and ZeroMQ's automatic reconnect is off, so a
path swapped later is never dialled again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.session import Session

from jupyter_sandbox._exceptions import APITimeoutError, InternalServerError
from jupyter_sandbox.backends.base import KernelMessage

logger = logging.getLogger(__name__)

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
_PORTS = {name: index + 1 for index, name in enumerate(CHANNELS)}
SOCKET_PREFIX = "k"
SOCKET_DIR_SIZE = "1m"
_MS_NODEV, _MS_NOSUID, _MS_NOEXEC = 4, 2, 8
_KINDS = {"shell": zmq.DEALER, "iopub": zmq.SUB, "control": zmq.DEALER}
_RCVHWM = 64
# pyzmq's default monitor address reuses the socket's fd number, which a socket still being
# torn down may hold (EADDRINUSE under churn): each monitor gets its own name.
_MONITOR_IDS = itertools.count()
_CHECK_EVERY = 1.0
_SEND_TIMEOUT_MS = 2000
DROPPED = "_connection_dropped"
"""Pseudo message type: the channel's connection dropped and was reopened (messages lost)."""
MALFORMED = "_malformed"
"""Pseudo message type: a correctly signed message we could not read (content: `why`)."""


def new_key() -> str:
    """A fresh HMAC key for one sandbox."""
    return secrets.token_hex(32)


def connection_info(ip: str, key: str) -> dict[str, Any]:
    """A Jupyter connection file's content for the `ipc` transport rooted at `ip`."""
    return {
        "transport": "ipc",
        "ip": ip,
        **{f"{name}_port": port for name, port in _PORTS.items()},
        "key": key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
    }


def create_socket_dir(
    path: Path, key: str, container_path: str, uid: int, info: dict[str, Any] | None = None
) -> None:
    """Make the private socket folder (a 1 MiB tmpfs when we are root) with the connection file
    (`info`, else the ipc one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(mode=0o700)
    if os.geteuid() == 0:
        _mount_tmpfs(path, uid)
    info = info or connection_info(f"{container_path}/{SOCKET_PREFIX}", key)
    connection_file = path / "connection.json"
    descriptor = os.open(
        connection_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
    )
    with os.fdopen(descriptor, "w") as handle:
        json.dump(info, handle)
    if os.geteuid() == 0:
        os.chown(connection_file, uid, uid, follow_symlinks=False)
        os.chown(path, uid, uid, follow_symlinks=False)


def remove_socket_dir(path: Path) -> None:
    """Unmount and delete a socket folder; idempotent, never follows links inside it."""
    if os.path.ismount(path):
        _umount(path)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def clear_sockets(path: Path) -> None:
    """Delete the kernel's socket files (before a restart, so new ones are the new kernel's)."""
    for name in CHANNELS:
        with contextlib.suppress(FileNotFoundError):
            (path / f"{SOCKET_PREFIX}-{_PORTS[name]}").unlink()


def kernel_listening(path: Path, uid: int) -> bool:
    """Whether something in the sandbox listens on its heartbeat socket: a cheap first sign
    of life (one local connect) before asking the engine. Only a real socket of the sandbox
    user counts; a dead container leaves its socket file refusing connections."""
    hb = path / f"{SOCKET_PREFIX}-{_PORTS['hb']}"
    try:
        info = os.lstat(hb)
    except OSError:
        return False
    if not stat.S_ISSOCK(info.st_mode) or (os.geteuid() == 0 and info.st_uid != uid):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(str(hb))
    except BlockingIOError:
        return True  # a listener with a full backlog
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount_tmpfs(path: Path, uid: int) -> None:
    options = f"size={SOCKET_DIR_SIZE},mode=0700,uid={uid},gid={uid}".encode()
    flags = _MS_NODEV | _MS_NOSUID | _MS_NOEXEC
    if _libc().mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, options) != 0:
        errno = ctypes.get_errno()
        raise InternalServerError(f"cannot mount the socket tmpfs at {path}: {os.strerror(errno)}")


def _umount(path: Path) -> None:
    if _libc().umount2(str(path).encode(), 2) != 0:  # MNT_DETACH: never blocks on a busy mount
        logger.warning("cannot unmount %s: %s", path, os.strerror(ctypes.get_errno()))


class ConnectionClosed(InternalServerError):
    """The connection was closed (its sandbox ended) while an operation used it."""


Message = KernelMessage
"""A kernel message on one channel (the seam's `KernelMessage`)."""


def _malformed(channel: str, why: str, *, quiet: bool = False) -> Message:
    return Message(channel, MALFORMED, None, {"why": why, "quiet": quiet})


def _to_message(channel: str, msg: dict[str, Any]) -> Message:
    """A deserialized message, or MALFORMED when a field we route on has the wrong type
    (sandbox code holds the key and can sign any shape; the content is checked later)."""
    header, parent = msg.get("header"), msg.get("parent_header") or {}
    msg_type = header.get("msg_type") if isinstance(header, dict) else None
    parent_id = parent.get("msg_id") if isinstance(parent, dict) else None
    if not isinstance(msg_type, str):
        return _malformed(channel, "no msg_type")
    if parent_id is not None and not isinstance(parent_id, str):
        return _malformed(channel, "a parent msg_id that is not a string")
    content = msg.get("content")
    if not isinstance(content, dict):
        return _malformed(channel, f"{msg_type!r:.40} content is not an object")
    return Message(channel, msg_type, parent_id, content)


class KernelConnection:
    """Signed ZeroMQ sockets to one kernel; not thread-safe (one user at a time)."""

    def __init__(self, socket_dir: Path, key: str, uid: int, max_message: int = -1) -> None:
        self._dir = socket_dir
        self._uid = uid
        self._max_message = max_message
        self._context: zmq.Context[Any] = zmq.Context.instance()
        self.session = Session(
            key=key.encode(), signature_scheme="hmac-sha256", username="jupyter-sandbox"
        )
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._monitors: dict[zmq.Socket[bytes], str] = {}
        self._poller = zmq.Poller()

    def connect(self, deadline: float, check: Callable[[], None] | None = None) -> None:
        """Connect once every socket exists and is a real socket of the sandbox user.

        `check` runs about once a second while waiting and raises if the kernel cannot come up.
        """
        for name in (*_KINDS, "hb"):
            self._wait_for_socket(name, deadline, check)
        for name in _KINDS:
            self._open(name)

    def _open(self, name: str) -> None:
        kind = _KINDS[name]
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        # The sandbox writes these messages: a bigger one drops the connection before it is
        # read (a 1 GB print would otherwise cost the host several GB); queues stay short.
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message)
        sock.setsockopt(zmq.RCVHWM, _RCVHWM)
        # A DEALER with no peer (the kernel's side is gone, and we never reconnect) blocks
        # every send for good: give up instead, and let the caller learn why.
        sock.setsockopt(zmq.SNDTIMEO, _SEND_TIMEOUT_MS)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._prepare(sock)
        sock.connect(self._endpoint(name))
        self._sockets[name] = sock
        if name != "control":
            self._poller.register(sock, zmq.POLLIN)
            monitor = sock.get_monitor_socket(
                zmq.EVENT_DISCONNECTED, addr=f"inproc://jsbx-monitor-{next(_MONITOR_IDS)}"
            )
            self._monitors[monitor] = name
            self._poller.register(monitor, zmq.POLLIN)

    def _prepare(self, sock: zmq.Socket[bytes]) -> None:
        """Options a subclass adds before a socket dials (the tcp channel's Curve keys)."""

    def dial(self, name: str, kind: int, options: Mapping[int, int | bytes]) -> zmq.Socket[bytes]:
        """A raw socket of `kind` to channel `name`, checked and secured as this connection's
        own are (ipc: the socket `lstat`ed, no reconnect; tcp: Curve), for a relay that
        forwards frames; the caller closes it before closing this connection.

        Raises:
            APITimeoutError: the kernel's socket does not exist (yet).
            InternalServerError: the path is not a socket of the sandbox user.
        """
        self._wait_for_socket(name, time.monotonic())
        sock: zmq.Socket[bytes] = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        for option, value in options.items():
            sock.setsockopt(option, value)
        self._prepare(sock)
        try:
            sock.connect(self._endpoint(name))
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _reopen(self, monitor: zmq.Socket[bytes]) -> str:
        """Replace a socket whose connection the kernel's side dropped (oversized message)."""
        name = self._monitors.pop(monitor)
        self._poller.unregister(monitor)
        sock = self._sockets.pop(name)
        self._poller.unregister(sock)
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        try:
            self._wait_for_socket(name, time.monotonic())  # the same check as the first time
        except APITimeoutError:
            return name  # the kernel is gone; its death is detected by the heartbeat
        self._open(name)
        if name == "iopub":
            self.resubscribed = True
        return name

    resubscribed = False
    """The iopub socket was reopened: until the kernel is heard on it again (`wait_ready`),
    outputs may be lost while the new subscription travels (slowest over tcp + Curve)."""

    def _endpoint(self, name: str) -> str:
        return f"ipc://{self._dir}/{SOCKET_PREFIX}-{_PORTS[name]}"

    def _wait_for_socket(
        self, name: str, deadline: float, check: Callable[[], None] | None = None
    ) -> None:
        path = self._dir / f"{SOCKET_PREFIX}-{_PORTS[name]}"
        next_check = time.monotonic() + _CHECK_EVERY
        while True:
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                now = time.monotonic()
                if now > deadline:
                    raise APITimeoutError(
                        f"the kernel did not open its {name} socket in time"
                    ) from None
                if check is not None and now >= next_check:
                    check()
                    next_check = now + _CHECK_EVERY
                time.sleep(0.002)
                continue
            if not stat.S_ISSOCK(info.st_mode) or (os.geteuid() == 0 and info.st_uid != self._uid):
                raise InternalServerError(
                    f"refusing to connect: {path.name} is not a socket owned by the sandbox"
                )
            return

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request; return its msg_id."""
        sock = self._sockets.get(channel)
        if sock is None:
            raise ConnectionClosed(f"the kernel connection is closed ({channel})")
        msg = self.session.msg(msg_type, content)
        try:
            self.session.send(sock, msg)
        except zmq.Again:
            raise ConnectionClosed(f"the kernel is not connected ({channel})") from None
        return str(msg["header"]["msg_id"])

    def receive(self, timeout: float) -> Iterator[Message]:
        """Messages that arrive within `timeout` seconds (stops at the first quiet poll)."""
        if not self._sockets:
            raise ConnectionClosed("the kernel connection is closed")
        ready = dict(self._poller.poll(max(0, int(timeout * 1000))))
        for monitor in [m for m in self._monitors if m in ready]:
            with contextlib.suppress(zmq.Again):
                monitor.recv_multipart(zmq.NOBLOCK)
            name = self._reopen(monitor)
            logger.debug("the kernel's %s connection dropped; reopened", name)
            yield Message(name, DROPPED, None, {})
        for name in ("shell", "iopub"):
            sock = self._sockets.get(name)
            if sock is None or sock not in ready:
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                yield self._read(name, frames)

    def _read(self, channel: str, frames: list[bytes]) -> Message:
        """One message, checked: a bad signature is dropped (logged), any other unreadable
        message becomes MALFORMED (sandbox code holds the key and can sign any bytes)."""
        try:
            _, raw = self.session.feed_identities(frames)
            msg = self.session.deserialize(raw)
        except ValueError as exc:
            text = str(exc).lower()
            if "signature" in text or "unsigned" in text:
                logger.warning("dropped a badly signed message on %s", channel)
                return _malformed(channel, "a badly signed message", quiet=True)
            return _malformed(channel, f"unreadable ({type(exc).__name__})")
        except Exception as exc:
            return _malformed(channel, f"unreadable ({type(exc).__name__})")
        return _to_message(channel, msg)

    def wait_ready(
        self, deadline: float, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Return the kernel_info reply once shell and iopub both answer (`check` as in connect)."""
        pending: set[str] = set()
        reply: dict[str, Any] | None = None
        iopub_seen = False
        next_request = 0.0
        next_check = time.monotonic() + _CHECK_EVERY
        while reply is None or not iopub_seen:
            now = time.monotonic()
            if now > deadline:
                raise APITimeoutError("the kernel did not become ready in time")
            if check is not None and now >= next_check:
                check()
                next_check = now + _CHECK_EVERY
            if now >= next_request:
                # iopub subscriptions are asynchronous: ask again until a status arrives on it.
                pending.add(self.send("shell", "kernel_info_request", {}))
                next_request = now + 0.25
            for msg in self.receive(min(0.05, max(0.0, deadline - now))):
                if msg.parent_id not in pending:
                    continue
                if msg.channel == "shell" and msg.msg_type == "kernel_info_reply":
                    reply = msg.content
                elif msg.channel == "iopub":
                    iopub_seen = True
        return reply

    def heartbeat(self, timeout: float) -> bool:
        """True if the kernel's heartbeat echoes within `timeout` seconds."""
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)
        try:
            self._wait_for_socket("hb", time.monotonic())
        except APITimeoutError:
            sock.close()
            return False
        except InternalServerError as exc:
            logger.warning("heartbeat of %s: %s", self._dir.name, exc)
            sock.close()
            return False
        try:
            sock.connect(self._endpoint("hb"))
            sock.send(b"ping")
            return bool(sock.poll(int(timeout * 1000)))
        finally:
            sock.close()

    def close(self) -> None:
        """Close every socket.

        Monitoring stops before a monitor socket closes: libzmq's I/O thread blocks for good
        sending an event (a disconnect, as the kernel leaves) to a monitor nobody reads, and
        with it every kernel connection of this process (zeromq/libzmq#3575).
        """
        for sock in self._sockets.values():
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for monitor in self._monitors:
            monitor.close(linger=0)
        self._monitors.clear()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._poller = zmq.Poller()
