"""`ExecutionService` drives the run machine over a scripted kernel channel and a fake clock:
the commands really reach the kernel (interrupt, restart), with no Docker and no kernel."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    InternalServerError,
)
from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.kernel import KernelConnection, Message
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core import execution
from jupyter_sandbox.core.execution import ExecutionService
from jupyter_sandbox.core.kernels import Kernels, Session
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.execution import StreamOutput

MSG_ID = "request-1"


class Clock:
    """Monotonic and wall time that move only when the fake channel waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class ScriptedConnection:
    """A kernel channel that delivers one scripted batch per wait, then silence."""

    def __init__(self, clock: Clock, batches: list[list[Message]], alive: bool = True) -> None:
        self.clock = clock
        self.batches = list(batches)
        self.alive = alive
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.waits: list[float] = []
        self.heartbeats = 0
        self.misses = 0
        """Heartbeats a live kernel still misses first (a host too busy to echo in time)."""
        self.resubscribed = False

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        self.sent.append((channel, msg_type, content))
        return MSG_ID

    def receive(self, timeout: float) -> Iterator[Message]:
        if not self.sent:
            return  # nothing stale before the request (the run drains first)
        self.waits.append(timeout)
        batch = self.batches.pop(0) if self.batches else []
        if not batch:
            self.clock.now += timeout
        for msg in batch:
            self.clock.now += 0.001
            yield msg

    def heartbeat(self, timeout: float) -> bool:
        self.heartbeats += 1
        if self.misses > 0 or not self.alive:
            self.misses -= 1
            self.clock.now += timeout  # a miss waits the whole timeout, as a real one does
            return False
        return True


class FakeKernels:
    """What the service asks of `Kernels`, recorded."""

    def __init__(self, session: Session, oom: list[bool] | None = None) -> None:
        self.session = session
        self.oom = list(oom or [])
        self.calls: list[str] = []

    def get(self, record: ContainerRecord) -> Session:
        return self.session

    def settle(self, container_id: str) -> None:
        self.calls.append("settle")

    def interrupt(self, record: ContainerRecord) -> None:
        self.calls.append("interrupt")

    def restart(self, record: ContainerRecord, session: Session) -> Session:
        self.calls.append("restart")
        return session

    def restart_if_running(self, record: ContainerRecord, session: Session) -> bool:
        self.restart(record, session)
        return self.sandbox_survives

    sandbox_survives = True

    def died_of_oom(self, record: ContainerRecord, session: Session) -> bool:
        return self.oom.pop(0) if self.oom else False


class FakeStore:
    def __init__(self) -> None:
        self.touched: list[str] = []

    def touch(self, container_id: str, when: float | None = None) -> None:
        self.touched.append(container_id)


def record(status: str = "ready") -> ContainerRecord:
    return ContainerRecord(
        id="cntr_test",
        project="default",
        name="test",
        status=status,  # type: ignore[arg-type]
        created_at=0.0,
        last_active_at=0.0,
        memory_limit="1g",
        network_policy={"type": "disabled"},
        idle_minutes=20,
        expires_at=0.0,
        image="image",
        kernel_key="key",
        socket_dir="/nonexistent",
        owner_pid=1,
        owner_host="host",
    )


def iopub(msg_type: str, **content: Any) -> Message:
    return Message("iopub", msg_type, MSG_ID, content)


def reply(state: str = "ok", count: int = 1) -> Message:
    return Message("shell", "execute_reply", MSG_ID, {"status": state, "execution_count": count})


BUSY, IDLE = iopub("status", execution_state="busy"), iopub("status", execution_state="idle")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(
        execution, "time", SimpleNamespace(monotonic=fake.monotonic, time=fake.time)
    )
    return fake


def service(
    clock: Clock,
    batches: list[list[Message]],
    *,
    alive: bool = True,
    oom: list[bool] | None = None,
    **settings: Any,
) -> tuple[ExecutionService, ScriptedConnection, FakeKernels]:
    connection = ScriptedConnection(clock, batches, alive)
    session = Session(cast(KernelConnection, connection))
    kernels = FakeKernels(session, oom)
    svc = ExecutionService(Settings(**settings), cast(Store, FakeStore()), cast(Kernels, kernels))
    return svc, connection, kernels


def test_a_run_sends_the_code_and_returns_outputs_and_count(clock: Clock) -> None:
    batches = [[BUSY, iopub("stream", name="stdout", text="4\n")], [reply("ok", 7), IDLE]]
    svc, connection, kernels = service(clock, batches)
    result = svc.execute(record(), "print(2 + 2)")
    assert result.status == "ok"
    assert result.message is None
    assert result.execution_count == 7
    assert result.outputs == [StreamOutput(name="stdout", text="4\n")]
    assert connection.sent[0][:2] == ("shell", "execute_request")
    assert connection.sent[0][2]["code"] == "print(2 + 2)"
    assert kernels.calls == ["settle"]
    assert result.duration == pytest.approx(0.004)


