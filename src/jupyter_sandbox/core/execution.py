"""Running code in a sandbox's kernel: outputs in order, timeouts, deaths and restarts."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import (
    APITimeoutError,
    BadRequestError,
    ConflictError,
    InternalServerError,
)
from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.kernel import KernelConnection
from jupyter_sandbox.backends.runtime.base import Runtime
from jupyter_sandbox.backends.runtime.docker import SANDBOX_UID
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import MEMORY_LIMIT_BYTES
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    Execution,
    ExecutionOutput,
    StreamOutput,
)

logger = logging.getLogger(__name__)

OutputCallback = Callable[[ExecutionOutput], None]
_QUIET_BEFORE_CHECK = 1.0
_HEARTBEAT_TIMEOUT = 1.0
_KERNEL_EXITED = re.compile(r"^sandbox-init: kernel (exited|killed)", re.MULTILINE)


@dataclass
class _Session:
    connection: KernelConnection
    lock: threading.Lock = field(default_factory=threading.Lock)
    oom_kills: int | None = None


class Kernels:
    """This process's open connections to sandbox kernels, one per sandbox."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self._settings = settings
        self._runtime = runtime
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def open(
        self, record: ContainerRecord, deadline: float, since: float | None = None
    ) -> _Session:
        """Connect to the sandbox's kernel and wait until it answers on shell and iopub.

        A kernel that dies or a container that stops meanwhile fails at once; every failure
        quotes what the sandbox's supervisor and kernel printed since `since` (epoch seconds).
        """
        since = time.time() if since is None else since
        connection = KernelConnection(
            Path(record.socket_dir), record.kernel_key, SANDBOX_UID, max_message(self._settings)
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
        session = _Session(connection, oom_kills=self._oom_kills(record.id))
        with self._lock:
            old = self._sessions.pop(record.id, None)
            self._sessions[record.id] = session
        if old is not None:
            old.connection.close()
        return session

    def _start_check(self, record: ContainerRecord, since: float) -> Callable[[], None]:
        def check() -> None:
            state = self._runtime.state(record.id)
            if state is None or not state.running:
                raise InternalServerError(
                    f"sandbox {record.id} stopped before its kernel was ready"
                    + self._log_note(record, since)
                )
            log = self._runtime.logs(record.id, since)
            # Only an exit after the latest start counts (an earlier kernel's death may be
            # logged just after `since`).
            if _KERNEL_EXITED.search(log.rpartition("sandbox-init: kernel started")[2]):
                raise InternalServerError(
                    f"the kernel of sandbox {record.id} exited while starting"
                    + self._log_note(record, since, log)
                )

        return check

    def _log_note(self, record: ContainerRecord, since: float, log: str | None = None) -> str:
        text = (self._runtime.logs(record.id, since) if log is None else log).strip()
        return f"; its log:\n{text}" if text else "; it printed nothing"

    def get(self, record: ContainerRecord) -> _Session:
        """The open session, connecting on first use in this process."""
        with self._lock:
            session = self._sessions.get(record.id)
        if session is None:
            session = self.open(record, time.monotonic() + self._settings.start_timeout)
        return session

    def restart(self, record: ContainerRecord, session: _Session) -> _Session:
        """Kill everything in the sandbox and start a fresh kernel (files survive)."""
        session.connection.close()
        kernel.clear_sockets(Path(record.socket_dir))
        since = time.time()
        self._runtime.signal(record.id, "SIGUSR1")
        fresh = self.open(record, time.monotonic() + self._settings.start_timeout, since)
        fresh.lock = session.lock  # the caller holds it
        return fresh

    def interrupt(self, record: ContainerRecord) -> None:
        """Send SIGINT to the kernel (through the supervisor, PID 1)."""
        self._runtime.signal(record.id, "SIGINT")

    def close(self, container_id: str) -> None:
        """Forget and close the connection to one sandbox."""
        with self._lock:
            session = self._sessions.pop(container_id, None)
        if session is not None:
            session.connection.close()

    def close_all(self) -> None:
        """Close every connection."""
        for container_id in list(self._sessions):
            self.close(container_id)

    def _oom_kills(self, container_id: str) -> int | None:
        reader = getattr(self._runtime, "oom_kills", None)
        return reader(container_id) if reader else None

    def died_of_oom(self, record: ContainerRecord, session: _Session) -> bool:
        """Whether the cgroup's oom_kill counter moved since we last looked."""
        now = self._oom_kills(record.id)
        before, session.oom_kills = session.oom_kills, now
        return now is not None and before is not None and now > before


def max_message(settings: Settings) -> int:
    """Largest kernel message the host reads: the output budget twice (JSON escaping) + 1 MiB."""
    return 2 * settings.output_limit_bytes + 2**20


class _Collector:
    """Outputs in order, streams merged, bounded by a byte budget."""

    def __init__(self, limit: int, on_output: OutputCallback | None) -> None:
        self.outputs: list[ExecutionOutput] = []
        self.truncated = False
        self._budget = limit
        self._limit = limit
        self._on_output = on_output

    def add(self, msg_type: str, content: dict[str, Any]) -> None:
        output = _to_output(msg_type, content)
        if output is None:
            if msg_type == "clear_output":
                self.outputs.clear()
            return
        size = len(output.text) if isinstance(output, StreamOutput) else len(json.dumps(content))
        if size > self._budget:
            if not self.truncated:
                self.truncated = True
                self._append(
                    StreamOutput(
                        name="stderr", text=f"\n[output truncated at {self._limit} bytes]\n"
                    )
                )
            self._budget = 0
            return
        self._budget -= size
        self._append(output)

    def drop(self, what: str) -> None:
        """Note output lost on the way (a message over the size limit was refused)."""
        if not self.truncated:
            self.truncated = True
            self._append(StreamOutput(name="stderr", text=f"\n[output dropped: {what}]\n"))

    def _append(self, output: ExecutionOutput) -> None:
        last = self.outputs[-1] if self.outputs else None
        if (
            isinstance(output, StreamOutput)
            and isinstance(last, StreamOutput)
            and last.name == output.name
        ):
            last.text += output.text
        else:
            self.outputs.append(output.model_copy())
        if self._on_output is not None:
            self._on_output(output)


def _to_output(msg_type: str, content: dict[str, Any]) -> ExecutionOutput | None:
    if msg_type == "stream":
        return StreamOutput(name=content.get("name", "stdout"), text=content.get("text", ""))
    if msg_type == "display_data":
        return DisplayDataOutput(data=content.get("data", {}), metadata=content.get("metadata", {}))
    if msg_type == "execute_result":
        return ExecuteResultOutput(
            execution_count=content.get("execution_count"),
            data=content.get("data", {}),
            metadata=content.get("metadata", {}),
        )
    if msg_type == "error":
        return ErrorOutput(
            ename=content.get("ename", ""),
            evalue=content.get("evalue", ""),
            traceback=content.get("traceback", []),
        )
    return None


class ExecutionService:
    """Runs code in ready sandboxes, one execution at a time per sandbox."""

    def __init__(self, settings: Settings, store: Store, kernels: Kernels) -> None:
        self._settings = settings
        self._store = store
        self._kernels = kernels
        self._touched: dict[str, float] = {}

    def execute(
        self,
        record: ContainerRecord,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Execution:
        """Run `code`; a timeout interrupts it, then restarts the kernel if it stays busy."""
        if not isinstance(code, str):
            raise BadRequestError("Invalid code: must be a string", param="code")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise BadRequestError(
                "Invalid timeout: must be a positive number of seconds", param="timeout"
            )
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}; only a ready container runs code",
                param="container_id",
            )
        session = self._kernels.get(record)
        with session.lock:
            session = self._kernels.get(record)
            self._touch(record.id)
            try:
                return self._run(record, session, code, timeout, on_output)
            finally:
                self._touch(record.id)

    def _touch(self, container_id: str) -> None:
        # last_active_at has one-second resolution: one write a second per sandbox is enough.
        now = time.time()
        if now - self._touched.get(container_id, 0.0) >= 1.0:
            self._store.touch(container_id, now)
            self._touched[container_id] = now

    def restart(self, record: ContainerRecord) -> None:
        """Restart the sandbox's kernel (waits for any running execution to finish first)."""
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}; only a ready container restarts",
                param="container_id",
            )
        session = self._kernels.get(record)
        with session.lock:
            self._kernels.restart(record, self._kernels.get(record))
            self._store.touch(record.id)

    def _run(
        self,
        record: ContainerRecord,
        session: _Session,
        code: str,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> Execution:
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else float("inf")
        collector = _Collector(self._settings.output_limit_bytes, on_output)
        connection = session.connection
        msg_id = connection.send(
            "shell",
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        reply: dict[str, Any] | None = None
        idle = False
        shell_lost = iopub_lost = False
        last_message = started
        interrupted_at: float | None = None

        def result(status: str, message: str | None = None) -> Execution:
            return Execution(
                container_id=record.id,
                status=status,  # type: ignore[arg-type]
                outputs=collector.outputs,
                execution_count=(reply or {}).get("execution_count"),
                duration=time.monotonic() - started,
                truncated=collector.truncated,
                message=message,
            )

        while (reply is None and not shell_lost) or not (idle or iopub_lost):
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                self._kernels.interrupt(record)
                interrupted_at = now
            if (
                interrupted_at is not None
                and now >= interrupted_at + self._settings.interrupt_grace
            ):
                self._kernels.restart(record, session)
                return result(
                    "timeout",
                    f"Execution timed out after {timeout:g} s and ignored the interrupt; "
                    "the kernel was restarted (variables are lost, files are kept)",
                )
            wait = min(0.25, max(0.0, (interrupted_at or deadline) - now)) if timeout else 0.25
            for msg in connection.receive(wait):
                last_message = time.monotonic()
                if msg.msg_type == kernel.DROPPED:
                    died = self._death(record, session)  # a dying kernel drops them too
                    if died is not None:
                        self._kernels.restart(record, session)
                        return result("died", died)
                    limit = max_message(self._settings)
                    logger.warning("%s: dropped a kernel message over %d bytes", record.id, limit)
                    collector.drop(f"the kernel sent a message over {limit} bytes")
                    shell_lost = shell_lost or msg.channel == "shell"
                    iopub_lost = iopub_lost or msg.channel == "iopub"
                    continue
                if msg.parent_id != msg_id:
                    continue
                if msg.channel == "shell" and msg.msg_type == "execute_reply":
                    reply = msg.content
                elif msg.msg_type == "status":
                    idle = msg.content.get("execution_state") == "idle"
                else:
                    collector.add(msg.msg_type, msg.content)
            if time.monotonic() - last_message >= _QUIET_BEFORE_CHECK:
                if reply is not None:
                    break  # replied, then a quiet iopub: its idle status was lost (queue full)
                if idle and not shell_lost:
                    # ipykernel swallows a KeyboardInterrupt that lands in its own code (just
                    # before or after the user's) and then sends the idle status but no reply.
                    if interrupted_at is not None:
                        return result("timeout", f"Execution timed out after {timeout:g} s")
                    return result(
                        "error", "KeyboardInterrupt: interrupted; the kernel sent no reply"
                    )
                last_message = time.monotonic()
                died = self._death(record, session)
                if died is not None:
                    self._kernels.restart(record, session)
                    return result("died", died)
        if interrupted_at is not None:
            return result("timeout", f"Execution timed out after {timeout:g} s and was interrupted")
        if reply is None:
            return result("error", "The kernel's reply was over the size limit and was dropped")
        status = "ok" if reply.get("status") == "ok" else "error"
        return result(status)

    def _death(self, record: ContainerRecord, session: _Session) -> str | None:
        """Why the kernel died, or None if it is alive."""
        out_of_memory = (
            f"The kernel ran out of memory (memory_limit {record.memory_limit} = "
            f"{MEMORY_LIMIT_BYTES.get(record.memory_limit)} bytes) and was restarted"
        )
        if self._kernels.died_of_oom(record, session):
            return out_of_memory
        if session.connection.heartbeat(_HEARTBEAT_TIMEOUT):
            return None
        if self._kernels.died_of_oom(record, session):
            return out_of_memory
        return "The kernel died unexpectedly and was restarted"
