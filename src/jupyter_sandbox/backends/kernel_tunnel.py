"""The exec tunnel: a remote engine's kernel channel, carried by the engine's own API.

Like `kubectl port-forward`. The host cannot enter a remote sandbox's network namespace, so
each ZeroMQ connection the host makes lands on a host-local listener (a Unix socket in a
private 0700 folder, one per channel: no other local user can dial it) and becomes one
`docker exec` in the sandbox running a tiny byte forwarder (`python3 -I -S`, as the sandbox
user) that connects to the kernel's loopback port and copies stdin to it and it to stdout.
The exec's hijacked stream goes through the engine's authenticated API (TLS or ssh), so no
port is published and nothing joins a network. The bytes stay CurveZMQ-encrypted end to end:
the stream, the forwarder and the engine see only ciphertext, and a hostile sandbox that
takes the forwarder over can only break its own channel.

Framing: the exec runs without a tty (a tty's line discipline would rewrite binary bytes:
CR/LF, echo, ^C), so the engine wraps stdout and stderr in its multiplexed frames (an
8-byte header: stream, three zero bytes, big-endian length); the pump demultiplexes them,
forwarding stdout and keeping only the last 2 KiB of stderr (the forwarder's reason).
A closed connection on either side closes the other: ZeroMQ's reconnect then makes a new
exec. Buffers are bounded in both directions (a side is not read while its peer's buffer
is full), and new execs of one channel are spaced, so a sandbox that drops its channel in a
loop costs at most a few execs a second.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import zmq

from jupyter_sandbox._exceptions import APITimeoutError
from jupyter_sandbox.backends.kernel import KernelConnection
from jupyter_sandbox.backends.kernel_tcp import CurveKeys, TcpKernelConnection

logger = logging.getLogger(__name__)

FORWARDER = r"""
import os, select, socket, sys, time
port, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
def listening():
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f][1:]
    except OSError:
        return True
    return any(r[1] == "0100007F:%04X" % port and r[3] == "0A" for r in rows)
while True:
    try:
        if not listening():
            raise OSError(111, "no listener yet")
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        break
    except OSError as e:
        if time.monotonic() > end:
            sys.exit("forwarder: nothing listens on 127.0.0.1:%d (%s)" % (port, e.strerror))
        time.sleep(0.02)
s.settimeout(None)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    r = select.select([0, s], [], [])[0]
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    if s in r:
        d = s.recv(65536)
        if not d:
            break
        v = memoryview(d)
        while v:
            v = v[os.write(1, v):]
"""
"""Runs in the sandbox: connect to the kernel's port once it listens, then copy. It never
dials a port nobody listens on: Linux may pick that very port as the dial's own ephemeral
port (the kernel ports are in the ephemeral range) and connect the socket to itself, which
would hold the port and make the kernel's bind fail."""

_HEADER = 8
_BUFFER = 256 * 1024
_STDERR_TAIL = 2048
_MIN_EXEC_SPACING = 0.05
_WINDOW_POLL = 0.005


class Demux:
    """Docker's multiplexed stream -> stdout bytes (returned) and a stderr tail (kept)."""

    def __init__(self) -> None:
        self._header = b""
        self._stream = 0
        self._remaining = 0
        self.stderr = b""

    def feed(self, data: bytes) -> bytes:
        """The stdout payload in `data` (frames may split anywhere)."""
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._remaining == 0:
                need = _HEADER - len(self._header)
                self._header += bytes(view[:need])
                view = view[need:]
                if len(self._header) < _HEADER:
                    break
                self._stream = self._header[0]
                self._remaining = int.from_bytes(self._header[4:8], "big")
                self._header = b""
                continue
            part = view[: self._remaining]
            view = view[len(part) :]
            self._remaining -= len(part)
            if self._stream == 1:
                out += part
            elif self._stream == 2:
                self.stderr = (self.stderr + bytes(part))[-_STDERR_TAIL:]
        return bytes(out)


def _early_bytes(stream: Any) -> bytes:
    """Bytes the HTTP reader buffered past the upgrade headers (else lost to the pump)."""
    response = getattr(stream, "_response", None)
    reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    if reader is None or not hasattr(reader, "peek"):
        return b""
    try:
        buffered = bytes(reader.peek(0) or b"")  # no raw read: the socket is non-blocking
    except (OSError, ValueError):
        return b""
    return bytes(reader.read(len(buffered))) if buffered else b""


