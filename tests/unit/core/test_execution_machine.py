"""The execute loop's state machine, driven by scripted kernel messages: no kernel, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.kernel import Message
from jupyter_sandbox.core.execution_machine import (
    POLL,
    QUIET_BEFORE_CHECK,
    CheckHealth,
    Clock,
    Command,
    Finish,
    Health,
    Interrupt,
    Quiet,
    Received,
    RunMachine,
    Shell,
    Tick,
)
from jupyter_sandbox.core.execution_output import Collector
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    ExecutionOutput,
    StreamOutput,
)

MSG_ID = "request-1"
MAX_MESSAGE = 3 * 2**20


def machine(timeout: float | None = None, grace: float = 3.0, limit: int = 2**20) -> RunMachine:
    return RunMachine(
        MSG_ID,
        Collector(limit, None),
        started=0.0,
        timeout=timeout,
        grace=grace,
        max_message=MAX_MESSAGE,
        name="sandbox-under-test",
    )


def iopub(msg_type: str, parent: str | None = MSG_ID, **content: Any) -> Message:
    return Message("iopub", msg_type, parent, content)


def status(state: str) -> Message:
    return iopub("status", execution_state=state)


def stream(text: str, name: str = "stdout") -> Message:
    return iopub("stream", name=name, text=text)


def reply(state: str = "ok", count: object = 1) -> Message:
    return Message("shell", "execute_reply", MSG_ID, {"status": state, "execution_count": count})


def dropped(channel: str) -> Message:
    return Message(channel, kernel.DROPPED, None, {})


def feed(run: RunMachine, messages: list[Message], now: float = 0.1) -> list[Command]:
    """Every message at time `now`; the commands they gave, in order."""
    commands: list[Command] = []
    for msg in messages:
        commands += run.step(Received(msg, now))
    return commands


def ok_run(*outputs: Message) -> RunMachine:
    run = machine()
    assert feed(run, [status("busy"), *outputs, reply(), status("idle")]) == []
    return run


def test_outputs_in_order_and_a_reply_then_idle_end_the_run() -> None:
    run = ok_run(
        stream("a"),
        iopub("display_data", data={"text/plain": "plot"}, metadata={}),
        stream("b"),
        stream("c"),
        iopub("execute_result", data={"text/plain": "3"}, metadata={}, execution_count=1),
    )
    assert run.done
    assert run.outcome() == Finish("ok")
    kinds: list[type[ExecutionOutput]] = [type(output) for output in run.collector.outputs]
    assert kinds == [StreamOutput, DisplayDataOutput, StreamOutput, ExecuteResultOutput]
    middle = run.collector.outputs[2]
    assert isinstance(middle, StreamOutput)
    assert middle.text == "bc"
    assert run.reply == ("ok", 1)


def test_a_stream_changes_name_so_it_is_not_merged() -> None:
    run = ok_run(stream("out"), stream("err", name="stderr"), stream("out2"))
    texts = [output.text for output in run.collector.outputs if isinstance(output, StreamOutput)]
    assert texts == ["out", "err", "out2"]


@pytest.mark.parametrize("order", ["reply first", "idle first"])
def test_the_run_needs_both_the_reply_and_the_idle_status(order: str) -> None:
    run = machine()
    first, second = (
        (reply(), status("idle")) if order == "reply first" else (status("idle"), reply())
    )
    feed(run, [status("busy"), first])
    assert not run.done
    feed(run, [second])
    assert run.done
    assert run.outcome() == Finish("ok")


def test_a_busy_status_after_idle_means_not_idle() -> None:
    run = machine()
    feed(run, [status("idle"), status("busy"), reply()])
    assert not run.done
    feed(run, [status("idle")])
    assert run.done


def test_an_error_reply_is_an_error_with_its_traceback() -> None:
    error = iopub("error", ename="ZeroDivisionError", evalue="division by zero", traceback=["tb"])
    run = machine()
    feed(run, [status("busy"), error, reply("error", 2), status("idle")])
    assert run.outcome() == Finish("error")
    (output,) = run.collector.outputs
    assert isinstance(output, ErrorOutput)
    assert output.ename == "ZeroDivisionError"
    assert run.reply == ("error", 2)


def test_messages_of_another_request_are_ignored() -> None:
    run = machine()
    other = "request-0"
    feed(
        run,
        [
            iopub("stream", other, name="stdout", text="old"),
            iopub("status", other, execution_state="idle"),
            Message("shell", "execute_reply", other, {"status": "ok", "execution_count": 9}),
            Message("shell", "execute_reply", None, {"status": "ok", "execution_count": 9}),
        ],
    )
    assert not run.done
    assert run.collector.outputs == []
    assert run.reply is None


def test_an_execute_reply_on_iopub_is_no_reply() -> None:
    run = machine()
    feed(run, [iopub("execute_reply", status="ok", execution_count=1), status("idle")])
    assert run.shell is Shell.WAITING
    assert not run.done


def test_clear_output_clears_what_came_before() -> None:
    run = ok_run(stream("gone"), iopub("clear_output", wait=False), stream("kept"))
    assert [o.text for o in run.collector.outputs if isinstance(o, StreamOutput)] == ["kept"]


def test_output_over_the_cap_is_truncated_with_one_note() -> None:
    run = machine(limit=1024)
    feed(run, [stream("x" * 1000), stream("y" * 100), stream("z" * 100), reply(), status("idle")])
    assert run.outcome() == Finish("ok")
    assert run.collector.truncated
    stdout, note = run.collector.outputs
    assert isinstance(stdout, StreamOutput)
    assert stdout.text == "x" * 1000
    assert isinstance(note, StreamOutput)
    assert note.name == "stderr"
    assert note.text == "\n[output truncated at 1024 bytes]\n"


def test_output_callback_sees_each_output_as_it_comes() -> None:
    seen: list[ExecutionOutput] = []
    run = RunMachine(
        MSG_ID, Collector(2**20, seen.append), started=0, timeout=None, grace=1, max_message=1
    )
    feed(run, [stream("a"), stream("b"), reply(), status("idle")])
    assert [o.text for o in seen if isinstance(o, StreamOutput)] == ["a", "b"]


def test_malformed_messages_are_dropped_with_one_note() -> None:
    run = machine()
    feed(
        run,
        [
            Message("iopub", kernel.MALFORMED, None, {"why": "no msg_type"}),
            Message("iopub", kernel.MALFORMED, None, {"why": "again"}),
            iopub("stream", name="stdin", text="forged"),
            stream("real"),
            reply(),
            status("idle"),
        ],
    )
    assert run.outcome() == Finish("ok")
    assert run.collector.malformed_count == 3
    note, real = run.collector.outputs
    assert isinstance(note, StreamOutput)
    assert "no msg_type" in note.text
    assert isinstance(real, StreamOutput)
    assert real.text == "real"


def test_a_badly_signed_message_is_dropped_silently() -> None:
    run = ok_run(Message("iopub", kernel.MALFORMED, None, {"why": "signature", "quiet": True}))
    assert run.collector.outputs == []
    assert run.collector.malformed_count == 0


def test_a_malformed_reply_ends_the_run_as_an_error() -> None:
    run = machine()
    feed(run, [Message("shell", "execute_reply", MSG_ID, {"status": 7}), status("idle")])
    assert run.done
    assert run.outcome() == Finish("error")
    assert run.reply == ("error", None)
    assert run.collector.malformed_count == 1


# The clock: deadline, interrupt, grace.


def test_no_timeout_never_interrupts() -> None:
    run = machine()
    assert run.step(Tick(10_000.0)) == []
    assert run.wait(10_000.0) == POLL


def test_the_deadline_interrupts_once() -> None:
    run = machine(timeout=2.0)
    assert run.step(Tick(1.99)) == []
    assert run.step(Tick(2.0)) == [Interrupt()]
    assert run.clock is Clock.INTERRUPTED
    assert run.step(Tick(2.5)) == []


def test_an_interrupt_obeyed_ends_as_a_timeout() -> None:
    run = machine(timeout=2.0)
    run.step(Tick(2.0))
    error = iopub("error", ename="KeyboardInterrupt", evalue="", traceback=[])
    feed(run, [error, reply("error", 1), status("idle")], now=2.1)
    assert run.done
    assert run.outcome() == Finish("timeout", "Execution timed out after 2 s and was interrupted")


def test_an_interrupt_ignored_past_the_grace_restarts_the_kernel() -> None:
    run = machine(timeout=2.0, grace=3.0)
    run.step(Tick(2.0))
    assert run.step(Tick(4.99)) == []
    (finish,) = run.step(Tick(5.0))
    assert finish == Finish(
        "timeout",
        "Execution timed out after 2 s and ignored the interrupt; the kernel was restarted "
        "(variables are lost, files are kept)",
        restart=True,
    )
    assert run.done
    assert run.outcome() is finish


def test_a_late_tick_interrupts_and_restarts_at_once() -> None:
    run = machine(timeout=1.0, grace=0.5)
    commands = run.step(Tick(1.0))
    assert commands == [Interrupt()]
    run2 = machine(timeout=1.0, grace=0.0)
    interrupt, finish = run2.step(Tick(1.0))
    assert interrupt == Interrupt()
    assert isinstance(finish, Finish)
    assert finish.restart


def test_wait_never_passes_the_next_clock_event() -> None:
    run = machine(timeout=2.0, grace=3.0)
    assert run.wait(0.0) == POLL
    assert run.wait(1.9) == pytest.approx(0.1)
    assert run.wait(2.5) == 0.0
    run.step(Tick(2.0))
    assert run.wait(2.0) == POLL  # the grace runs: no busy polling while it does
    assert run.wait(4.9) == pytest.approx(0.1)
    assert run.wait(6.0) == 0.0


# Quiet seconds: a lost idle status, a swallowed interrupt, a dead kernel.


def test_quiet_for_less_than_a_second_does_nothing() -> None:
    run = machine()
    feed(run, [status("busy")], now=5.0)
    assert run.step(Quiet(5.0 + QUIET_BEFORE_CHECK - 0.01)) == []


def test_a_reply_then_silence_ends_the_run_as_replied() -> None:
    run = machine()
    feed(run, [stream("x"), reply()], now=1.0)
    assert not run.done  # the idle status was lost (iopub queue full)
    assert run.step(Quiet(2.0)) == [Finish("ok")]
    assert run.done


def test_a_reply_after_a_timeout_then_silence_is_a_timeout() -> None:
    run = machine(timeout=1.0)
    run.step(Tick(1.0))
    feed(run, [reply("error")], now=1.1)
    (finish,) = run.step(Quiet(2.1))
    assert finish == Finish("timeout", "Execution timed out after 1 s and was interrupted")


def test_idle_without_a_reply_is_a_swallowed_interrupt() -> None:
    run = machine()
    feed(run, [status("busy"), status("idle")], now=1.0)
    assert run.step(Quiet(1.5)) == []
    assert run.step(Quiet(2.0)) == [
        Finish("error", "KeyboardInterrupt: interrupted; the kernel sent no reply")
    ]


def test_a_swallowed_interrupt_after_a_timeout_is_a_timeout() -> None:
    run = machine(timeout=3.0)
    run.step(Tick(3.0))
    feed(run, [status("idle")], now=3.2)
    assert run.step(Quiet(4.2)) == [Finish("timeout", "Execution timed out after 3 s")]


def test_silence_without_idle_checks_the_kernel_and_continues_if_alive() -> None:
    run = machine()
    feed(run, [status("busy")], now=1.0)
    assert run.step(Quiet(2.0)) == [CheckHealth()]
    assert run.step(Health(None)) == []
    assert not run.done
    assert run.step(Quiet(2.5)) == []  # the next check is a second after this one
    assert run.step(Quiet(3.0)) == [CheckHealth()]


def test_silence_and_a_dead_kernel_restart_it() -> None:
    run = machine()
    run.step(Quiet(1.0))
    died = "The kernel died unexpectedly and was restarted"
    assert run.step(Health(died)) == [Finish("died", died, restart=True)]
    assert run.done
    assert run.outcome() == Finish("died", died, restart=True)


def test_an_oom_report_is_the_outcome_as_given() -> None:
    run = machine()
    oom = "The kernel ran out of memory (memory_limit 1g = 1073741824 bytes) and was restarted"
    run.step(Quiet(1.0))
    run.step(Health(oom))
    assert run.outcome() == Finish("died", oom, restart=True)


# Dropped messages (over the size limit, or a dying kernel).


def test_a_dropped_iopub_message_from_a_live_kernel_truncates_and_loses_iopub() -> None:
    run = machine()
    assert feed(run, [stream("before"), dropped("iopub")]) == [CheckHealth()]
    assert run.step(Health(None)) == []
    assert run.iopub_lost
    assert run.collector.truncated
    assert not run.done
    feed(run, [reply()])
    assert run.done  # no idle status needed: iopub is lost
    assert run.outcome() == Finish("ok")
    note = run.collector.outputs[-1]
    assert isinstance(note, StreamOutput)
    assert note.text == f"\n[output dropped: the kernel sent a message over {MAX_MESSAGE} bytes]\n"


def test_a_dropped_shell_message_means_the_reply_is_lost() -> None:
    run = machine()
    feed(run, [dropped("shell")])
    run.step(Health(None))
    assert run.shell is Shell.LOST
    assert not run.done
    feed(run, [status("idle")])
    assert run.done
    assert run.outcome() == Finish(
        "error", "The kernel's reply was over the size limit and was dropped"
    )


def test_a_reply_after_a_lost_shell_message_counts() -> None:
    run = machine()
    feed(run, [dropped("shell")])
    run.step(Health(None))
    feed(run, [reply("ok", 4), status("idle")])
    assert run.outcome() == Finish("ok")
    assert run.reply == ("ok", 4)


def test_lost_shell_and_quiet_iopub_still_check_the_kernel() -> None:
    run = machine()
    feed(run, [dropped("shell")], now=1.0)
    run.step(Health(None))
    feed(run, [status("idle")], now=1.0)
    assert run.done
    assert run.step(Quiet(2.0)) == [CheckHealth()]  # as the loop always did


def test_a_drop_from_a_dying_kernel_is_a_death() -> None:
    run = machine()
    feed(run, [dropped("iopub")])
    died = "The kernel died unexpectedly and was restarted"
    assert run.step(Health(died)) == [Finish("died", died, restart=True)]
    assert not run.collector.truncated


def test_a_finished_run_ignores_every_later_event() -> None:
    run = machine()
    run.step(Quiet(1.0))
    run.step(Health("dead"))
    assert run.step(Received(reply(), 1.1)) == []
    assert run.step(Tick(100.0)) == []
    assert run.step(Quiet(100.0)) == []
    assert run.outcome() == Finish("died", "dead", restart=True)
