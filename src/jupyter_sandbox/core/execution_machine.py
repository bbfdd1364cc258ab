"""One execution as a state machine: kernel messages and clock readings in, commands out.

No I/O and no clock here. The driver (`ExecutionService._run`) reads the kernel channel and the
time, feeds each as an event to `RunMachine.step`, and carries out the commands it returns
(interrupt, check the kernel's health, restart and finish). So every path of a run (outputs,
errors, a swallowed interrupt, a dropped message, a dead kernel, a timeout) is unit-tested with
scripted message sequences, without a kernel.

    shell   WAITING --execute_reply--> REPLIED          WAITING --dropped--> LOST --reply--> REPLIED
    iopub   busy <--status--> idle                      lost: a dropped message (sticky)
    clock   RUNNING --deadline: Interrupt--> INTERRUPTED --grace: restart, "timeout"--> done
    quiet   a second without messages: replied -> done; idle but no reply -> done (the interrupt
            was swallowed); otherwise CheckHealth (a dead kernel -> restart, "died")

The run is over when shell is not WAITING and iopub is idle or lost, or at a `Finish` command.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.kernel import Message
from jupyter_sandbox.core import kernel_messages
from jupyter_sandbox.core.execution_output import Collector
from jupyter_sandbox.types.execution import ExecutionStatus

logger = logging.getLogger(__name__)

QUIET_BEFORE_CHECK = 1.0
"""Seconds without a message before the run asks why (lost idle status, swallowed interrupt,
dead kernel)."""
POLL = 0.25
"""Longest single wait for messages, so the driver looks at the clock and `closing` often."""


class Shell(enum.Enum):
    """Where the execute_reply is."""

    WAITING = "waiting"
    REPLIED = "replied"
    LOST = "lost"
    """A shell message was dropped (over the size limit): the reply may never come."""


class Clock(enum.Enum):
    """Where the run is against its timeout."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Tick:
    """The driver looked at the clock (before each wait for messages)."""

    now: float


@dataclass(frozen=True)
class Received:
    """One message from the kernel channel (including the DROPPED and MALFORMED pseudo types)."""

    message: Message
    now: float


@dataclass(frozen=True)
class Quiet:
    """A wait for messages ended (whether or not any came)."""

    now: float


@dataclass(frozen=True)
class Health:
    """The answer to `CheckHealth`: why the kernel died, or None if it is alive."""

    died: str | None


Event = Tick | Received | Quiet | Health


@dataclass(frozen=True)
class Interrupt:
    """Send SIGINT to the kernel."""


@dataclass(frozen=True)
class CheckHealth:
    """Find out whether the kernel died (OOM counter, heartbeat); answer with `Health`."""


@dataclass(frozen=True)
class Finish:
    """The run is over with this status (after restarting the kernel if `restart`)."""

    status: ExecutionStatus
    message: str | None = None
    restart: bool = False


Command = Interrupt | CheckHealth | Finish


