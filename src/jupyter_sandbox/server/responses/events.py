"""Streaming for `/v1/responses`: numbered events, and the SSE response that runs the tool
loop in a worker thread and writes its events as they come.

    event: response.created
    data: {"type": "response.created", "sequence_number": 0, "response": {...}}

Event names and fields are the official ones (`openai.types.responses.*Event`); the SDK's
`stream=True` parses every one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from jupyter_sandbox.server.sse import KEEPALIVE_SECONDS, EventSend, WorkerEvents

__all__ = ["EventSink", "Events", "response_events"]

logger = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]


class Events:
    """Numbers events (0, 1, ...) and hands them, as JSON-ready dicts, to a sink."""

    def __init__(self, sink: EventSink | None) -> None:
        self.sink = sink
        self.next = 0

    @property
    def active(self) -> bool:
        """Whether anyone listens (a non-streamed response builds no events)."""
        return self.sink is not None

    def emit(self, type: str, **fields: Any) -> None:
        """Send one event; pydantic models among `fields` are dumped."""
        if self.sink is None:
            return
        data: dict[str, Any] = {"type": type, "sequence_number": self.next}
        for name, value in fields.items():
            data[name] = to_jsonable_python(value)
        self.next += 1
        self.sink(data)

    def forward(self, event: BaseModel) -> None:
        """Send an event built elsewhere (the code interpreter's), renumbered."""
        if self.sink is None:
            return
        data = event.model_dump(mode="json")
        data["sequence_number"] = self.next
        self.next += 1
        self.sink(data)


def response_events(
    work: Callable[[EventSink], None],
    *,
    limiter: anyio.CapacityLimiter | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> WorkerEvents:
    """Run `work(sink)` in a worker thread and stream each event it sends, named by its type."""

    def run(send_event: EventSend) -> None:
        work(lambda event: send_event((event["type"], event)))

    return WorkerEvents(run, limiter=limiter, keepalive=keepalive)
