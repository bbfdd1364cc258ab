"""A filtering relay between the Jupyter server and a sandbox's kernel.

The provisioner gives the Jupyter server this relay's sockets, never the kernel's: the relay
binds its own `ipc` sockets in a private 0700 folder on the host, with its own HMAC key, and
holds the only connection to the sandbox. One thread per kernel moves messages:

    server -> kernel   shell, control, stdin: signature checked (relay key), re-signed with
                       the kernel's key; heartbeat frames passed through
    kernel -> server   shell, control, stdin, iopub: signature checked (kernel key), parsed,
                       filtered by `relay_messages.filter_reply` (known types only, MIME
                       bundles made safe, comms dropped), re-serialized, signed with the relay
                       key; anything malformed, unsigned or unknown is dropped

So the Jupyter server never receives a message the sandbox wrote unfiltered, and a sandbox
that learns its own kernel key still cannot sign for the server. As in `backends.kernel`,
every kernel socket is `lstat`ed (a socket, owned by the sandbox user) before it is dialled,
ZeroMQ never reconnects by itself, and an oversized message drops only that connection,
which is reopened after the same check.

A kernel may also be dialled through a `KernelDialer`: the backend's own connection object
(`Client.containers.kernel_channel`), which opens each raw socket as it opens its own. For
the encrypted tcp channel (gVisor, a remote engine) that means CurveZMQ with the host's client
key, which stays inside that object, from the sandbox's network namespace (or through the
engine's exec tunnel); ZeroMQ then reconnects by itself (the address is fixed, the server key
pinned), so those sockets are not reopened by hand. The server side is unchanged: `ipc` in
the private folder, so the Jupyter server needs neither the namespace nor the Curve keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import queue
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import zmq
from jupyter_client.session import Session

from jupyter_sandbox._exceptions import JupyterSandboxError
from jupyter_sandbox.jupyter.relay_messages import filter_reply

__all__ = ["KernelDialer", "KernelRelay"]

logger = logging.getLogger(__name__)

DELIM = b"<IDS|MSG>"
_PORTS = {"shell": 1, "iopub": 2, "stdin": 3, "control": 4, "hb": 5}
_SERVER_KINDS = {
    "shell": zmq.ROUTER,
    "control": zmq.ROUTER,
    "stdin": zmq.ROUTER,
    "iopub": zmq.PUB,
    "hb": zmq.ROUTER,
}
_KERNEL_KINDS = {
    "shell": zmq.DEALER,
    "control": zmq.DEALER,
    "stdin": zmq.DEALER,
    "iopub": zmq.SUB,
    "hb": zmq.DEALER,
}
_HWM = 1000
_MONITOR_IDS = itertools.count()
_CONNECT_TIMEOUT = 30.0


@runtime_checkable
class KernelDialer(Protocol):
    """Opens raw sockets to one kernel (`backends.kernel.KernelConnection` and its tcp
    subclasses are dialers); the relay closes it when it is done with the kernel."""

    session: Session
    """Holds the kernel's HMAC key (`session.key`)."""

    def dial(self, name: str, kind: int, options: dict[int, int | bytes]) -> zmq.Socket[bytes]:
        """A connected socket of `kind` to channel `name`, `options` set before it dials."""
        ...

    def heartbeat(self, timeout: float) -> bool:
        """Whether the kernel's heartbeat echoes within `timeout` seconds."""
        ...

    def close(self) -> None:
        """Release what the dialer holds (a namespace's context, a tunnel); idempotent."""
        ...


