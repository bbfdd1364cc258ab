"""Server-sent events for a running execution: each output as it arrives, then the result.

    event: output
    data: {"type": "stream", "name": "stdout", "text": "1\\n"}

    event: done
    data: {"object": "container.execution", "status": "ok", ...}

An `error` event carries OpenAI's error body instead of `done`. A comment line is sent after
15 s of silence so proxies keep the connection open. The execution runs in a worker thread;
its output callback hands each output to the event loop through a memory stream. A client
that leaves does not stop the run (its timeout does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.core.execution import OutputCallback
from jupyter_sandbox.server.errors import INTERNAL_MESSAGE, api_error_parts, error_body
from jupyter_sandbox.types.execution import Execution, ExecutionOutput

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
Event = tuple[str, dict[str, Any]]


def encode(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame (JSON has no raw newlines, so one `data:` line is enough)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


EventSend = Callable[[Event], None]


class WorkerEvents(Response):
    """A response that runs `work(send)` in a worker thread and streams each event it sends
    (one implementation for every streamed route; a client that leaves does not stop it)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        work: Callable[[EventSend], None],
        *,
        limiter: anyio.CapacityLimiter | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        # As StreamingResponse: no body, so no Content-Length.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._work = work
        self._limiter = limiter
        self._keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[Event](math.inf)

        def send_event(event: Event) -> None:
            # Nobody listening any more is fine: the work goes on to its end.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                anyio.from_thread.run_sync(sender.send_nowait, event)

        async def work() -> None:
            async with sender:
                try:
                    await anyio.to_thread.run_sync(
                        partial(self._work, send_event), limiter=self._limiter
                    )
                except Exception:
                    logger.exception(
                        "request %s: streamed work failed",
                        scope.get("state", {}).get("request_id"),
                    )

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with anyio.create_task_group() as group:
            group.start_soon(work)
            async with receiver:
                while True:
                    item: Event | None = None
                    try:
                        with anyio.move_on_after(self._keepalive):
                            item = await receiver.receive()
                    except anyio.EndOfStream:
                        break
                    chunk = b": keep-alive\n\n" if item is None else encode(*item)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def execution_events(
    execute: Callable[[OutputCallback], Execution],
    *,
    limiter: anyio.CapacityLimiter | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> WorkerEvents:
    """Stream `execute(on_output)`: an `output` event per output, then `done` or `error`."""

    def work(send_event: EventSend) -> None:
        def on_output(output: ExecutionOutput) -> None:
            send_event(("output", output.model_dump(mode="json")))

        try:
            execution = execute(on_output)
            event: Event = ("done", execution.model_dump(mode="json"))
        except APIError as exc:
            event = ("error", api_error_parts(exc)[1])
        except Exception:
            logger.exception("streamed execution failed")
            event = ("error", error_body(INTERNAL_MESSAGE, type="server_error"))
        send_event(event)

    return WorkerEvents(work, limiter=limiter, keepalive=keepalive)
