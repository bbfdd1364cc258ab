"""Everything checked before a response starts (so a bad request is a 4xx, never a failed
stream): the previous response's conversation, calls it left unanswered, the tools' explicit
containers; then the `Turns` the loop runs, with the response as it will be echoed."""

from __future__ import annotations

import time
from typing import Any

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.client import Client
from jupyter_sandbox.server.responses.convert import to_chat, to_stored
from jupyter_sandbox.server.responses.loop import Message, Turns
from jupyter_sandbox.server.responses.tools import SandboxTools
from jupyter_sandbox.server.responses.upstream import ChatUpstream
from jupyter_sandbox.types.response_params import (
    CodeInterpreterTool,
    FunctionTool,
    InputItemParam,
    MessageParam,
    ResponseCreateParams,
    ShellTool,
)
from jupyter_sandbox.types.responses import Response

__all__ = ["prepare"]


def _unanswered(messages: list[Message]) -> list[str]:
    """Tool call ids of the conversation's last assistant turn that have no answer yet."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if message.get("role") == "assistant":
            asked = [c["id"] for c in message.get("tool_calls") or []]
            answered = {m.get("tool_call_id") for m in messages[position + 1 :]}
            return [call_id for call_id in asked if call_id not in answered]
    return []


def prepare(
    params: ResponseCreateParams,
    *,
    client: Client,
    previous: tuple[list[Message], dict[str, str]] | None,
    upstream: ChatUpstream,
    max_tool_calls: int,
    max_live: int,
) -> Turns:
    """Check a request against the project's state and build its loop.

    Args:
        previous: the previous response's conversation and auto containers, if continued.

    Raises:
        BadRequestError: no input, or function calls of the previous response unanswered.
        NotFoundError: a tool's container is unknown.
    """
    items: list[InputItemParam] = (
        [MessageParam(role="user", content=params.input)]
        if isinstance(params.input, str)
        else list(params.input or [])
    )
    if not items and previous is None:
        raise BadRequestError("Invalid input: give input or previous_response_id", param="input")
    history, containers = previous if previous is not None else ([], {})
    new = to_chat(items)
    missing = _unanswered(history)
    # Answers to the previous turn's calls must come right after it, whatever their order
    # in the input (calls passed back in the input itself keep their place).
    answers = [m for m in new if m["role"] == "tool" and m.get("tool_call_id") in missing]
    new = answers + [m for m in new if not any(m is answer for answer in answers)]
    messages = [*history, *new]
    answered = {m.get("tool_call_id") for m in answers}
    left = [call_id for call_id in missing if call_id not in answered]
    if left:
        raise BadRequestError(
            f"Invalid input: no function_call_output for call {left[0]!r} of the previous response",
            param="input",
        )
    tools = SandboxTools(client, dict(containers), max_live=max_live)
    for index, tool in enumerate(params.tools):
        if isinstance(tool, CodeInterpreterTool | ShellTool):
            param = f"tools[{index}].container" if isinstance(tool, CodeInterpreterTool) else (
                f"tools[{index}].environment.container_id"
            )  # fmt: skip
            tools.check_explicit(tool, param)
    response = Response(
        created_at=time.time(),
        model=params.model,
        instructions=params.instructions,
        max_output_tokens=params.max_output_tokens,
        max_tool_calls=params.max_tool_calls,
        parallel_tool_calls=params.parallel_tool_calls,
        previous_response_id=params.previous_response_id,
        temperature=params.temperature,
        top_p=params.top_p,
        tool_choice=_echo_choice(params),
        tools=[_echo_tool(tool) for tool in params.tools],
        metadata=params.metadata or {},
        store=params.store,
        user=params.user,
    )
    return Turns(
        params=params,
        response=response,
        messages=messages,
        input_items=to_stored(items),
        tools=tools,
        upstream=upstream,
        max_tool_calls=min(params.max_tool_calls or max_tool_calls, max_tool_calls),
    )


def _echo_choice(params: ResponseCreateParams) -> str | dict[str, Any]:
    choice = params.tool_choice
    return choice if isinstance(choice, str) else choice.model_dump()


def _echo_tool(tool: CodeInterpreterTool | ShellTool | FunctionTool) -> dict[str, Any]:
    """A tool as the response shows it: a `{"container_id"}` container is the id."""
    if isinstance(tool, CodeInterpreterTool):
        container = tool.container
        if isinstance(container, str):
            shown: Any = container
        elif hasattr(container, "container_id"):
            shown = container.container_id
        else:
            shown = container.model_dump(mode="json", exclude_none=True)
        return {"type": "code_interpreter", "container": shown}
    return tool.model_dump(mode="json", exclude_none=True)
