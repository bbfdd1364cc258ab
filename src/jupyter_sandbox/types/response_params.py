"""What `POST /v1/responses` accepts: the tools (`code_interpreter`, `shell`, `function`),
`tool_choice`, the input items, and the create parameters, with errors naming the
parameter the way OpenAI does (`tools[0].container`, `input[2].content`).

Items passed back from an earlier `response.output` carry more fields than we need; those are
ignored. Unknown parameters, tool types and item types are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCall,
    CodeInterpreterContainerAuto,
    CodeInterpreterContainerRef,
)
from jupyter_sandbox.types.container import MemoryLimit, NetworkPolicy
from jupyter_sandbox.types.responses import ShellAction, ShellCommandOutput

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
HOSTED_NAMES = ("code_interpreter", "shell")
"""Function names the hosted tools take in the upstream's tool list."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # items passed back carry more fields


class CodeInterpreterTool(_Strict):
    """`{"type": "code_interpreter", "container": ...}`."""

    type: Literal["code_interpreter"]
    container: str | CodeInterpreterContainerAuto | CodeInterpreterContainerRef

    @field_validator("container", mode="before")
    @classmethod
    def _container_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if "container_id" in value:
                return CodeInterpreterContainerRef.model_validate(value)
            return CodeInterpreterContainerAuto.model_validate(value)
        if isinstance(value, str) and not value:
            raise ValueError("give 'auto' or a container id")
        return value


class ContainerAutoParam(_Strict):
    """A shell environment made for the response (and reused by the conversation)."""

    type: Literal["container_auto"]
    file_ids: list[str] = Field(default_factory=list)
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None


class ContainerReferenceParam(_Strict):
    """A shell environment that is an existing container."""

    type: Literal["container_reference"]
    container_id: str = Field(min_length=1)


class ShellTool(_Strict):
    """`{"type": "shell", "environment": {"type": "container_auto" | "container_reference"}}`
    (no environment: `container_auto`)."""

    type: Literal["shell"]
    environment: (
        Annotated[ContainerAutoParam | ContainerReferenceParam, Field(discriminator="type")] | None
    ) = None


class FunctionTool(_Strict):
    """One of the caller's functions: the model's calls come back as `function_call` items."""

    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


Tool = Annotated[CodeInterpreterTool | ShellTool | FunctionTool, Field(discriminator="type")]


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


class ToolChoiceHosted(_Strict):
    type: Literal["code_interpreter", "shell"]


ToolChoice = (
    Literal["auto", "none", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceHosted, Field(discriminator="type")]
)


# -- input items -------------------------------------------------------------------------


class InputTextPart(_Lenient):
    type: Literal["input_text"]
    text: str


class InputImagePart(_Lenient):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: Literal["low", "high", "auto", "original"] = "auto"


class OutputTextPart(_Lenient):
    type: Literal["output_text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputTextPart | InputImagePart | OutputTextPart | RefusalPart, Field(discriminator="type")
]


class MessageParam(_Lenient):
    """A message: `{"role": "user", "content": "..."}` or with content parts."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallParam(_Lenient):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str


class FunctionCallOutputParam(_Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Annotated[InputTextPart | InputImagePart, Field(discriminator="type")]]


class ShellCallParam(_Lenient):
    type: Literal["shell_call"]
    call_id: str = Field(min_length=1)
    action: ShellAction


class ShellCallOutputParam(_Lenient):
    type: Literal["shell_call_output"]
    call_id: str = Field(min_length=1)
    output: list[ShellCommandOutput]


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        found = value.get("type", "message")
        return found if isinstance(found, str) else None
    return getattr(value, "type", None)


InputItemParam = Annotated[
    Annotated[MessageParam, Tag("message")]
    | Annotated[FunctionCallParam, Tag("function_call")]
    | Annotated[FunctionCallOutputParam, Tag("function_call_output")]
    | Annotated[CodeInterpreterCall, Tag("code_interpreter_call")]
    | Annotated[ShellCallParam, Tag("shell_call")]
    | Annotated[ShellCallOutputParam, Tag("shell_call_output")],
    Discriminator(_item_type),
]


class ResponseCreateParams(_Strict):
    """The body of `POST /v1/responses` (the subset tool use needs)."""

    model: str = Field(min_length=1, max_length=256)
    input: str | list[InputItemParam] | None = None
    instructions: str | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    parallel_tool_calls: bool = True
    stream: bool = False
    store: bool = True
    user: str | None = None
    include: list[str] | None = None
    """Accepted and ignored: code_interpreter_call outputs are always included."""
    truncation: Literal["disabled"] | None = None


_TAGS = {
    "code_interpreter", "shell", "function", "message", "function_call", "function_call_output",
    "code_interpreter_call", "shell_call", "shell_call_output", "container_auto",
    "container_reference", "input_text", "input_image", "output_text", "refusal", "str",
    "ToolChoiceFunction", "ToolChoiceHosted", "CodeInterpreterContainerAuto",
    "CodeInterpreterContainerRef", "exit", "timeout", "disabled", "allowlist",
}  # fmt: skip


def param_name(location: tuple[int | str, ...]) -> str | None:
    """A pydantic error location as OpenAI's param: `tools[0].container`."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in _TAGS or "[" in part or part.startswith(("literal", "function-")):
            continue  # union branches pydantic adds to the location
        else:
            name += f".{part}" if name else part
    return name or None


def invalid(exc: ValidationError) -> BadRequestError:
    """The first error as a BadRequestError naming the parameter."""
    # In a union (`input`: a string or items) the deepest error is about the branch meant.
    error = max(
        exc.errors(include_url=False),
        key=lambda e: (len(e["loc"]), e["type"].startswith("union_tag")),
    )
    param = param_name(tuple(error["loc"]))
    kind = error["type"]
    if kind == "union_tag_invalid":
        context = error.get("ctx", {})
        param = f"{param}.type" if param else "type"
        message = f"unknown type {context.get('tag')!r} (supported: {context.get('expected_tags')})"
    elif kind == "union_tag_not_found":
        param = f"{param}.type" if param else "type"
        message = "this parameter is required"
    elif kind == "extra_forbidden":
        message = "unknown parameter"
    elif kind == "missing":
        message = "this parameter is required"
    else:
        message = error["msg"]
    value = error.get("input")
    shown = "" if kind == "missing" or isinstance(value, dict | list) else f" (got {value!r:.80})"
    return BadRequestError(f"Invalid {param or 'request'}: {message}{shown}", param=param)


def parse_create(body: dict[str, Any]) -> ResponseCreateParams:
    """Validate a create body, or raise BadRequestError naming the parameter."""
    try:
        params = ResponseCreateParams.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    names: set[str] = set()
    for index, tool in enumerate(params.tools):
        name = tool.name if isinstance(tool, FunctionTool) else tool.type
        if name in names:
            raise BadRequestError(
                f"Invalid tools[{index}]: a second tool named {name!r}",
                param=f"tools[{index}]",
            )
        if isinstance(tool, FunctionTool) and name in HOSTED_NAMES:
            raise BadRequestError(
                f"Invalid tools[{index}].name: {name!r} is the name of a built-in tool",
                param=f"tools[{index}].name",
            )
        names.add(name)
    return params
