"""Outputs of one execution: in order, streams merged, bounded by a byte budget.

Every output comes from a kernel message sandbox code may have forged: a malformed one is
dropped with one note, and output over the budget ends with a note that it was truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jupyter_sandbox.core import kernel_messages
from jupyter_sandbox.types.execution import ExecutionOutput, StreamOutput

logger = logging.getLogger(__name__)

OutputCallback = Callable[[ExecutionOutput], None]


class Collector:
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
