"""The result of running code in a sandbox's kernel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, computed_field

ExecutionStatus = Literal["ok", "error", "timeout", "died"]
"""ok: ran; error: the code raised; timeout: interrupted (and maybe restarted); died: the
kernel was killed (e.g. out of memory) and restarted."""


class StreamOutput(BaseModel):
    """Text the code wrote to stdout or stderr."""

    type: Literal["stream"] = "stream"
    name: Literal["stdout", "stderr"]
    text: str


class DisplayDataOutput(BaseModel):
    """Rich output shown by the code (plots, HTML tables, JSON), keyed by MIME type."""

    type: Literal["display_data"] = "display_data"
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ExecuteResultOutput(BaseModel):
    """The value of the cell's last expression."""

    type: Literal["execute_result"] = "execute_result"
    execution_count: int | None = None
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorOutput(BaseModel):
    """An exception raised by the code, as the kernel reported it."""

    type: Literal["error"] = "error"
    ename: str
    evalue: str
    traceback: list[str] = Field(default_factory=list)


ExecutionOutput = Annotated[
    StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput,
    Field(discriminator="type"),
]


class Execution(BaseModel):
    """What `containers.execute` returns: outputs in order, plus how the run ended."""

    object: Literal["container.execution"] = "container.execution"
    container_id: str
    status: ExecutionStatus
    outputs: list[ExecutionOutput] = Field(default_factory=list)
    execution_count: int | None = None
    duration: float
    """Seconds from request to the kernel's idle status."""
    truncated: bool = False
    """True when output beyond the configured cap was dropped."""
    message: str | None = None
    """Why a run ended badly (timeout, out of memory, restart), in words."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stdout(self) -> str:
        """Everything written to stdout, joined."""
        return "".join(
            o.text for o in self.outputs if isinstance(o, StreamOutput) and o.name == "stdout"
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stderr(self) -> str:
        """Everything written to stderr, joined."""
        return "".join(
            o.text for o in self.outputs if isinstance(o, StreamOutput) and o.name == "stderr"
        )

    @property
    def error(self) -> ErrorOutput | None:
        """The exception the code raised, if any."""
        return next((o for o in self.outputs if isinstance(o, ErrorOutput)), None)

    @property
    def result(self) -> ExecuteResultOutput | None:
        """The value of the last expression, if any."""
        return next((o for o in self.outputs if isinstance(o, ExecuteResultOutput)), None)
