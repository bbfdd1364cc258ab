"""The tool loop of one response: model -> tool calls -> sandbox -> model, until the model
answers with a message, calls one of the caller's functions, or the tool-call cap is hit.

`prepare` (in `prepare`) checks the request and builds the `Turns`; `Turns.run` then runs in
a worker thread and, when streaming, sends the official events in the official order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.code_interpreter.shell_commands import FAILED_EXIT_CODE
from jupyter_sandbox.server.errors import INTERNAL_MESSAGE, api_error_parts
from jupyter_sandbox.server.responses.convert import (
    chat_tool_choice,
    chat_tools,
    function_tool,
    shell_output_text,
)
from jupyter_sandbox.server.responses.events import Events, EventSink
from jupyter_sandbox.server.responses.tools import SandboxTools
from jupyter_sandbox.server.responses.upstream import ChatToolCall, ChatUpstream, UpstreamError
from jupyter_sandbox.types.code_interpreter import ContainerFileCitation
from jupyter_sandbox.types.response_params import (
    CodeInterpreterTool,
    FunctionTool,
    ResponseCreateParams,
    ShellTool,
)
from jupyter_sandbox.types.responses import (
    ContainerReference,
    FunctionCall,
    IncompleteDetails,
    InputItem,
    OutputMessage,
    OutputText,
    Response,
    ResponseError,
    ShellAction,
    ShellCall,
    ShellCallOutput,
    Usage,
)

__all__ = ["Turns"]

logger = logging.getLogger(__name__)
Message = dict[str, Any]


@dataclass
class Turns:
    """A prepared response: the conversation so far and what the loop needs."""

    params: ResponseCreateParams
    response: Response
    messages: list[Message]
    """The conversation (no instructions), which the stored response keeps."""
    input_items: list[InputItem]
    tools: SandboxTools
    upstream: ChatUpstream
    max_tool_calls: int
    citations: list[ContainerFileCitation] = field(default_factory=list)

    def run(self, sink: EventSink | None = None) -> Response:
        """Run the loop to its end; the response is completed, incomplete or (streaming
        only) failed.

        Raises:
            UpstreamError, UpstreamTimeoutError: the model failed (not streaming).
        """
        events = Events(sink)
        response = self.response
        events.emit("response.created", response=response)
        events.emit("response.in_progress", response=response)
        try:
            self._loop(events)
        except Exception as exc:
            if not events.active:
                raise
            # Streaming: the status line is sent, so the failure is the last event.
            if isinstance(exc, APIError):
                logger.warning("response %s failed: %s", response.id, exc)
            else:
                logger.exception("response %s failed", response.id)
            response.status = "failed"
            message = exc.message if isinstance(exc, UpstreamError) else INTERNAL_MESSAGE
            if isinstance(exc, APIError) and not isinstance(exc, UpstreamError):
                message = exc.message if api_error_parts(exc)[0] < 500 else INTERNAL_MESSAGE
            response.error = ResponseError(message=message)
            events.emit("response.failed", response=response)
            return response
        response.completed_at = time.time() if response.status == "completed" else None
        final = "response.completed" if response.status == "completed" else "response.incomplete"
        events.emit(final, response=response)
        return response

    # -- the loop ----------------------------------------------------------------------

    def _loop(self, events: Events) -> None:
        response, params = self.response, self.params
        usage = response.usage = Usage()
        tools = chat_tools(params.tools)
        calls_run = 0
        while True:
            body: dict[str, Any] = {
                "model": self.upstream.model_name(params.model),
                "messages": self._with_instructions(),
            }
            if tools and params.tool_choice != "none":
                body["tools"] = tools
                body["tool_choice"] = chat_tool_choice(params.tool_choice)
                body["parallel_tool_calls"] = params.parallel_tool_calls
            for name in ("temperature", "top_p"):
                if getattr(params, name) is not None:
                    body[name] = getattr(params, name)
            if params.max_output_tokens is not None:
                body["max_tokens"] = params.max_output_tokens
            completion = self.upstream.complete(body)
            if completion.usage is not None:
                usage.add(completion.usage.prompt_tokens, completion.usage.completion_tokens)
            choice = completion.choices[0]
            message, tool_calls = choice.message, list(choice.message.tool_calls or [])
            if message.content:
                self._message(events, message.content)
            if not tool_calls:
                self.messages.append({"role": "assistant", "content": message.content or ""})
                if choice.finish_reason == "length":
                    self._incomplete("max_output_tokens")
                else:
                    response.status = "completed"
                return
            if calls_run + len(tool_calls) > self.max_tool_calls:
                # The cap: the calls are not run, and the conversation keeps no unanswered call.
                if message.content:
                    self.messages.append({"role": "assistant", "content": message.content})
                self._incomplete("max_messages")
                return
            self.messages.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [call.model_dump() for call in tool_calls],
                }
            )
            waiting = False
            for call in tool_calls:
                calls_run += 1
                if function_tool(params.tools, call.function.name) is not None:
                    self._function_call(events, call)
                    waiting = True
                else:
                    answer = self._hosted_call(events, call)
                    self.messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": answer}
                    )
            if waiting:  # the caller runs its functions and continues the conversation
                response.status = "completed"
                return

    def _with_instructions(self) -> list[Message]:
        if self.params.instructions is None:
            return self.messages
        return [{"role": "system", "content": self.params.instructions}, *self.messages]

    def _incomplete(self, reason: Any) -> None:
        self.response.status = "incomplete"
        self.response.incomplete_details = IncompleteDetails(reason=reason)

    # -- output items ------------------------------------------------------------------

    def _message(self, events: Events, text: str) -> None:
        annotations = [_place(c, text) for c in self.citations]
        self.citations = []
        index = len(self.response.output)
        item = OutputMessage(content=[], status="in_progress")
        events.emit("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item.id, "output_index": index, "content_index": 0}
        events.emit("response.content_part.added", **where, part=OutputText(text=""))
        events.emit("response.output_text.delta", **where, delta=text, logprobs=[])
        for number, annotation in enumerate(annotations):
            events.emit(
                "response.output_text.annotation.added",
                **where,
                annotation_index=number,
                annotation=annotation,
            )
        part = OutputText(text=text, annotations=annotations)
        events.emit("response.output_text.done", **where, text=text, logprobs=[])
        events.emit("response.content_part.done", **where, part=part)
        item.content, item.status = [part], "completed"
        events.emit("response.output_item.done", output_index=index, item=item)
        self.response.output.append(item)

    def _function_call(self, events: Events, call: ChatToolCall) -> None:
        index = len(self.response.output)
        item = FunctionCall(
            call_id=call.id, name=call.function.name, arguments="", status="in_progress"
        )
        events.emit("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item.id, "output_index": index}
        arguments = call.function.arguments
        events.emit("response.function_call_arguments.delta", **where, delta=arguments)
        events.emit("response.function_call_arguments.done", **where, arguments=arguments)
        item.arguments, item.status = arguments, "completed"
        events.emit("response.output_item.done", output_index=index, item=item)
        self.response.output.append(item)

    def _hosted_call(self, events: Events, call: ChatToolCall) -> str:
        """Run a code_interpreter or shell call; return what the model reads back."""
        name = call.function.name
        tool = next(
            (t for t in self.params.tools if not isinstance(t, FunctionTool) and t.type == name),
            None,
        )
        if tool is None:
            return f"Error: there is no tool named {name!r}"
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            return f"Error: the arguments are not JSON ({exc}); try again"
        if isinstance(tool, CodeInterpreterTool):
            code = arguments.get("code") if isinstance(arguments, dict) else None
            if not isinstance(code, str):
                return 'Error: send {"code": "<python code>"}'
            return self._code(events, tool, code)
        commands = arguments.get("commands") if isinstance(arguments, dict) else None
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            return 'Error: send {"commands": ["<shell command>", ...]}'
        timeout = arguments.get("timeout_ms")
        return self._shell(events, tool, call.id, commands, timeout)

    def _code(self, events: Events, tool: CodeInterpreterTool, code: str) -> str:
        container_id = self.tools.container_for(tool)
        index = len(self.response.output)
        call, citations, answer = self.tools.run_code(
            code,
            container_id,
            on_event=events.forward if events.active else None,
            output_index=index,
            sequence_number=events.next,
        )
        self.response.output.append(call)
        self.citations.extend(citations)
        return answer

    def _shell(
        self, events: Events, tool: ShellTool, call_id: str, commands: list[str], timeout: Any
    ) -> str:
        container_id = self.tools.container_for(tool)
        index = len(self.response.output)
        action_fields: dict[str, Any] = {"commands": commands}
        if isinstance(timeout, int) and timeout > 0:
            action_fields["timeout_ms"] = timeout
        item = ShellCall(
            call_id=call_id,
            action=ShellAction.model_validate(action_fields),
            status="in_progress",
            environment=ContainerReference(container_id=container_id),
        )
        events.emit("response.output_item.added", output_index=index, item=item)
        for number, command in enumerate(commands):
            at = {"output_index": index, "command_index": number}
            events.emit("response.shell_call_command.added", **at, command="")
            events.emit("response.shell_call_command.delta", **at, delta=command)
            events.emit("response.shell_call_command.done", **at, command=command)
        item.status = "completed"
        events.emit("response.output_item.done", output_index=index, item=item)
        self.response.output.append(item)

        outputs = self.tools.run_shell(item.action, container_id)
        index += 1
        result = ShellCallOutput(call_id=call_id, output=[], status="in_progress")
        events.emit("response.output_item.added", output_index=index, item=result)
        for number, entry in enumerate(outputs):
            place: dict[str, Any] = {
                "item_id": result.id, "output_index": index, "command_index": number
            }  # fmt: skip
            delta = {"stdout": entry.stdout, "stderr": entry.stderr}
            events.emit("response.shell_call_output_content.delta", **place, delta=delta)
            events.emit("response.shell_call_output_content.done", **place, output=[entry])
        failed = any(getattr(o.outcome, "exit_code", 0) == FAILED_EXIT_CODE for o in outputs)
        result.output, result.status = outputs, "incomplete" if failed else "completed"
        events.emit("response.output_item.done", output_index=index, item=result)
        self.response.output.append(result)
        return shell_output_text(result)


def _place(citation: ContainerFileCitation, text: str) -> ContainerFileCitation:
    """The citation placed where the text names the file (else at its end)."""
    start = text.find(citation.filename)
    if start < 0:
        start = len(text)
        end = start
    else:
        end = start + len(citation.filename)
    return citation.model_copy(update={"start_index": start, "end_index": end})
