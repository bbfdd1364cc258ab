"""Responses shapes <-> chat completions shapes: input items to chat messages (and to the
items `input_items` lists), tools to function tools, `tool_choice` to its chat form.

The hosted tools become functions the upstream model can call: `code_interpreter`
(`{"code"}`) and `shell` (`{"commands": [...]}`).
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_sandbox.code_interpreter.adapters import TOOL_DESCRIPTION, chat_tool
from jupyter_sandbox.types.code_interpreter import CodeInterpreterCall
from jupyter_sandbox.types.response_params import (
    CodeInterpreterTool,
    ContentPart,
    FunctionCallOutputParam,
    FunctionCallParam,
    FunctionTool,
    InputImagePart,
    InputItemParam,
    InputTextPart,
    MessageParam,
    OutputTextPart,
    ShellCallOutputParam,
    ShellCallParam,
    ShellTool,
    Tool,
    ToolChoice,
    ToolChoiceFunction,
    ToolChoiceHosted,
)
from jupyter_sandbox.types.responses import (
    FunctionCall,
    FunctionCallOutput,
    InputImage,
    InputItem,
    InputMessage,
    InputText,
    OutputMessage,
    OutputText,
    ShellCall,
    ShellCallOutput,
)

__all__ = ["chat_tool_choice", "chat_tools", "shell_output_text", "to_chat", "to_stored"]

Message = dict[str, Any]

SHELL_DESCRIPTION = (
    "Run shell commands (sh) in the same sandbox as the code interpreter, one after the other. "
    "Each command's stdout, stderr and exit code come back. Files are in /mnt/data."
)
SHELL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "commands": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Shell commands, run in order.",
        },
        "timeout_ms": {"type": "integer", "description": "Per-command timeout in ms."},
    },
    "required": ["commands"],
}


def chat_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """The tools as chat completions function tools."""
    converted: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, CodeInterpreterTool):
            converted.append(chat_tool("code_interpreter", TOOL_DESCRIPTION))
        elif isinstance(tool, ShellTool):
            converted.append(
                {
                    "type": "function",
                    "function": {
                        "name": "shell",
                        "description": SHELL_DESCRIPTION,
                        "parameters": SHELL_PARAMETERS,
                    },
                }
            )
        else:
            function: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                function["description"] = tool.description
            function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
            if tool.strict is not None:
                function["strict"] = tool.strict
            converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    """`tool_choice` as chat completions spells it."""
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, ToolChoiceHosted):
        return {"type": "function", "function": {"name": choice.type}}
    return choice


def _part_text(part: ContentPart) -> str:
    if isinstance(part, InputTextPart | OutputTextPart):
        return part.text
    if isinstance(part, InputImagePart):
        return ""
    return part.refusal


def _message(item: MessageParam) -> Message:
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    if role != "user" or not any(isinstance(p, InputImagePart) for p in item.content):
        return {"role": role, "content": "".join(_part_text(p) for p in item.content)}
    parts: list[dict[str, Any]] = []
    for part in item.content:
        if isinstance(part, InputImagePart):
            detail = "auto" if part.detail == "original" else part.detail
            parts.append(
                {"type": "image_url", "image_url": {"url": part.image_url, "detail": detail}}
            )
        else:
            parts.append({"type": "text", "text": _part_text(part)})
    return {"role": role, "content": parts}


def _call(call_id: str, name: str, arguments: str) -> Message:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


def shell_output_text(output: ShellCallOutput | ShellCallOutputParam) -> str:
    """What the model reads back from a shell call."""
    blocks = []
    for entry in output.output:
        outcome = entry.outcome
        ending = "timed out" if outcome.type == "timeout" else f"exit code {outcome.exit_code}"
        blocks.append(f"stdout:\n{entry.stdout}\nstderr:\n{entry.stderr}\n[{ending}]")
    return "\n\n".join(blocks) or "(no commands)"


def to_chat(items: list[InputItemParam]) -> list[Message]:
    """Input items as chat messages (a call passed back becomes an assistant tool call)."""
    messages: list[Message] = []
    for item in items:
        if isinstance(item, MessageParam):
            messages.append(_message(item))
        elif isinstance(item, FunctionCallParam):
            messages.append(_call(item.call_id, item.name, item.arguments))
        elif isinstance(item, FunctionCallOutputParam):
            text = item.output if isinstance(item.output, str) else "".join(
                p.text for p in item.output if isinstance(p, InputTextPart)
            )  # fmt: skip
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
        elif isinstance(item, CodeInterpreterCall):
            messages.append(_call(item.id, "code_interpreter", json.dumps({"code": item.code})))
            logs = item.logs.rstrip("\n") or "(no output)"
            messages.append({"role": "tool", "tool_call_id": item.id, "content": logs})
        elif isinstance(item, ShellCallParam):
            arguments = json.dumps({"commands": item.action.commands})
            messages.append(_call(item.call_id, "shell", arguments))
        else:
            messages.append(
                {"role": "tool", "tool_call_id": item.call_id, "content": shell_output_text(item)}
            )
    return messages


def _content(parts: list[ContentPart]) -> list[InputText | InputImage]:
    converted: list[InputText | InputImage] = []
    for part in parts:
        if isinstance(part, InputImagePart):
            converted.append(InputImage(image_url=part.image_url, detail=part.detail))
        else:
            converted.append(InputText(text=_part_text(part)))
    return converted


def to_stored(items: list[InputItemParam]) -> list[InputItem]:
    """Input items as `input_items` lists them (each with an id)."""
    stored: list[InputItem] = []
    for item in items:
        if isinstance(item, MessageParam):
            if item.role == "assistant":
                text = item.content if isinstance(item.content, str) else "".join(
                    _part_text(p) for p in item.content
                )  # fmt: skip
                stored.append(OutputMessage(content=[OutputText(text=text)]))
            else:
                parts = item.content
                content: list[InputText | InputImage] = (
                    [InputText(text=parts)] if isinstance(parts, str) else _content(parts)
                )
                stored.append(InputMessage(role=item.role, content=content))
        elif isinstance(item, FunctionCallParam):
            stored.append(
                FunctionCall(call_id=item.call_id, name=item.name, arguments=item.arguments)
            )
        elif isinstance(item, FunctionCallOutputParam):
            output = item.output if isinstance(item.output, str) else _content(list(item.output))
            stored.append(FunctionCallOutput(call_id=item.call_id, output=output))
        elif isinstance(item, CodeInterpreterCall):
            stored.append(item)
        elif isinstance(item, ShellCallParam):
            stored.append(ShellCall(call_id=item.call_id, action=item.action))
        else:
            stored.append(ShellCallOutput(call_id=item.call_id, output=item.output))
    return stored


def function_tool(tools: list[Tool], name: str) -> FunctionTool | None:
    """The caller's function tool of that name, if any."""
    for tool in tools:
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool
    return None