class ExecTunnel:
    """Host-local listeners for one sandbox's kernel ports, each connection an exec in it.

    Args:
        api: the engine's low-level client (`docker.APIClient`).
        container: the sandbox's container name.
        ports: channel name -> the kernel's port inside the sandbox.
        connect_wait: seconds a forwarder waits for the kernel to listen.
    """

    def __init__(
        self,
        api: docker.APIClient,
        container: str,
        ports: Mapping[str, int],
        *,
        connect_wait: float,
    ) -> None:
        self._api = api
        self._container = container
        self._wait = connect_wait
        self.folder = Path(tempfile.mkdtemp(prefix="jsbx-t-"))  # 0700
        self._stop_r, self._stop_w = socket.socketpair()
        self._lock = threading.Lock()
        self._links: set[threading.Thread] = set()
        self._last_exec: dict[str, float] = {}
        self.execs = 0
        """Execs started so far (each ZeroMQ connection is one)."""
        self.failure: str | None = None
        """Why the latest exec did not carry a connection (its forwarder's words)."""
        self._listeners: dict[socket.socket, tuple[str, int]] = {}
        try:
            for name, port in ports.items():
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._listeners[listener] = (name, port)
                listener.bind(str(self.folder / name))
                listener.listen(8)
                listener.setblocking(False)
        except BaseException:
            self._close_listeners()
            raise
        self._acceptor = threading.Thread(target=self._accept, name="jsbx-tunnel", daemon=True)
        self._acceptor.start()

    def endpoint(self, name: str) -> str:
        """The ZeroMQ endpoint that reaches channel `name`."""
        return f"ipc://{self.folder / name}"

    def _accept(self) -> None:
        while True:
            ready = select.select([self._stop_r, *self._listeners], [], [])[0]
            if self._stop_r in ready:
                return
            for listener in ready:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                name, port = self._listeners[listener]
                link = threading.Thread(
                    target=self._link, args=(conn, name, port), name=f"jsbx-tunnel-{name}"
                )
                link.daemon = True
                with self._lock:
                    self._links = {t for t in self._links if t.is_alive()}
                    self._links.add(link)
                link.start()

    def _link(self, conn: socket.socket, name: str, port: int) -> None:
        stream: Any = None
        try:
            spacing = self._last_exec.get(name, 0.0) + _MIN_EXEC_SPACING - time.monotonic()
            if spacing > 0 and select.select([self._stop_r], [], [], spacing)[0]:
                return
            self._last_exec[name] = time.monotonic()
            stream = self._start_exec(port)
        except Exception as exc:
            self.failure = f"cannot open an exec in {self._container} for {name}: {exc}"
            logger.warning("%s", self.failure)
        else:
            with contextlib.suppress(OSError):  # a reset on either side ends the link
                _pump(conn, stream, self._stop_r, name, self)
        finally:
            conn.close()
            if stream is not None:
                _close_stream(stream)

    def _start_exec(self, port: int) -> Any:
        made: dict[str, Any] = self._api.exec_create(
            self._container,
            ["python3", "-I", "-S", "-c", FORWARDER, str(port), f"{self._wait:g}"],
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            workdir="/",
        )
        self.execs += 1
        return self._api.exec_start(made["Id"], socket=True)

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()

    def close(self) -> None:
        """Stop accepting, end every exec stream (its forwarder sees stdin close and exits),
        join the threads, remove the folder; idempotent."""
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")  # never read: every select wakes, now and later
        if self._acceptor.is_alive() and self._acceptor is not threading.current_thread():
            self._acceptor.join(5)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.join(5)
        self._close_listeners()
        shutil.rmtree(self.folder, ignore_errors=True)
        if not self._acceptor.is_alive() and not any(link.is_alive() for link in links):
            self._stop_r.close()  # nothing selects on it any more
            self._stop_w.close()
        else:  # a link stuck opening an exec (a node that died): close once it gives up
            threading.Thread(
                target=self._close_after, args=(links,), name="jsbx-tunnel-close", daemon=True
            ).start()

    def _close_after(self, links: list[threading.Thread]) -> None:
        self._acceptor.join()
        for link in links:
            link.join()
        self._stop_r.close()
        self._stop_w.close()

    @property
    def live_links(self) -> int:
        """Connections being carried now."""
        with self._lock:
            return sum(1 for t in self._links if t.is_alive())


def read_output(stream: Any, limit: int, timeout: float) -> bytes:
    """At most `limit` bytes of a hijacked exec stream's stdout (then the stream is closed),
    read within `timeout` seconds in all."""
    return read_streams(stream, limit, timeout)[0]


def read_streams(stream: Any, limit: int, timeout: float) -> tuple[bytes, bytes, bool]:
    """A hijacked exec stream's stdout (at most `limit` bytes), its stderr's last 2 KiB, and
    whether the stream ended by itself (not cut at `limit` or at the deadline); the stream
    is closed after.

    `timeout` bounds the whole read, not each receive: sandbox code can open its own exec's
    stdout (`/proc/<pid>/fd/1`, same user) and keep it open, a byte every few seconds."""
    remote = _raw(stream)
    deadline = time.monotonic() + timeout
    demux = Demux()
    out = bytearray()
    ended = False
    try:
        out += demux.feed(_early_bytes(stream))
        while len(out) <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            remote.settimeout(left)
            data = remote.recv(65536)
            if not data:
                ended = True
                break
            out += demux.feed(data)
    except OSError:
        pass  # a timeout or reset: what arrived is all there is
    finally:
        _close_stream(stream)
    return bytes(out[:limit]), demux.stderr, ended and len(out) <= limit


def _close_stream(stream: Any) -> None:
    """Close the hijacked stream, its socket and the HTTP response holding them (a socket
    with a live SocketIO stays open until that is closed too)."""
    for part in (getattr(stream, "_response", None), stream, _raw(stream)):
        close = getattr(part, "close", None)
        if close is not None:
            with contextlib.suppress(OSError, ValueError):
                close()


