"""The Responses API's objects as `serve` returns them: the response, its output items
(messages, `code_interpreter_call`, `shell_call` / `shell_call_output`, `function_call`),
usage, and the input-item list.

Field names and enums are the official `openai.types.responses` ones (the tests validate every
object we send with those models); only the subset that tool use needs is here.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag

from jupyter_sandbox.types.code_interpreter import CodeInterpreterCall, ContainerFileCitation

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["completed", "failed", "in_progress", "incomplete"]


def new_id(prefix: str) -> str:
    """`prefix_` + 48 hex, like the hosted API's ids."""
    return f"{prefix}_{secrets.token_hex(24)}"


class OutputText(BaseModel):
    """Text the model wrote, with citations of the files the code wrote."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[ContainerFileCitation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    """An assistant message in `output`."""

    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: new_id("msg"))
    status: ItemStatus = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class InputText(BaseModel):
    """Text in an input message."""

    type: Literal["input_text"] = "input_text"
    text: str


class InputImage(BaseModel):
    """An image in an input message."""

    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"


class InputMessage(BaseModel):
    """A user, system or developer message, as `input_items` lists it."""

    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: new_id("msg"))
    status: ItemStatus = "completed"
    role: Literal["user", "system", "developer"]
    content: list[Annotated[InputText | InputImage, Field(discriminator="type")]]


class FunctionCall(BaseModel):
    """A call of one of the caller's function tools: run it and send a
    `function_call_output` with `previous_response_id`."""

    type: Literal["function_call"] = "function_call"
    id: str = Field(default_factory=lambda: new_id("fc"))
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"


class FunctionCallOutput(BaseModel):
    """The caller's answer to a `function_call`, as `input_items` lists it."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str = Field(default_factory=lambda: new_id("fco"))
    call_id: str
    output: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]
    status: ItemStatus = "completed"


class ShellAction(BaseModel):
    """The commands of a `shell_call` and their limits."""

    commands: list[str]
    timeout_ms: int | None = None
    max_output_length: int | None = None


class ContainerReference(BaseModel):
    """Where a shell call ran: one of this project's containers."""

    type: Literal["container_reference"] = "container_reference"
    container_id: str


class ShellCall(BaseModel):
    """The model asked to run shell commands in a container."""

    type: Literal["shell_call"] = "shell_call"
    id: str = Field(default_factory=lambda: new_id("sh"))
    call_id: str
    action: ShellAction
    status: ItemStatus = "completed"
    environment: ContainerReference | None = None


class ShellOutcomeExit(BaseModel):
    """The command ran to its end with this exit code."""

    type: Literal["exit"] = "exit"
    exit_code: int


class ShellOutcomeTimeout(BaseModel):
    """The command was stopped at its timeout."""

    type: Literal["timeout"] = "timeout"


class ShellCommandOutput(BaseModel):
    """What one command printed and how it ended."""

    stdout: str
    stderr: str
    outcome: Annotated[ShellOutcomeExit | ShellOutcomeTimeout, Field(discriminator="type")]


class ShellCallOutput(BaseModel):
    """The result of a `shell_call`: one entry per command."""

    type: Literal["shell_call_output"] = "shell_call_output"
    id: str = Field(default_factory=lambda: new_id("sho"))
    call_id: str
    output: list[ShellCommandOutput]
    status: ItemStatus = "completed"
    max_output_length: int | None = None


OutputItem = Annotated[
    OutputMessage | CodeInterpreterCall | ShellCall | ShellCallOutput | FunctionCall,
    Field(discriminator="type"),
]
"""What `response.output` holds."""


def _input_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    return "assistant_message" if kind == "message" and role == "assistant" else kind


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[OutputMessage, Tag("assistant_message")]
    | Annotated[CodeInterpreterCall, Tag("code_interpreter_call")]
    | Annotated[ShellCall, Tag("shell_call")]
    | Annotated[ShellCallOutput, Tag("shell_call_output")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")],
    Discriminator(_input_tag),
]
"""What `input_items` lists (an assistant message passed back is an `OutputMessage`)."""


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    """Tokens over every model turn of the response, as the upstream counted them."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        """Count one more model turn."""
        self.input_tokens += prompt
        self.output_tokens += completion
        self.total_tokens = self.input_tokens + self.output_tokens


IncompleteReason = Literal["max_output_tokens", "max_messages", "content_filter"]


class IncompleteDetails(BaseModel):
    """Why the response stopped early. The tool-call cap is `max_messages` (the SDK's enum
    has no closer value)."""

    reason: IncompleteReason


class ResponseError(BaseModel):
    """Why a streamed response failed (a non-streamed one answers 502/504 instead)."""

    code: Literal["server_error", "rate_limit_exceeded"] = "server_error"
    message: str


class Response(BaseModel):
    """A response object (`POST /v1/responses`, `GET /v1/responses/{id}`)."""

    id: str = Field(default_factory=lambda: new_id("resp"))
    object: Literal["response"] = "response"
    created_at: float
    status: ResponseStatus = "in_progress"
    completed_at: float | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """The tools as given, normalised (a `{"container_id": ...}` container becomes the id)."""
    usage: Usage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    store: bool = True
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None

    @property
    def output_text(self) -> str:
        """The text of every output message, joined."""
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, OutputMessage)
            for part in item.content
        )


class ResponseDeleted(BaseModel):
    """`DELETE /v1/responses/{id}`."""

    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class InputItemList(BaseModel):
    """A page of a response's input items."""

    object: Literal["list"] = "list"
    data: list[InputItem]
    first_id: str
    last_id: str
    has_more: bool
