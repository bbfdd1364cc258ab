"""The code_interpreter tool for models that only know function tools: its JSON schema for
chat completions and the Responses API, and handlers that run a model's tool call and return
the message (chat) or input item (Responses) that answers it.

```python
tools = [ci.chat_tool()]                                  # chat.completions.create(tools=...)
for tool_call in message.tool_calls or []:
    messages.append(ci.handle_chat_tool_call(tool_call))  # {"role": "tool", ...}

tools = [ci.responses_tool()]                             # responses.create(tools=...)
for item in response.output:
    if item.type == "function_call":
        inputs.append(ci.handle_function_call(item))      # {"type": "function_call_output", ...}
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.types.code_interpreter import (
    ChatToolMessage,
    CodeInterpreterCall,
    CodeInterpreterContainer,
    ContainerFileCitation,
    FunctionCallOutput,
    InputImage,
    InputText,
)

__all__ = [
    "TOOL_DESCRIPTION",
    "TOOL_NAME",
    "chat_tool",
    "handle_chat_tool_call",
    "handle_function_call",
    "responses_tool",
    "tool_output_text",
]

INTERPRETER_TIMEOUT: Any = object()
"""The default `timeout`: the CodeInterpreter's own."""
TOOL_NAME = "code_interpreter"
TOOL_DESCRIPTION = (
    "Run Python code in a stateful Jupyter kernel (variables and imports persist between "
    "calls) with numpy, pandas and matplotlib. Printed output, the value of the last "
    "expression, tracebacks and plots (plt.show()) come back as the result. Files are in "
    "/mnt/data; save files for the user there. There is no internet access."
)
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "The Python code to run."}},
    "required": ["code"],
    "additionalProperties": False,
}


def chat_tool(name: str = TOOL_NAME, description: str = TOOL_DESCRIPTION) -> dict[str, Any]:
    """The tool for `chat.completions.create(tools=[...])`."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": PARAMETERS,
            "strict": True,
        },
    }


def responses_tool(name: str = TOOL_NAME, description: str = TOOL_DESCRIPTION) -> dict[str, Any]:
    """The tool for `responses.create(tools=[...])`."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": PARAMETERS,
        "strict": True,
    }


def tool_output_text(
    call: CodeInterpreterCall, citations: list[ContainerFileCitation], *, images_attached: bool
) -> str:
    """What the model reads back: the logs, a line per image, the files written."""
    lines = [call.logs.rstrip("\n") or "(no output)"]
    for number, _ in enumerate(call.images, start=1):
        shown = "attached" if images_attached else "shown to the user"
        lines.append(f"[image {number}: {shown}]")
    if call.status != "completed":
        lines.append(f"[status: {call.status}]")
    if citations:
        files = ", ".join(f"/mnt/data/{c.filename}" for c in citations)
        lines.append(f"[files written: {files}]")
    return "\n".join(lines)


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model or of its dict form."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _code(arguments: Any) -> tuple[str | None, str | None]:
    """(code, None) from a tool call's JSON arguments, or (None, why they are unusable)."""
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError as exc:
        return None, f'Invalid arguments: not JSON ({exc}); send {{"code": "..."}}'
    code = _get(parsed, "code") if isinstance(parsed, Mapping) else None
    if not isinstance(code, str):
        return None, 'Invalid arguments: send {"code": "<python code>"}'
    return code, None


class Interpreter(Protocol):
    """What the handlers use of a `CodeInterpreter` (which imports this module)."""

    def run(
        self, code: str, *, container: CodeInterpreterContainer = ..., timeout: float | None = ...
    ) -> CodeInterpreterCall: ...

    def citations(self, call: CodeInterpreterCall | str) -> list[ContainerFileCitation]: ...


def _run(
    interpreter: Interpreter,
    name: Any,
    arguments: Any,
    tool_name: str,
    container: CodeInterpreterContainer,
    timeout: float | None,
) -> tuple[CodeInterpreterCall | None, str | None]:
    if name != tool_name:
        raise BadRequestError(
            f"Not a {tool_name} tool call: the function is {name!r}", param="name"
        )
    code, problem = _code(arguments)
    if code is None:
        return None, problem
    return interpreter.run(code, container=container, timeout=timeout), None


def handle_chat_tool_call(
    interpreter: Interpreter,
    tool_call: Any,
    *,
    container: CodeInterpreterContainer = "auto",
    timeout: float | None = INTERPRETER_TIMEOUT,
    tool_name: str = TOOL_NAME,
) -> dict[str, Any]:
    """Run one entry of a chat completion's `message.tool_calls` (SDK model or dict) and
    return the `{"role": "tool", ...}` message answering it.

    Chat tool messages carry text only, so images are named there and stay in the call
    (`interpreter.calls[-1]`). Arguments the model got wrong are answered with an error
    message it can act on, and nothing runs.

    Raises:
        BadRequestError: the call is for another function (dispatch it elsewhere).
    """
    function = _get(tool_call, "function")
    call, problem = _run(
        interpreter,
        _get(function, "name"),
        _get(function, "arguments"),
        tool_name,
        container,
        timeout,
    )
    if call is None:
        content = problem or ""
    else:
        content = tool_output_text(call, interpreter.citations(call), images_attached=False)
    return ChatToolMessage(tool_call_id=_get(tool_call, "id"), content=content).model_dump()


def handle_function_call(
    interpreter: Interpreter,
    item: Any,
    *,
    container: CodeInterpreterContainer = "auto",
    timeout: float | None = INTERPRETER_TIMEOUT,
    tool_name: str = TOOL_NAME,
    include_images: bool = True,
) -> dict[str, Any]:
    """Run a Responses `function_call` output item (SDK model or dict) and return the
    `function_call_output` input item answering it; images are attached as `input_image`s.

    Raises:
        BadRequestError: the item is not a function call for this tool.
    """
    if _get(item, "type") != "function_call":
        raise BadRequestError("Not a function_call item", param="type")
    call, problem = _run(
        interpreter, _get(item, "name"), _get(item, "arguments"), tool_name, container, timeout
    )
    call_id = _get(item, "call_id")
    if call is None:
        return FunctionCallOutput(call_id=call_id, output=problem or "").model_dump()
    images = call.images if include_images else []
    text = tool_output_text(call, interpreter.citations(call), images_attached=bool(images))
    if not images:
        return FunctionCallOutput(call_id=call_id, output=text).model_dump()
    parts: list[InputText | InputImage] = [InputText(text=text)]
    parts.extend(InputImage(image_url=url) for url in images)
    return FunctionCallOutput(call_id=call_id, output=parts).model_dump()
