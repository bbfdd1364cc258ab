"""Running code in a sandbox's kernel: outputs in order, timeouts, deaths and restarts.

The run itself is `execution_machine.RunMachine`; `_run` here only drives it: it reads the
kernel channel and the clock, and carries out the machine's commands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    InternalServerError,
)
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core.execution_machine import (
    CheckHealth,
    Command,
    Event,
    Health,
    Interrupt,
    Quiet,
    Received,
    RunMachine,
    Tick,
)
from jupyter_sandbox.core.execution_output import Collector, OutputCallback
from jupyter_sandbox.core.kernels import Kernels, Session, SessionClosed, max_message
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import MEMORY_LIMIT_BYTES
from jupyter_sandbox.types.execution import Execution

__all__ = ["ExecutionService", "OutputCallback"]

logger = logging.getLogger(__name__)

_HEARTBEAT_TIMEOUTS = (1.0, 2.0, 4.0)
"""A kernel is declared dead only when its heartbeat misses each of these in a row: a
busy host (or gVisor under load) can delay one echo past a second, and one miss used to
restart a live kernel and lose its variables. A dead kernel costs up to 7 s more to name."""
KEEP_ACTIVE = 15.0
"""Seconds between touches of a sandbox while it runs code: the store then shows it active to
every server that shares it (their idle sweeps and pauses spare it), not just to this one."""


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
        self._running: set[str] = set()  # sandboxes running code in this process
        self._failure = failure or _as_api_error

    def execute(
        self,
        record: ContainerRecord,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        store_history: bool = True,
    ) -> Execution:
        """Run `code`; a timeout interrupts it, then restarts the kernel if it stays busy.

        `store_history=False` (snapshots' own cells) leaves `In`, `Out` and the count alone."""
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
                self._running.add(record.id)
                try:
                    session = self._kernels.get(record)
                    self._touch(record.id)
                    return self._run(record, session, code, timeout, on_output, store_history)
                finally:
                    self._running.discard(record.id)
                    self._kernels.settle(record.id)
                    self._touch(record.id)

    def is_running(self, container_id: str) -> bool:
        """Whether this process is running code in the sandbox now (idle pause waits)."""
        return container_id in self._running

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

    def _keep_active(self, container_id: str) -> None:
        if time.time() - self._touched.get(container_id, 0.0) < KEEP_ACTIVE:
            return
        try:
            self._touch(container_id)
        except APIError as exc:  # the store restarting must not fail a running cell
            logger.warning("sandbox %s: could not mark it active: %s", container_id, exc)

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
        store_history: bool = True,
    ) -> Execution:
        started = time.monotonic()
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
                "store_history": store_history,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        machine = RunMachine(
            msg_id,
            Collector(self._settings.output_limit_bytes, on_output),
            started=started,
            timeout=timeout,
            grace=self._settings.interrupt_grace,
            max_message=max_message(self._settings),
            name=record.id,
        )

        def drive(event: Event) -> None:
            self._carry_out(record, session, machine, machine.step(event))

        while not machine.done:
            if session.closing:  # the sandbox ended under this run (deleted, expired, died)
                raise SessionClosed(f"sandbox {record.id} ended while the code ran")
            now = time.monotonic()
            self._keep_active(record.id)
            drive(Tick(now))
            if machine.finished is not None:
                break
            for msg in connection.receive(machine.wait(now)):
                drive(Received(msg, time.monotonic()))
                if machine.finished is not None:
                    break
            else:
                drive(Quiet(time.monotonic()))
        finish = machine.outcome()
        return Execution(
            container_id=record.id,
            status=finish.status,
            outputs=machine.collector.outputs,
            execution_count=machine.reply[1] if machine.reply is not None else None,
            duration=time.monotonic() - started,
            truncated=machine.collector.truncated,
            message=finish.message,
        )

    def _carry_out(
        self,
        record: ContainerRecord,
        session: Session,
        machine: RunMachine,
        commands: list[Command],
    ) -> None:
        """Do what the machine asked, in order (a `Finish` is the last command it gives)."""
        for command in commands:
            if isinstance(command, Interrupt):
                self._kernels.interrupt(record)
            elif isinstance(command, CheckHealth):
                answer = Health(self._death(record, session))
                self._carry_out(record, session, machine, machine.step(answer))
            elif command.restart and command.status == "died":
                # Under gVisor the host's OOM killer ends the whole sandbox, not one process.
                if not self._kernels.restart_if_running(record, session) and command.message:
                    machine.finished = replace(
                        command,
                        message=command.message.replace(
                            "and was restarted", "and the sandbox ended with it"
                        ),
                    )
            elif command.restart:
                self._kernels.restart(record, session)

    def _death(self, record: ContainerRecord, session: Session) -> str | None:
        """Why the kernel died, or None if it is alive."""
        out_of_memory = (
            f"The kernel ran out of memory (memory_limit {record.memory_limit} = "
            f"{MEMORY_LIMIT_BYTES.get(record.memory_limit)} bytes) and was restarted"
        )
        if self._kernels.died_of_oom(record, session):
            return out_of_memory
        for timeout in _HEARTBEAT_TIMEOUTS:
            if session.connection.heartbeat(timeout):
                return None
            if self._kernels.died_of_oom(record, session):
                return out_of_memory
        return "The kernel died unexpectedly and was restarted"