class KernelRelay:
    """Relays one kernel's channels to the Jupyter server, filtering what the sandbox sends.

    Args:
        uid: the sandbox user; kernel sockets owned by anyone else are refused (when root).
        max_message: the largest kernel message read, in bytes (-1: no limit).
        key: the relay's HMAC key for the server side (default: a fresh one).
    """

    def __init__(self, uid: int, max_message: int = -1, key: str | None = None) -> None:
        self.key = key or secrets.token_hex(32)
        self.folder = Path(tempfile.mkdtemp(prefix="jsbx-relay-"))  # 0700, ours
        self._uid = uid
        self._max_message = max_message
        self._context: zmq.Context[Any] = zmq.Context.instance()
        self._commands: queue.Queue[tuple[str, Any, Future[None]]] = queue.Queue()
        self._wake_read, self._wake_write = os.pipe()
        self._server: dict[str, zmq.Socket[bytes]] = {}
        self._kernel: dict[str, zmq.Socket[bytes]] = {}
        self._monitors: dict[zmq.Socket[bytes], str] = {}
        self._kernel_ip: str | None = None
        self._kernel_key = b""
        self._dialer: KernelDialer | None = None
        self._dialer_lock = threading.Lock()  # heartbeat (any thread) against a swap or close
        self._poller = zmq.Poller()
        self.dropped = 0
        """Messages from the sandbox dropped (bad signature, malformed, or not allowed)."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="jsbx-kernel-relay", daemon=True
        )
        self._thread.start()
        ready.result(timeout=_CONNECT_TIMEOUT)

    def connection_info(self) -> dict[str, Any]:
        """The connection dict the Jupyter server uses: the relay's sockets and key."""
        return {
            "transport": "ipc",
            "ip": str(self.folder / "r"),
            **{f"{name}_port": port for name, port in _PORTS.items()},
            "key": self.key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        }

    def connect_kernel(self, kernel: dict[str, Any] | KernelDialer) -> None:
        """Dial a (new) kernel, replacing any previous one: from its `ipc` connection dict, or
        through a dialer (which the relay then owns and closes).

        Raises:
            RuntimeError: a kernel socket is missing or not a socket of the sandbox user.
            JupyterSandboxError: the dialer refused a socket (the same checks).
        """
        self._command("connect", kernel).result(timeout=_CONNECT_TIMEOUT)

    def heartbeat(self, timeout: float) -> bool:
        """Whether the kernel answers its dialer's heartbeat (False without a dialer)."""
        with self._dialer_lock:
            return self._dialer is not None and self._dialer.heartbeat(timeout)

    @property
    def is_alive(self) -> bool:
        """True while the relay's thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread, close every socket and remove the folder; idempotent."""
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self._command("close", None).result(timeout=_CONNECT_TIMEOUT)
            self._thread.join(timeout=_CONNECT_TIMEOUT)
        for descriptor in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(descriptor)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- the thread --------------------------------------------------------------------

    def _command(self, name: str, argument: Any) -> Future[None]:
        done: Future[None] = Future()
        if not self._thread.is_alive():
            done.set_exception(RuntimeError("the kernel relay has stopped"))
            return done
        self._commands.put((name, argument, done))
        os.write(self._wake_write, b"x")
        return done

    def _run(self, ready: Future[None]) -> None:
        try:
            for name, kind in _SERVER_KINDS.items():
                sock = self._context.socket(kind)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, _HWM)
                sock.bind(f"ipc://{self.folder}/r-{_PORTS[name]}")
                self._server[name] = sock
                self._poller.register(sock, zmq.POLLIN)
            self._poller.register(self._wake_read, zmq.POLLIN)
        except BaseException as exc:
            ready.set_exception(exc)
            self._close_sockets()
            return
        ready.set_result(None)
        try:
            while self._loop_once():
                pass
        except Exception:
            logger.exception("kernel relay stopped")
        finally:
            self._close_sockets()

    def _loop_once(self) -> bool:
        events = dict(self._poller.poll())
        if self._wake_read in events and not self._commands_done():
            return False
        for monitor in [m for m in list(self._monitors) if m in events]:
            with contextlib.suppress(zmq.Again):
                monitor.recv_multipart(zmq.NOBLOCK)
            self._reopen(self._monitors[monitor])
        for name, sock in self._server.items():
            if sock in events:
                self._drain(sock, partial(self._to_kernel, name))
        for name, sock in list(self._kernel.items()):
            if sock in events:
                self._drain(sock, partial(self._to_server, name))
        return True

    def _commands_done(self) -> bool:
        """Run queued commands; False once asked to close."""
        os.read(self._wake_read, 4096)
        while True:
            try:
                name, argument, done = self._commands.get_nowait()
            except queue.Empty:
                return True
            if name == "close":
                done.set_result(None)
                return False
            try:
                self._connect(argument)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

    @staticmethod
    def _drain(sock: zmq.Socket[bytes], handle: Callable[[list[bytes]], None]) -> None:
        for _ in range(_HWM):  # bounded: one busy channel cannot starve the others
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(frames)

    # -- kernel sockets ------------------------------------------------------------------

    def _connect(self, kernel: dict[str, Any] | KernelDialer) -> None:
        self._close_kernel()
        if isinstance(kernel, dict):
            key = kernel["key"]
            self._kernel_key = key if isinstance(key, bytes) else str(key).encode()
            self._kernel_ip = str(kernel["ip"])
        else:
            with self._dialer_lock:
                self._dialer = kernel
            self._kernel_key = kernel.session.key
        for name in _KERNEL_KINDS:
            self._open(name)

    def _path(self, name: str) -> str:
        return f"{self._kernel_ip}-{_PORTS[name]}"

    def _open(self, name: str) -> None:
        if self._dialer is not None:
            options: dict[int, int | bytes] = {zmq.MAXMSGSIZE: self._max_message, zmq.RCVHWM: _HWM}
            if name == "iopub":
                options[zmq.SUBSCRIBE] = b""
            sock = self._dialer.dial(name, _KERNEL_KINDS[name], options)
        else:
            sock = self._open_ipc(name)
        self._kernel[name] = sock
        self._poller.register(sock, zmq.POLLIN)
        if int(sock.getsockopt(zmq.RECONNECT_IVL)) >= 0:
            return  # ZeroMQ reconnects this one itself (tcp: fixed address, pinned key)
        monitor = sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED, addr=f"inproc://jsbx-relay-monitor-{next(_MONITOR_IDS)}"
        )
        self._monitors[monitor] = name
        self._poller.register(monitor, zmq.POLLIN)

    def _open_ipc(self, name: str) -> zmq.Socket[bytes]:
        path = self._path(name)
        status = os.lstat(path)
        if not stat.S_ISSOCK(status.st_mode) or (os.geteuid() == 0 and status.st_uid != self._uid):
            raise RuntimeError(f"refusing to connect: {path} is not a socket owned by the sandbox")
        sock: zmq.Socket[bytes] = self._context.socket(_KERNEL_KINDS[name])
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        if name == "iopub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"ipc://{path}")
        return sock

    def _drop_kernel_socket(self, name: str) -> None:
        sock = self._kernel.pop(name)
        self._poller.unregister(sock)
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()  # before the monitor closes: zeromq/libzmq#3575
        for monitor in [m for m, n in self._monitors.items() if n == name]:
            del self._monitors[monitor]
            self._poller.unregister(monitor)
            monitor.close(linger=0)
        sock.close(linger=0)

    def _reopen(self, name: str) -> None:
        """The kernel's side dropped a connection (oversized message, or the kernel ended)."""
        self._drop_kernel_socket(name)
        try:
            self._open(name)
        except (OSError, RuntimeError, JupyterSandboxError) as exc:
            logger.info("kernel %s socket not reopened: %s", name, exc)

    def _close_kernel(self) -> None:
        for name in list(self._kernel):
            self._drop_kernel_socket(name)
        with self._dialer_lock:  # after its sockets: closing it may end their context
            dialer, self._dialer = self._dialer, None
            if dialer is not None:
                dialer.close()

    def _close_sockets(self) -> None:
        self._close_kernel()
        for sock in self._server.values():
            sock.close(linger=0)
        self._server.clear()

    # -- messages ----------------------------------------------------------------------

    def _to_kernel(self, name: str, frames: list[bytes]) -> None:
        target = self._kernel.get(name)
        if target is None:
            return  # no kernel yet, or between restarts: as if the kernel were not there
        if name == "hb":
            target.send_multipart(frames)
            return
        split = _split(frames, self.key.encode())
        if split is None:
            logger.warning("dropped a badly signed %s message from the server", name)
            return
        idents, parts, buffers = split
        target.send_multipart([*idents, DELIM, _sign(self._kernel_key, parts), *parts, *buffers])

    def _to_server(self, name: str, frames: list[bytes]) -> None:
        if name == "hb":
            self._server["hb"].send_multipart(frames)
            return
        try:
            forwarded = self._filter(name, frames)
        except Exception:  # sandbox-signed bytes: any shape (deep nesting: RecursionError)
            logger.warning("dropped an unreadable %s message from the sandbox", name)
            forwarded = None
        if forwarded is None:
            self.dropped += 1
            return
        idents, parts, buffers = forwarded
        if name == "iopub":
            idents = []  # sandbox-chosen topics are not passed on
        message = [*idents, DELIM, _sign(self.key.encode(), parts), *parts, *buffers]
        self._server[name].send_multipart(message)

    def _filter(
        self, name: str, frames: list[bytes]
    ) -> tuple[list[bytes], list[bytes], list[bytes]] | None:
        split = _split(frames, self._kernel_key)
        if split is None:
            logger.warning("dropped a badly signed %s message from the sandbox", name)
            return None
        idents, parts, _ = split  # buffers only serve comms, which are never forwarded
        try:
            header, parent, metadata, content = (json.loads(part) for part in parts)
        except (ValueError, UnicodeDecodeError):
            return None
        if not all(isinstance(p, dict) for p in (header, parent, metadata, content)):
            return None
        msg_type = header.get("msg_type")
        if not isinstance(msg_type, str):
            return None
        kept = filter_reply(name, msg_type, content)
        if kept is None:
            logger.debug("dropped a %s %s message from the sandbox", name, msg_type)
            return None
        try:
            parts = [_dump(part) for part in (header, parent, metadata, kept)]
        except ValueError:
            return None
        return idents, parts, []


def _split(frames: list[bytes], key: bytes) -> tuple[list[bytes], list[bytes], list[bytes]] | None:
    """(identities, [header, parent, metadata, content], buffers) if correctly signed."""
    try:
        index = frames.index(DELIM)
    except ValueError:
        return None
    idents, rest = frames[:index], frames[index + 1 :]
    if len(rest) < 5:
        return None
    signature, parts, buffers = rest[0], rest[1:5], rest[5:]
    if not key or not hmac.compare_digest(signature, _sign(key, parts)):
        return None
    return idents, parts, buffers


def _sign(key: bytes, parts: list[bytes]) -> bytes:
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        digest.update(part)
    return digest.hexdigest().encode()


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
