"""Kernel messages are untrusted input: sandbox code can sign its own (it holds the kernel's
key), so every field we use is checked here before it becomes an output or ends a run.

`to_output` turns one message's content into an output, returns `IGNORED` for a message type
that has no output, or raises `MalformedMessage`; the caller drops a malformed message with a
note and keeps the run going. Strings are made encodable (lone surrogates become U+FFFD) and
JSON values are bounded in depth and kept strict (no NaN or Infinity), so an output always
serialises.
"""

from __future__ import annotations

import math
from typing import Any, Final

from pydantic import ValidationError

from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    ExecutionOutput,
    StreamOutput,
)

MAX_DEPTH: Final = 64
"""Deepest nesting of a JSON value in an output (data, metadata)."""
MAX_TRACEBACK: Final = 10_000
"""Most traceback lines an error output keeps."""
STREAM_NAMES: Final = ("stdout", "stderr")


class MalformedMessage(ValueError):
    """A kernel message whose content does not have the shape its type requires."""


class _Ignored:
    """A message type with no output (status, execute_input, comms, unknown types)."""

    def __repr__(self) -> str:
        return "IGNORED"


IGNORED: Final = _Ignored()


def clean_text(value: object, what: str) -> str:
    """`value` if it is a string, with lone surrogates replaced; MalformedMessage otherwise."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} is {type(value).__name__}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def clean_json(value: object, what: str, depth: int = 0) -> Any:
    """A strict-JSON copy of `value` (finite numbers, string keys, bounded depth)."""
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedMessage(f"{what} holds a non-finite number")
        return value
    if isinstance(value, str):
        return clean_text(value, what)
    if isinstance(value, list):
        return [clean_json(item, what, depth + 1) for item in value]
    if isinstance(value, dict):
        return {
            clean_text(key, f"a key of {what}"): clean_json(item, what, depth + 1)
            for key, item in value.items()
        }
    raise MalformedMessage(f"{what} holds a {type(value).__name__}")


def _mime_bundle(content: dict[str, Any]) -> dict[str, Any]:
    data = content.get("data", {})
    if not isinstance(data, dict):
        raise MalformedMessage(f"data is {type(data).__name__}, not an object")
    return {
        clean_text(mime, "a MIME type"): clean_json(value, f"data[{mime!r:.40}]", 1)
        for mime, value in data.items()
    }


def _metadata(content: dict[str, Any]) -> dict[str, Any]:
    metadata = content.get("metadata", {})
    if not isinstance(metadata, dict):
        raise MalformedMessage(f"metadata is {type(metadata).__name__}, not an object")
    cleaned: dict[str, Any] = clean_json(metadata, "metadata")
    return cleaned


def execution_count(value: object) -> int | None:
    """An execution count: an int (not a bool) or None; MalformedMessage otherwise."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise MalformedMessage(f"execution_count is {type(value).__name__}, not an integer")


def to_output(msg_type: object, content: object) -> ExecutionOutput | _Ignored:
    """The output for one kernel message, IGNORED, or MalformedMessage."""
    if not isinstance(msg_type, str):
        raise MalformedMessage(f"msg_type is {type(msg_type).__name__}, not a string")
    if msg_type not in ("stream", "display_data", "execute_result", "error"):
        return IGNORED
    if not isinstance(content, dict):
        raise MalformedMessage(f"the content of {msg_type} is not an object")
    try:
        return _build(msg_type, content)
    except ValidationError as exc:  # a shape the checks above let through
        raise MalformedMessage(f"{msg_type}: {exc.errors()[0]['msg']}") from None
    except RecursionError:
        raise MalformedMessage(f"{msg_type}: nested too deeply") from None


def _build(msg_type: str, content: dict[str, Any]) -> ExecutionOutput:
    if msg_type == "stream":
        name = content.get("name")
        if name not in STREAM_NAMES:
            raise MalformedMessage(f"stream name {str(name)!r:.40} is not stdout or stderr")
        return StreamOutput(name=name, text=clean_text(content.get("text"), "stream text"))
    if msg_type == "display_data":
        return DisplayDataOutput(data=_mime_bundle(content), metadata=_metadata(content))
    if msg_type == "execute_result":
        return ExecuteResultOutput(
            execution_count=execution_count(content.get("execution_count")),
            data=_mime_bundle(content),
            metadata=_metadata(content),
        )
    traceback = content.get("traceback", [])
    if not isinstance(traceback, list):
        raise MalformedMessage(f"traceback is {type(traceback).__name__}, not a list")
    return ErrorOutput(
        ename=clean_text(content.get("ename", ""), "ename"),
        evalue=clean_text(content.get("evalue", ""), "evalue"),
        traceback=[clean_text(line, "a traceback line") for line in traceback[:MAX_TRACEBACK]],
    )


def reply_fields(content: object) -> tuple[str, int | None]:
    """(status, execution_count) of an execute_reply; MalformedMessage if either is wrong."""
    if not isinstance(content, dict):
        raise MalformedMessage("the content of execute_reply is not an object")
    status = content.get("status")
    if not isinstance(status, str):
        raise MalformedMessage("execute_reply status is not a string")
    return status, execution_count(content.get("execution_count"))


def execution_state(content: object) -> str | None:
    """The `execution_state` of a status message, or None if it has none."""
    if not isinstance(content, dict):
        return None
    state = content.get("execution_state")
    return state if isinstance(state, str) else None