def test_an_ignored_timeout_interrupts_then_restarts_after_the_grace(clock: Clock) -> None:
    svc, connection, kernels = service(clock, [[BUSY]], interrupt_grace=2.0)
    start = clock.now
    result = svc.execute(record(), "while True: pass", timeout=1.0)
    assert result.status == "timeout"
    assert result.message is not None
    assert "the kernel was restarted" in result.message
    assert kernels.calls == ["interrupt", "restart", "settle"]
    assert clock.now - start == pytest.approx(3.0, abs=0.01)
    assert max(connection.waits) <= 0.25
    assert min(connection.waits[1:-1]) > 0


def test_an_obeyed_timeout_returns_the_interrupted_outputs(clock: Clock) -> None:
    interrupted = iopub("error", ename="KeyboardInterrupt", evalue="", traceback=[])
    batches: list[list[Message]] = [[BUSY]] + [[]] * 4 + [[interrupted, reply("error"), IDLE]]
    svc, _, kernels = service(clock, batches)
    result = svc.execute(record(), "import time; time.sleep(9)", timeout=1.0)
    assert result.status == "timeout"
    assert result.message == "Execution timed out after 1 s and was interrupted"
    assert kernels.calls == ["interrupt", "settle"]
    assert [o.type for o in result.outputs] == ["error"]


def test_a_kernel_that_stops_answering_is_dead_and_restarted(clock: Clock) -> None:
    svc, connection, kernels = service(clock, [[BUSY]], alive=False)
    result = svc.execute(record(), "import os; os._exit(1)")
    assert result.status == "died"
    assert result.message == "The kernel died unexpectedly and was restarted"
    assert kernels.calls == ["restart", "settle"]
    assert connection.heartbeats == 3  # dead only after three misses in a row (1, 2, 4 s)


def test_a_live_kernel_that_misses_two_heartbeats_is_not_restarted(clock: Clock) -> None:
    svc, connection, kernels = service(clock, [[BUSY]] + [[]] * 4 + [[reply(), IDLE]])
    connection.misses = 2  # a busy host delays the echo twice; the third one answers
    result = svc.execute(record(), "x = 1")
    assert result.status == "ok"
    assert connection.heartbeats == 3
    assert kernels.calls == ["settle"]  # no restart: the variables are kept


def test_an_oom_kill_is_reported_with_the_memory_limit(clock: Clock) -> None:
    svc, _connection, kernels = service(clock, [[BUSY]], alive=False, oom=[False, True])
    result = svc.execute(record(), "x = bytearray(2**40)")
    assert result.status == "died"
    assert result.message == (
        "The kernel ran out of memory (memory_limit 1g = 1073741824 bytes) and was restarted"
    )
    assert kernels.calls == ["restart", "settle"]


def test_a_live_kernel_is_checked_each_quiet_second_until_it_finishes(clock: Clock) -> None:
    batches: list[list[Message]] = [[BUSY]] + [[]] * 12 + [[reply(), IDLE]]
    svc, connection, kernels = service(clock, batches)
    result = svc.execute(record(), "import time; time.sleep(3)")
    assert result.status == "ok"
    assert connection.heartbeats == 3  # 3 s of silence: one check a second
    assert kernels.calls == ["settle"]


def test_a_dropped_message_from_a_live_kernel_truncates_the_output(clock: Clock) -> None:
    dropped = Message("iopub", kernel.DROPPED, None, {})
    svc, connection, _ = service(clock, [[BUSY, dropped, reply()]])
    result = svc.execute(record(), "print('x' * 10**9)")
    assert result.status == "ok"
    assert result.truncated
    assert connection.heartbeats == 1


def test_a_sandbox_ending_under_the_run_is_an_api_error(clock: Clock) -> None:
    svc, _connection, kernels = service(clock, [[BUSY]])
    kernels.session.closing = True
    with pytest.raises(
        InternalServerError, match="sandbox cntr_test ended while the code ran"
    ) as caught:
        svc.execute(record(), "1")
    assert isinstance(caught.value, APIError)


@pytest.mark.parametrize(
    ("code", "timeout", "param"),
    [(b"1", None, "code"), ("1", 0, "timeout"), ("1", float("nan"), "timeout")],
)
def test_bad_parameters_are_refused_by_name(
    clock: Clock, code: object, timeout: object, param: str
) -> None:
    svc, connection, _ = service(clock, [])
    with pytest.raises(BadRequestError) as caught:
        svc.execute(record(), code, timeout=timeout)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert connection.sent == []


@pytest.mark.parametrize("status", ["initializing", "failed", "deleted"])
def test_only_a_ready_sandbox_runs_code(clock: Clock, status: str) -> None:
    svc, connection, _ = service(clock, [])
    with pytest.raises(ConflictError) as caught:
        svc.execute(record(status), "1")
    assert caught.value.param == "container_id"
    with pytest.raises(ConflictError):
        svc.restart(record(status))
    with pytest.raises(ConflictError):
        svc.interrupt(record(status))
    assert connection.sent == []


def test_a_death_that_ended_the_whole_sandbox_says_so(clock: Clock) -> None:
    """Under gVisor the host's OOM killer ends the sandbox, not one process: no restart."""
    svc, _connection, kernels = service(clock, [[BUSY]], alive=False, oom=[False, True])
    kernels.sandbox_survives = False
    result = svc.execute(record(), "x = bytearray(2**40)")
    assert result.status == "died"
    assert result.message == (
        "The kernel ran out of memory (memory_limit 1g = 1073741824 bytes) and the sandbox "
        "ended with it"
    )
