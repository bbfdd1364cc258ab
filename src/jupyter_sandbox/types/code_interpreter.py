"""The Responses API's `code_interpreter` shapes: the call item, its outputs, file citations,
the tool's `container` param, and the streaming events.

Field order follows the hosted API's JSON, so `model_dump()` (and `model_dump_json()`) is the
wire shape; the official `openai` package's models validate every one of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from jupyter_sandbox.types.container import MemoryLimitInput, NetworkPolicy

CodeInterpreterCallStatus = Literal[
    "in_progress", "interpreting", "completed", "incomplete", "failed"
]
"""completed: the code ran (an exception in it still completes, with its traceback in the logs);
incomplete: interrupted at the timeout; failed: the kernel died (e.g. out of memory)."""


class CodeInterpreterOutputLogs(BaseModel):
    """Text the code printed (stdout and stderr), its last value, or its traceback."""

    type: Literal["logs"] = "logs"
    logs: str


class CodeInterpreterOutputImage(BaseModel):
    """An image the code showed (matplotlib, PIL, IPython.display), as a `data:` URL."""

    type: Literal["image"] = "image"
    url: str
    """`data:image/png;base64,...` (the hosted API does not document what its URL holds)."""


CodeInterpreterOutput = Annotated[
    CodeInterpreterOutputLogs | CodeInterpreterOutputImage, Field(discriminator="type")
]


class ContainerFileCitation(BaseModel):
    """An `output_text` annotation citing a file the code wrote under /mnt/data."""

    type: Literal["container_file_citation"] = "container_file_citation"
    container_id: str
    file_id: str
    """The container file's id (`cfile_...`): fetch it with `client.containers.files.content`."""
    filename: str
    """Its path relative to /mnt/data (`p.png`, `out/table.csv`)."""
    start_index: int = 0
    end_index: int = 0


class CodeInterpreterCall(BaseModel):
    """A `code_interpreter_call` output item, as the Responses API returns it."""

    type: Literal["code_interpreter_call"] = "code_interpreter_call"
    id: str
    """`ci_` + 48 hex."""
    status: CodeInterpreterCallStatus
    container_id: str
    code: str | None
    outputs: list[CodeInterpreterOutput] | None = None
    _citations: list[ContainerFileCitation] = PrivateAttr(default_factory=list)
    """Files the code wrote (not part of the item: they become the next message's
    annotations); read them with `CodeInterpreter.citations(call)`."""

    @property
    def logs(self) -> str:
        """Every logs output, joined."""
        return "".join(o.logs for o in self.outputs or [] if o.type == "logs")

    @property
    def images(self) -> list[str]:
        """The `data:` URL of every image output, in order."""
        return [o.url for o in self.outputs or [] if o.type == "image"]


class CodeInterpreterContainerAuto(BaseModel):
    """`container={"type": "auto", ...}`: a sandbox made on first use and reused after."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto"] = "auto"
    file_ids: list[str] = Field(default_factory=list)
    """Uploaded files (`client.files`) copied to /mnt/data; later calls may add more."""
    memory_limit: MemoryLimitInput = None
    """Default: the client's default tier (1g); spelled as `containers.create` accepts."""
    network_policy: NetworkPolicy | None = None
    """Default: no network."""


class CodeInterpreterContainerRef(BaseModel):
    """`container={"container_id": ...}`: the seed's spelling of an existing sandbox."""

    model_config = ConfigDict(extra="forbid")
    container_id: str


CodeInterpreterContainer = str | dict[str, Any] | CodeInterpreterContainerAuto
"""`"auto"`, a container id, `{"type": "auto", ...}` or `{"container_id": ...}`."""


class _Event(BaseModel):
    item_id: str
    output_index: int
    sequence_number: int


class CodeInterpreterCallInProgressEvent(_Event):
    """The call started."""

    type: Literal["response.code_interpreter_call.in_progress"] = (
        "response.code_interpreter_call.in_progress"
    )


class CodeInterpreterCallCodeDeltaEvent(_Event):
    """A piece of the code."""

    type: Literal["response.code_interpreter_call_code.delta"] = (
        "response.code_interpreter_call_code.delta"
    )
    delta: str


class CodeInterpreterCallCodeDoneEvent(_Event):
    """The whole code."""

    type: Literal["response.code_interpreter_call_code.done"] = (
        "response.code_interpreter_call_code.done"
    )
    code: str


class CodeInterpreterCallInterpretingEvent(_Event):
    """The kernel is running the code."""

    type: Literal["response.code_interpreter_call.interpreting"] = (
        "response.code_interpreter_call.interpreting"
    )


class CodeInterpreterCallCompletedEvent(_Event):
    """The run ended (see the item's status in the following `output_item.done`)."""

    type: Literal["response.code_interpreter_call.completed"] = (
        "response.code_interpreter_call.completed"
    )


class CodeInterpreterCallOutputEvent(_Event):
    """Extension, sent only when asked for (`outputs=True`): an output as it arrives.

    The hosted API has no such event; the SDK passes unknown event types through unparsed.
    """

    type: Literal["sandbox.code_interpreter_call.output"] = "sandbox.code_interpreter_call.output"
    output: CodeInterpreterOutput


class OutputItemAddedEvent(BaseModel):
    """`response.output_item.added` carrying the call as it starts."""

    type: Literal["response.output_item.added"] = "response.output_item.added"
    item: CodeInterpreterCall
    output_index: int
    sequence_number: int


class OutputItemDoneEvent(BaseModel):
    """`response.output_item.done` carrying the finished call."""

    type: Literal["response.output_item.done"] = "response.output_item.done"
    item: CodeInterpreterCall
    output_index: int
    sequence_number: int


CodeInterpreterEvent = Annotated[
    OutputItemAddedEvent
    | CodeInterpreterCallInProgressEvent
    | CodeInterpreterCallCodeDeltaEvent
    | CodeInterpreterCallCodeDoneEvent
    | CodeInterpreterCallInterpretingEvent
    | CodeInterpreterCallOutputEvent
    | CodeInterpreterCallCompletedEvent
    | OutputItemDoneEvent,
    Field(discriminator="type"),
]


class ChatToolMessage(BaseModel):
    """A chat completions `tool` message answering one entry of `tool_calls`."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    content: str


class InputText(BaseModel):
    """Text in a Responses `function_call_output`."""

    type: Literal["input_text"] = "input_text"
    text: str


class InputImage(BaseModel):
    """An image in a Responses `function_call_output`."""

    type: Literal["input_image"] = "input_image"
    image_url: str
    detail: Literal["low", "high", "auto"] = "auto"


class FunctionCallOutput(BaseModel):
    """A Responses `function_call_output` input item answering one `function_call`."""

    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]