def _raw(stream: Any) -> Any:
    """The socket under docker-py's hijacked stream (SocketIO for a Unix socket, else the
    TLS socket or ssh channel itself)."""
    return getattr(stream, "_sock", stream)


def _pump(
    conn: socket.socket, stream: Any, stop: socket.socket, name: str, tunnel: ExecTunnel
) -> None:
    """Copy bytes both ways until either side closes or the tunnel stops (one thread: a TLS
    socket must never be read and written by two threads at once)."""
    remote = _raw(stream)
    remote.setblocking(False)
    conn.setblocking(False)
    demux = Demux()
    to_local = bytearray(demux.feed(_early_bytes(stream)))
    to_remote = bytearray()
    remote_open = local_open = True
    got_output = bool(to_local)
    # A paramiko channel (an ssh engine): its fileno() is a pipe that signals reads only, so
    # whether it can send is asked (`send_ready`: room in the ssh window), not selected.
    send_ready: Callable[[], bool] | None = getattr(remote, "send_ready", None)
    while local_open and (remote_open or to_local):
        # a side is not read while its peer's buffer is full
        want_read = [remote] if remote_open and len(to_local) < _BUFFER else []
        want_read += [conn] if len(to_remote) < _BUFFER else []
        sending = bool(to_remote) and remote_open
        want_write = [conn] if to_local else []
        if sending and send_ready is None:
            want_write.append(remote)
        can_send = sending and send_ready is not None and send_ready()
        pending = isinstance(remote, ssl.SSLSocket) and remote in want_read and remote.pending() > 0
        polls_window = sending and send_ready is not None and not can_send
        wait = _wait(pending=pending, can_send=can_send, polls_window=polls_window)
        readable, writable, _ = select.select([stop, *want_read], want_write, [], wait)
        if stop in readable:
            return
        if pending and remote not in readable:
            readable.append(remote)
        if can_send:
            writable.append(remote)
        if conn in readable:
            data = _recv(conn)
            if data == b"":
                return  # ZeroMQ closed it: ending the exec stream ends the forwarder
            to_remote += data or b""
        if remote in readable:
            data = _recv(remote)
            if data == b"":
                remote_open = False
            elif data:
                out = demux.feed(data)
                got_output = got_output or bool(out)
                to_local += out
        if to_remote and remote in writable:
            to_remote = to_remote[_send(remote, to_remote) :]
        if to_local and conn in writable:
            to_local = to_local[_send(conn, to_local) :]
    if not got_output and demux.stderr:
        why = demux.stderr.decode("utf-8", "replace").strip()
        tunnel.failure = f"the {name} channel's forwarder: {why}"
        logger.debug("%s", tunnel.failure)


def _wait(*, pending: bool, can_send: bool, polls_window: bool) -> float | None:
    """How long the pump's select may block: not at all with bytes to move now (TLS bytes
    already decrypted, room in an ssh window), briefly while an ssh window is shut (it opens
    on the peer's word, which no file descriptor signals), else until something happens."""
    if pending or can_send:
        return 0
    return _WINDOW_POLL if polls_window else None


_NOT_READY = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, TimeoutError)
"""Nothing to read or no room to write yet (TimeoutError: a non-blocking paramiko channel,
which docker-py gives for `ssh://` engines)."""


def _recv(sock: Any) -> bytes | None:
    """Bytes, b"" at the end of the stream, None when nothing is ready."""
    try:
        return bytes(sock.recv(65536))
    except _NOT_READY:
        return None
    except OSError:
        return b""


def _send(sock: Any, data: bytearray) -> int:
    try:
        return int(sock.send(data))
    except _NOT_READY:
        return 0


class TunnelKernelConnection(TcpKernelConnection):
    """The tcp channel's CurveZMQ sockets, dialled through an `ExecTunnel` (a remote engine)."""

    def __init__(
        self, tunnel: ExecTunnel, key: str, keys: CurveKeys, max_message: int = -1
    ) -> None:
        KernelConnection.__init__(self, tunnel.folder, key, 0, max_message)
        self._keys = keys
        self._hb_lock = threading.Lock()  # as TcpKernelConnection: heartbeat against close
        self.tunnel = tunnel
        self._context = zmq.Context(io_threads=1)

    def _endpoint(self, name: str) -> str:
        return self.tunnel.endpoint(name)

    def wait_ready(
        self, deadline: float, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """As for any channel; a timeout names why the tunnel carried nothing, if it knows."""
        try:
            return super().wait_ready(deadline, check)
        except APITimeoutError as exc:
            if self.tunnel.failure is None:
                raise
            raise APITimeoutError(f"{exc} ({self.tunnel.failure})") from None

    def close(self) -> None:
        """Close the sockets and the context, then the tunnel (its execs end with it)."""
        try:
            super().close()
        finally:
            self.tunnel.close()


__all__ = [
    "FORWARDER",
    "Demux",
    "ExecTunnel",
    "TunnelKernelConnection",
    "read_output",
    "read_streams",
]
