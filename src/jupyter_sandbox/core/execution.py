"""Running code in a sandbox's kernel: outputs in order, timeouts, deaths and restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    InternalServerError,
)
from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core import kernel_messages
from jupyter_sandbox.core.kernels import Kernels, Session, SessionClosed, max_message
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import MEMORY_LIMIT_BYTES
from jupyter_sandbox.types.execution import (
    Execution,
    ExecutionOutput,
    StreamOutput,
)

logger = logging.getLogger(__name__)

OutputCallback = Callable[[ExecutionOutput], None]
_QUIET_BEFORE_CHECK = 1.0
_HEARTBEAT_TIMEOUT = 1.0


class _Collector:
    """Outputs in order, streams merged, bounded by a byte budget."""

    def __init__(self, limit: int, on_output: OutputCallback | None) -> None:
        self.outputs: list[ExecutionOutput] = []
        self.truncated = False
        self._budget = limit
        self._limit = limit
        self._on_output = on_output
        self.malformed_count = 0

    def add(self, msg_type: str, content: Any) -> None:
        try:
            output = kernel_messages.to_output(msg_type, content)
        except kernel_messages.MalformedMessage as exc:
            self.malformed(str(exc))
            return
        if output is kernel_messages.IGNORED:
            if msg_type == "clear_output":
                self.outputs.clear()
            return
        assert not isinstance(output, kernel_messages._Ignored)
        size = (
            len(output.text) if isinstance(output, StreamOutput) else len(output.model_dump_json())
        )
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

    def malformed(self, why: str) -> None:
        """Note a kernel message dropped for its shape (sandbox code can forge them)."""
        self.malformed_count += 1
        logger.info("dropped a malformed kernel message: %s", why)
        if self.malformed_count == 1:
            self._append(
                StreamOutput(name="stderr", text=f"\n[dropped a malformed kernel message: {why}]\n")
            )

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


def _reason(record: ContainerRecord) -> str:
    """` (why)` for a record that ended with an error, else nothing."""
    return f" ({record.error})" if record.error and not record.is_live else ""


def _as_api_error(container_id: str, exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    logger.error("sandbox %s: unexpected %r", container_id, exc)
    return InternalServerError(f"Container {container_id}: {type(exc).__name__}")


class ExecutionService:
    """Runs code in ready sandboxes, one execution at a time per sandbox."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        kernels: Kernels,
        failure: Callable[[str, BaseException], APIError] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._kernels = kernels
        self._touched: dict[str, float] = {}
        self._failure = failure or _as_api_error

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
        timeout = check_seconds(timeout, "timeout")
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}{_reason(record)}; only a ready "
                "container runs code",
                param="container_id",
            )
        with self._errors(record):
            session = self._kernels.get(record)
            with session.lock:
                try:
                    session = self._kernels.get(record)
                    self._touch(record.id)
                    return self._run(record, session, code, timeout, on_output)
                finally:
                    self._kernels.settle(record.id)
                    self._touch(record.id)

    @contextmanager
    def _errors(self, record: ContainerRecord) -> Iterator[None]:
        """The one boundary of kernel operations: whatever fails (a sandbox deleted or dead
        under us, a closed socket, a refused signal) leaves as an API error that tells the
        sandbox's state (`ContainerService.failure`)."""
        try:
            yield
        except Exception as exc:
            raise self._failure(record.id, exc) from exc

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
                f"Container {record.id} is {record.status}{_reason(record)}; only a ready "
                "container restarts",
                param="container_id",
            )
        with self._errors(record):
            session = self._kernels.get(record)
            with session.lock:
                try:
                    self._kernels.restart(record, self._kernels.get(record))
                finally:
                    self._kernels.settle(record.id)
            self._store.touch(record.id)

    def interrupt(self, record: ContainerRecord) -> None:
        """Send SIGINT to the sandbox's kernel."""
        if record.status != "ready":
            raise ConflictError(
                f"Container {record.id} is {record.status}{_reason(record)}; only a ready "
                "container can be interrupted",
                param="container_id",
            )
        with self._errors(record):
            self._kernels.interrupt(record)

    def _run(
        self,
        record: ContainerRecord,
        session: Session,
        code: str,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> Execution:
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else float("inf")
        collector = _Collector(self._settings.output_limit_bytes, on_output)
        connection = session.connection
        for _ in connection.receive(0):
            pass  # stale: a drop noted before this run (another process restarted the kernel)
        if connection.resubscribed:  # the idle kernel answers once iopub is subscribed again
            connection.wait_ready(time.monotonic() + self._settings.start_timeout)
            connection.resubscribed = False
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
        reply: tuple[str, int | None] | None = None  # (status, execution_count)
        idle = False
        shell_lost = iopub_lost = False
        last_message = started
        interrupted_at: float | None = None

        def result(status: str, message: str | None = None) -> Execution:
            return Execution(
                container_id=record.id,
                status=status,  # type: ignore[arg-type]
                outputs=collector.outputs,
                execution_count=reply[1] if reply is not None else None,
                duration=time.monotonic() - started,
                truncated=collector.truncated,
                message=message,
            )

        while (reply is None and not shell_lost) or not (idle or iopub_lost):
            if session.closing:  # the sandbox ended under this run (deleted, expired, died)
                raise SessionClosed(f"sandbox {record.id} ended while the code ran")
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
                        return result("died", self._after_death(record, session, died))
                    limit = max_message(self._settings)
                    logger.warning("%s: dropped a kernel message over %d bytes", record.id, limit)
                    collector.drop(f"the kernel sent a message over {limit} bytes")
                    shell_lost = shell_lost or msg.channel == "shell"
                    iopub_lost = iopub_lost or msg.channel == "iopub"
                    continue
                if msg.msg_type == kernel.MALFORMED:
                    if not msg.content.get("quiet"):
                        collector.malformed(str(msg.content.get("why", "unreadable")))
                    continue
                if msg.parent_id != msg_id:
                    continue
                if msg.channel == "shell" and msg.msg_type == "execute_reply":
                    try:
                        reply = kernel_messages.reply_fields(msg.content)
                    except kernel_messages.MalformedMessage as exc:
                        collector.malformed(str(exc))
                        reply = ("error", None)
                elif msg.msg_type == "status":
                    idle = kernel_messages.execution_state(msg.content) == "idle"
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
                    return result("died", self._after_death(record, session, died))
        if interrupted_at is not None:
            return result("timeout", f"Execution timed out after {timeout:g} s and was interrupted")
        if reply is None:
            return result("error", "The kernel's reply was over the size limit and was dropped")
        status = "ok" if reply[0] == "ok" else "error"
        return result(status)

    def _after_death(self, record: ContainerRecord, session: Session, died: str) -> str:
        """Restart the dead kernel; the message says so, or that the sandbox ended with it."""
        if self._kernels.restart_if_running(record, session):
            return died
        return died.replace("and was restarted", "and the sandbox ended with it")

    def _death(self, record: ContainerRecord, session: Session) -> str | None:
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
