"""This process's kernel connections: one per sandbox, opened, restarted and closed here.

Waiting for a kernel checks the container about once a second, so a container that stopped or
a kernel that exited while starting fails at once, quoting the sandbox's log.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jupyter_sandbox._exceptions import APITimeoutError, InternalServerError
from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.base import Backend, KernelChannel, KernelEndpoint
from jupyter_sandbox.backends.store import ContainerRecord
from jupyter_sandbox.settings import Settings

logger = logging.getLogger(__name__)

_KERNEL_EXITED = re.compile(r"^sandbox-init: kernel (exited|killed)", re.MULTILINE)


@dataclass
class Session:
    """One open kernel connection; `lock` is held by the one execution or restart using it."""

    connection: KernelChannel
    lock: threading.Lock = field(default_factory=threading.Lock)
    oom_kills: int | None = None
    closing: bool = False
    """Set when the sandbox ends under a running execution: its holder closes the connection
    and stops (closing a socket another thread polls raises raw ZeroMQ errors)."""


class SessionClosed(kernel.ConnectionClosed):
    """The sandbox's kernel connection was closed (its sandbox ended) under an operation."""


_RETIRED_MEMORY = 4096


class Kernels:
    """This process's open connections to sandbox kernels, one per sandbox."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._retired: dict[str, None] = {}  # ended sandboxes: never reconnect (bounded)
        self._pending: dict[str, Session] = {}  # closed under a lock holder: it closes them

    def open(self, record: ContainerRecord, deadline: float, since: float | None = None) -> Session:
        """Connect to the sandbox's kernel and wait until it answers on shell and iopub.

        A kernel that dies or a container that stops meanwhile fails at once; every failure
        quotes what the sandbox's supervisor and kernel printed since `since` (epoch seconds).
        """
        since = time.time() if since is None else since
        connection = self._backend.connect_kernel(
            _endpoint(self._backend, record), max_message(self._settings)
        )
        check = self._start_check(record, since)
        try:
            connection.connect(deadline, check)
            connection.wait_ready(deadline, check)
        except APITimeoutError as exc:
            connection.close()
            raise APITimeoutError(
                f"{exc} ({self._settings.start_timeout:g} s){self._log_note(record, since)}"
            ) from None
        except BaseException:
            connection.close()
            raise
        session = Session(connection, oom_kills=self._oom_kills(record.id))
        with self._lock:
            retired = record.id in self._retired
            old = None if retired else self._sessions.pop(record.id, None)
            if not retired:
                self._sessions[record.id] = session
        if retired:  # the sandbox ended while we connected
            connection.close()
            raise SessionClosed(f"sandbox {record.id} ended while its kernel was starting")
        if old is not None:
            old.connection.close()
        return session

    def _start_check(self, record: ContainerRecord, since: float) -> Callable[[], None]:
        def check() -> None:
            state = self._backend.state(record.id)
            if state is None or not state.running:
                raise InternalServerError(
                    f"sandbox {record.id} stopped before its kernel was ready"
                    + self._log_note(record, since)
                )
            log = self._backend.logs(record.id, since)
            # Only an exit after the latest start counts (an earlier kernel's death may be
            # logged just after `since`).
            if _KERNEL_EXITED.search(log.rpartition("sandbox-init: kernel started")[2]):
                raise InternalServerError(
                    f"the kernel of sandbox {record.id} exited while starting"
                    + self._log_note(record, since, log)
                )

        return check

    def _log_note(self, record: ContainerRecord, since: float, log: str | None = None) -> str:
        text = (self._backend.logs(record.id, since) if log is None else log).strip()
        return f"; its log:\n{text}" if text else "; it printed nothing"

    def get(self, record: ContainerRecord) -> Session:
        """The open session, connecting on first use in this process."""
        with self._lock:
            session = self._sessions.get(record.id)
            retired = record.id in self._retired
        if retired:
            raise SessionClosed(f"sandbox {record.id} has ended")
        if session is None:
            session = self.open(record, time.monotonic() + self._settings.start_timeout)
        return session

    def restart(self, record: ContainerRecord, session: Session) -> Session:
        """Kill everything in the sandbox and start a fresh kernel (files survive).

        The old session is forgotten first, so a restart that fails leaves no stale session:
        the next call connects anew (or learns that the sandbox ended).
        """
        with self._lock:
            if self._sessions.get(record.id) is session:
                del self._sessions[record.id]
        old = session.connection
        try:  # whatever fails below, the old connection is closed (it is no session's now)
            # A channel with a fixed address (tcp) waits for the old kernel to drop it; only
            # a kernel still alive drops it as it goes.
            wait_gone: Callable[[float], object] | None = getattr(old, "wait_kernel_gone", None)
            is_alive = wait_gone is not None and not session.closing and old.heartbeat(1.0)
            if wait_gone is None or session.closing:
                old.close()
            if session.closing:
                raise SessionClosed(f"sandbox {record.id} ended")
            self._backend.reset_channel(_endpoint(self._backend, record))
            since = time.time()
            self._backend.signal(record.id, "SIGUSR1")
            # A fixed address (tcp): only the new kernel may answer the new connection.
            if wait_gone is not None and is_alive:
                wait_gone(time.monotonic() + self._settings.start_timeout)
        finally:
            old.close()
        fresh = self.open(record, time.monotonic() + self._settings.start_timeout, since)
        fresh.lock = session.lock  # the caller holds it
        return fresh

    def restart_if_running(self, record: ContainerRecord, session: Session) -> bool:
        """`restart` after the kernel died; False if its whole container ended with it (under
        gVisor the host's OOM killer ends the sandbox's user-space kernel, not one process)."""
        try:
            self.restart(record, session)
        except Exception:
            state = self._backend.state(record.id)
            if state is not None and state.running:
                raise
            self.close(record.id)
            return False
        return True

    def interrupt(self, record: ContainerRecord) -> None:
        """Send SIGINT to the kernel (through the supervisor, PID 1)."""
        self._backend.signal(record.id, "SIGINT")

    def close(self, container_id: str, *, retire: bool = True) -> None:
        """Forget and close the connection to one sandbox (`retire`: it ended, never connect
        to it again). A running execution holding the session closes it itself, at once."""
        with self._lock:
            session = self._sessions.pop(container_id, None)
            if retire:
                self._retired[container_id] = None
                while len(self._retired) > _RETIRED_MEMORY:
                    del self._retired[next(iter(self._retired))]
        if session is None:
            return
        session.closing = True
        if session.lock.acquire(blocking=False):
            try:
                session.connection.close()
            finally:
                session.lock.release()
        else:
            with self._lock:
                self._pending[container_id] = session
            if session.lock.acquire(blocking=False):  # the holder left meanwhile
                try:
                    self.settle(container_id)
                finally:
                    session.lock.release()

    def settle(self, container_id: str) -> None:
        """Close a connection that `close` left to the holder of its lock (the caller)."""
        with self._lock:
            session = self._pending.pop(container_id, None)
        if session is not None:
            session.connection.close()

    def close_all(self) -> None:
        """Close every connection (the sandboxes keep running)."""
        with self._lock:
            ids = list(self._sessions)
        for container_id in ids:
            self.close(container_id, retire=False)

    def _oom_kills(self, container_id: str) -> int | None:
        return self._backend.oom_kills(container_id)

    def died_of_oom(self, record: ContainerRecord, session: Session) -> bool:
        """Whether the cgroup's oom_kill counter moved since we last looked."""
        now = self._oom_kills(record.id)
        before, session.oom_kills = session.oom_kills, now
        return now is not None and before is not None and now > before


def _endpoint(backend: Backend, record: ContainerRecord) -> KernelEndpoint:
    return backend.kernel_endpoint(record.socket_dir, record.kernel_key)


def max_message(settings: Settings) -> int:
    """Largest kernel message the host reads: the output budget twice (JSON escaping) + 1 MiB."""
    return 2 * settings.output_limit_bytes + 2**20
