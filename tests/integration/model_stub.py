"""A stand-in model server for the `/v1/responses` tests: a real HTTP server on loopback that
speaks the chat completions protocol and plays a script of turns (a tool call, then a message
built from what the tool answered). Every answer is checked with the official SDK's
`ChatCompletion` model, so the protocol is the real one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion

from tests.integration.server_harness import free_port

Turn = Callable[[dict[str, Any]], dict[str, Any]]
"""The request body -> the assistant message (`content` and/or `tool_calls`)."""


def tool_call(name: str, **arguments: Any) -> Turn:
    """A turn that calls `name` with `arguments`."""

    def turn(request: dict[str, Any]) -> dict[str, Any]:
        call_id = f"call_{len(request['messages'])}"
        call = {"id": call_id, "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)}}  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    return turn


def say(text: str) -> Turn:
    """A final message; `{tool}` is replaced by the last tool answer the model read."""

    def turn(request: dict[str, Any]) -> dict[str, Any]:
        answers = [m["content"] for m in request["messages"] if m["role"] == "tool"]
        return {
            "role": "assistant",
            "content": text.replace("{tool}", answers[-1] if answers else ""),
        }

    return turn


@dataclass
class StandInModel:
    """The script and what the server received."""

    turns: list[Turn] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "normal"
    """normal | slow (answers after `delay` s) | trickle (a byte each 0.2 s for `delay` s) |
    huge (40 MiB) | garbage (HTML) | error (HTTP 500)."""
    delay: float = 30.0
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if self.mode == "slow":
                time.sleep(self.delay)  # blocks this stand-in only (its own thread)
            if self.mode == "trickle":  # a byte now and then, never the whole answer

                async def drip() -> AsyncIterator[bytes]:
                    for _ in range(int(self.delay * 5)):
                        yield b" "
                        await asyncio.sleep(0.2)

                return StreamingResponse(drip(), media_type="application/json")
            if self.mode == "huge":
                return PlainTextResponse("x" * (40 * 2**20), media_type="application/json")
            if self.mode == "garbage":
                return PlainTextResponse("<html>502 Bad Gateway</html>", status_code=200)
            if self.mode == "error":
                return JSONResponse({"error": {"message": "model exploded"}}, status_code=500)
            turn = self.turns.pop(0) if self.turns else say("(script ended)")
            message = turn(body)
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            reply = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }  # fmt: skip
            ChatCompletion.model_validate(reply)
            return JSONResponse(reply)

        return app


@contextmanager
def running(model: StandInModel) -> Iterator[StandInModel]:
    """The stand-in, listening on 127.0.0.1 in a thread of this process."""
    config = uvicorn.Config(model.app(), host="127.0.0.1", port=model.port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stand-in model server did not start")
        time.sleep(0.05)
    try:
        yield model
    finally:
        server.should_exit = True
        thread.join(10)