class RunMachine:
    """The state of one execution; `step` is its only transition."""

    def __init__(
        self,
        msg_id: str,
        collector: Collector,
        *,
        started: float,
        timeout: float | None,
        grace: float,
        max_message: int,
        name: str = "",
    ) -> None:
        self.msg_id = msg_id
        self.collector = collector
        self.timeout = timeout
        self.shell = Shell.WAITING
        self.reply: tuple[str, int | None] | None = None
        """(status, execution_count) of the execute_reply."""
        self.idle = False
        self.iopub_lost = False
        self.clock = Clock.RUNNING
        self.finished: Finish | None = None
        self._deadline = started + timeout if timeout is not None else float("inf")
        self._grace = grace
        self._interrupted_at = 0.0
        self._max_message = max_message
        self._name = name
        self._last_message = started
        self._dropped_on: str | None = None  # a DROPPED message waiting for its health check

    @property
    def done(self) -> bool:
        """Whether the run is over (`outcome()` tells how)."""
        if self.finished is not None:
            return True
        return self.shell is not Shell.WAITING and (self.idle or self.iopub_lost)

    def wait(self, now: float) -> float:
        """How long the driver may wait for messages before the next `Tick`."""
        if not self.timeout:
            return POLL
        due = self._deadline if self.clock is Clock.RUNNING else self._interrupted_at + self._grace
        return min(POLL, max(0.0, due - now))

    def outcome(self) -> Finish:
        """How the run ended, once `done`."""
        if self.finished is not None:
            return self.finished
        if self.clock is Clock.INTERRUPTED:
            return Finish(
                "timeout", f"Execution timed out after {self.timeout:g} s and was interrupted"
            )
        if self.reply is None:
            return Finish("error", "The kernel's reply was over the size limit and was dropped")
        return Finish("ok" if self.reply[0] == "ok" else "error")

    def step(self, event: Event) -> list[Command]:
        """Apply one event; return what the driver must do, in order."""
        if self.finished is not None:
            return []
        if isinstance(event, Tick):
            commands = self._tick(event.now)
        elif isinstance(event, Received):
            commands = self._received(event.message, event.now)
        elif isinstance(event, Quiet):
            commands = self._quiet(event.now)
        else:
            commands = self._health(event.died)
        for command in commands:
            if isinstance(command, Finish):
                self.finished = command
        return commands

    def _tick(self, now: float) -> list[Command]:
        commands: list[Command] = []
        if self.clock is Clock.RUNNING and now >= self._deadline:
            self.clock, self._interrupted_at = Clock.INTERRUPTED, now
            commands.append(Interrupt())
        if self.clock is Clock.INTERRUPTED and now >= self._interrupted_at + self._grace:
            commands.append(
                Finish(
                    "timeout",
                    f"Execution timed out after {self.timeout:g} s and ignored the interrupt; "
                    "the kernel was restarted (variables are lost, files are kept)",
                    restart=True,
                )
            )
        return commands

    def _received(self, msg: Message, now: float) -> list[Command]:
        self._last_message = now
        if msg.msg_type == kernel.DROPPED:
            self._dropped_on = msg.channel  # a dying kernel drops its connections too
            return [CheckHealth()]
        if msg.msg_type == kernel.MALFORMED:
            if not msg.content.get("quiet"):
                self.collector.malformed(str(msg.content.get("why", "unreadable")))
        elif msg.parent_id != self.msg_id:
            pass
        elif msg.channel == "shell" and msg.msg_type == "execute_reply":
            self._replied(msg.content)
        elif msg.msg_type == "status":
            self.idle = kernel_messages.execution_state(msg.content) == "idle"
        else:
            self.collector.add(msg.msg_type, msg.content)
        return []

    def _replied(self, content: dict[str, Any]) -> None:
        try:
            self.reply = kernel_messages.reply_fields(content)
        except kernel_messages.MalformedMessage as exc:
            self.collector.malformed(str(exc))
            self.reply = ("error", None)
        self.shell = Shell.REPLIED

    def _quiet(self, now: float) -> list[Command]:
        if now - self._last_message < QUIET_BEFORE_CHECK:
            return []
        if self.shell is Shell.REPLIED:
            return [self.outcome()]  # replied, then a quiet iopub: its idle status was lost
        if self.idle and self.shell is Shell.WAITING:
            # ipykernel swallows a KeyboardInterrupt that lands in its own code (just before
            # or after the user's) and then sends the idle status but no reply.
            if self.clock is Clock.INTERRUPTED:
                return [Finish("timeout", f"Execution timed out after {self.timeout:g} s")]
            return [Finish("error", "KeyboardInterrupt: interrupted; the kernel sent no reply")]
        self._last_message = now
        return [CheckHealth()]

    def _health(self, died: str | None) -> list[Command]:
        channel, self._dropped_on = self._dropped_on, None
        if died is not None:
            return [Finish("died", died, restart=True)]
        if channel is not None:
            logger.warning(
                "%s: dropped a kernel message over %d bytes", self._name, self._max_message
            )
            self.collector.drop(f"the kernel sent a message over {self._max_message} bytes")
            if channel == "shell" and self.shell is Shell.WAITING:
                self.shell = Shell.LOST
            self.iopub_lost = self.iopub_lost or channel == "iopub"
        return []
