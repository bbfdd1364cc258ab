"""Streaming for `/v1/responses`: numbered events, and the SSE response that runs the tool
loop in a worker thread and writes its events as they come.

    event: response.created
    data: {"type": "response.created", "sequence_number": 0, "response": {...}}

Event names and fields are the official ones (`openai.types.responses.*Event`); the SDK's
`stream=True` parses every one of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jupyter_sandbox.server.sse import KEEPALIVE_SECONDS, encode

__all__ = ["EventSink", "Events", "ResponseEventStream"]

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


class ResponseEventStream(Response):
    """Runs `work(sink)` in a worker thread and streams each event it sends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        work: Callable[[EventSink], None],
        *,
        limiter: anyio.CapacityLimiter | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._work = work
        self._limiter = limiter
        self._keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

        def sink(event: dict[str, Any]) -> None:
            # A client that left: the loop still runs to its end (and is stored).
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                anyio.from_thread.run_sync(sender.send_nowait, event)

        async def work() -> None:
            async with sender:
                try:
                    await anyio.to_thread.run_sync(partial(self._work, sink), limiter=self._limiter)
                except Exception:
                    logger.exception("streamed response failed")

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with anyio.create_task_group() as group:
            group.start_soon(work)
            async with receiver:
                while True:
                    item: dict[str, Any] | None = None
                    try:
                        with anyio.move_on_after(self._keepalive):
                            item = await receiver.receive()
                    except anyio.EndOfStream:
                        break
                    chunk = b": keep-alive\n\n" if item is None else encode(item["type"], item)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
