"""How a code_interpreter run is shaped for OpenAI: kernel outputs as `logs` and `image`
outputs, the call's id and status, its streaming events' sequence numbers, and the
`container_file_citation`s for the files a run wrote under /mnt/data.

`CodeInterpreter` (in `code_interpreter`) uses these; they need no sandbox.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCallStatus,
    CodeInterpreterOutput,
    CodeInterpreterOutputImage,
    CodeInterpreterOutputLogs,
    ContainerFileCitation,
)
from jupyter_sandbox.types.container_file import DEFAULT_DIR
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    Execution,
    ExecutionOutput,
    StreamOutput,
)

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
CALL_STATUS: dict[str, CodeInterpreterCallStatus] = {
    "ok": "completed",
    "error": "completed",  # the traceback is in the logs, as the hosted tool shows it
    "timeout": "incomplete",
    "died": "failed",
}
"""An Execution's status -> the code_interpreter_call's status."""
FileState = dict[str, tuple[str, int]]
"""container file id -> (path, bytes), for files under /mnt/data."""


def call_id() -> str:
    """`ci_` + 48 hex, like the hosted tool's item ids."""
    return "ci_" + secrets.token_hex(24)


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def image_url(data: dict[str, Any]) -> str | None:
    """A `data:` URL for the first image in a Jupyter MIME bundle, or None."""
    for mime in _IMAGE_TYPES:
        value = data.get(mime)
        if not isinstance(value, str):
            continue
        if mime == "image/svg+xml":
            encoded = base64.b64encode(value.encode()).decode()
        else:  # Jupyter sends binary types base64-encoded, sometimes wrapped over lines
            encoded = "".join(value.split())
        if encoded:
            return f"data:{mime};base64,{encoded}"
    return None


def _text(output: ExecutionOutput) -> str:
    if isinstance(output, StreamOutput):
        return output.text
    if isinstance(output, ErrorOutput):
        if output.traceback:
            return strip_ansi("\n".join(output.traceback)) + "\n"
        return f"{output.ename}: {output.evalue}\n"
    plain = output.data.get("text/plain")
    return f"{plain}\n" if isinstance(plain, str) and plain else ""


def to_output(output: ExecutionOutput) -> CodeInterpreterOutput | None:
    """One kernel output as a code_interpreter output (None if it shows nothing)."""
    if isinstance(output, DisplayDataOutput | ExecuteResultOutput):
        url = image_url(output.data)
        if url is not None:
            return CodeInterpreterOutputImage(url=url)
    text = _text(output)
    return CodeInterpreterOutputLogs(logs=text) if text else None


def to_outputs(execution: Execution) -> list[CodeInterpreterOutput]:
    """An Execution's outputs as logs and images: adjacent text joins into one logs output,
    and a run that timed out or died ends with why."""
    outputs: list[CodeInterpreterOutput] = []

    def add(item: CodeInterpreterOutput | None) -> None:
        if item is None:
            return
        last = outputs[-1] if outputs else None
        if isinstance(item, CodeInterpreterOutputLogs) and isinstance(
            last, CodeInterpreterOutputLogs
        ):
            outputs[-1] = CodeInterpreterOutputLogs(logs=last.logs + item.logs)
        else:
            outputs.append(item)

    for output in execution.outputs:
        add(to_output(output))
    if execution.message:
        logs = outputs[-1].logs if outputs and outputs[-1].type == "logs" else ""
        gap = "" if not logs or logs.endswith("\n") else "\n"
        add(CodeInterpreterOutputLogs(logs=f"{gap}{execution.message}\n"))
    return outputs


class EventSequence:
    """The next `sequence_number` of a response stream, counting up from `start`."""

    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def file_citations(
    container_id: str, before: FileState, after: FileState
) -> list[ContainerFileCitation]:
    """Citations for the files in `after` that are new or changed in size since `before`."""
    return [
        ContainerFileCitation(
            container_id=container_id,
            file_id=file_id,
            filename=path[len(DEFAULT_DIR) + 1 :],
        )
        for file_id, (path, size) in after.items()
        if before.get(file_id, (path, -1))[1] != size or file_id not in before
    ]
