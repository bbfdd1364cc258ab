"""Kernel messages are untrusted: every shape sandbox code can sign becomes an output, is
ignored, or raises MalformedMessage; nothing else escapes, and every output serialises."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_sandbox.core import kernel_messages
from jupyter_sandbox.core.kernel_messages import IGNORED, MalformedMessage, to_output
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    Execution,
    StreamOutput,
)


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


DEEP_OK = {"data": {"application/json": nested(kernel_messages.MAX_DEPTH - 1)}}
GOOD: list[tuple[str, dict[str, Any], type]] = [
    ("stream", {"name": "stdout", "text": "hi"}, StreamOutput),
    ("stream", {"name": "stderr", "text": ""}, StreamOutput),
    ("display_data", {"data": {"text/plain": "x"}, "metadata": {}}, DisplayDataOutput),
    ("display_data", {"data": {"application/json": {"a": [1, 2.5, None]}}}, DisplayDataOutput),
    ("display_data", {}, DisplayDataOutput),
    ("execute_result", {"execution_count": 3, "data": {"text/plain": "3"}}, ExecuteResultOutput),
    ("execute_result", {"execution_count": None, "data": {}}, ExecuteResultOutput),
    ("error", {"ename": "E", "evalue": "v", "traceback": ["a", "b"]}, ErrorOutput),
    ("display_data", DEEP_OK, DisplayDataOutput),
]  # fmt: skip


@pytest.mark.parametrize(("msg_type", "content", "kind"), GOOD)
def test_well_formed_messages_become_outputs(
    msg_type: str, content: dict[str, Any], kind: type
) -> None:
    output = to_output(msg_type, content)
    assert isinstance(output, kind)


BAD: list[tuple[object, object]] = [
    ("stream", {"name": "evil", "text": "x"}),
    ("stream", {"name": "stdout", "text": 5}),
    ("stream", {"name": "stdout"}),
    ("stream", {"name": ["stdout"], "text": "x"}),
    ("stream", {"text": "x"}),
    ("stream", ["not", "a", "dict"]),
    ("stream", "text"),
    ("stream", None),
    ("display_data", {"data": "not a dict"}),
    ("display_data", {"data": {"text/plain": float("nan")}}),
    ("display_data", {"data": {"text/plain": float("inf")}}),
    ("display_data", {"data": {"application/json": nested(kernel_messages.MAX_DEPTH + 5)}}),
    ("display_data", {"data": {"application/json": nested(5000)}}),
    ("display_data", {"data": {"text/plain": "x"}, "metadata": [1]}),
    ("display_data", {"data": {"text/plain": b"bytes"}}),
    ("display_data", {"data": {"text/plain": {1: "int key"}}}),
    ("execute_result", {"execution_count": "3", "data": {}}),
    ("execute_result", {"execution_count": True, "data": {}}),
    ("execute_result", {"execution_count": 1.5, "data": {}}),
    ("error", {"ename": 1, "evalue": "v", "traceback": []}),
    ("error", {"ename": "E", "evalue": None, "traceback": []}),
    ("error", {"ename": "E", "evalue": "v", "traceback": "not a list"}),
    ("error", {"ename": "E", "evalue": "v", "traceback": [1, 2]}),
    (None, {"name": "stdout", "text": "x"}),
    (["stream"], {"name": "stdout", "text": "x"}),
]


@pytest.mark.parametrize(("msg_type", "content"), BAD)
def test_malformed_messages_raise_one_error(msg_type: object, content: object) -> None:
    with pytest.raises(MalformedMessage):
        to_output(msg_type, content)


@pytest.mark.parametrize(
    "msg_type", ["status", "execute_input", "comm_open", "clear_output", "no_such_type", ""]
)
def test_types_without_output_are_ignored(msg_type: str) -> None:
    assert to_output(msg_type, {"anything": [1, 2]}) is IGNORED
    assert to_output(msg_type, "not even a dict") is IGNORED


def test_lone_surrogates_become_replacement_characters() -> None:
    text = json.loads('"a\\ud800b"')
    stream = to_output("stream", {"name": "stdout", "text": text})
    display = to_output("display_data", {"data": {text: {text: [text]}}})
    assert isinstance(stream, StreamOutput)
    assert stream.text == "a\ufffdb"
    assert isinstance(display, DisplayDataOutput)
    assert display.data == {"a\ufffdb": {"a\ufffdb": ["a\ufffdb"]}}
    # Every output it returns serialises as strict, encodable JSON inside an Execution.
    execution = Execution(container_id="cntr_x", status="ok", outputs=[stream, display], duration=0)
    json.loads(execution.model_dump_json())
    json.dumps(execution.model_dump(mode="json"), allow_nan=False).encode()


def test_reply_fields() -> None:
    assert kernel_messages.reply_fields({"status": "ok", "execution_count": 2}) == ("ok", 2)
    assert kernel_messages.reply_fields({"status": "error"}) == ("error", None)
    for content in ({"status": 1}, {"status": "ok", "execution_count": "2"}, [], None):
        with pytest.raises(MalformedMessage):
            kernel_messages.reply_fields(content)


def test_execution_state() -> None:
    assert kernel_messages.execution_state({"execution_state": "idle"}) == "idle"
    assert kernel_messages.execution_state({"execution_state": ["idle"]}) is None
    assert kernel_messages.execution_state("idle") is None


def _frames(connection: Any, header: Any, parent: Any, content: bytes) -> list[bytes]:
    """Signed frames of a message with any header, parent and raw content."""
    parts = [json.dumps(header).encode(), json.dumps(parent).encode(), b"{}", content]
    return [b"<IDS|MSG>", connection.session.sign(parts), *parts]


HEADER = {"msg_id": "m", "msg_type": "stream", "session": "s", "username": "u", "version": "5.3"}
FRAMES: list[tuple[str, Any, Any, bytes]] = [
    ("no delimiter", None, None, b""),
    ("header without msg_type", {"msg_id": "m", "version": "5.3"}, {}, b"{}"),
    ("header is a list", [1], {}, b"{}"),
    ("msg_type is a number", {**HEADER, "msg_type": 7}, {}, b"{}"),
    ("parent msg_id is a list", HEADER, {"msg_id": ["x"]}, b"{}"),
    ("content is a list", HEADER, {}, b"[1]"),
    ("content is not JSON", HEADER, {}, b"{not json"),
    ("content nested past the parser", HEADER, {}, b"[" * 100_000 + b"]" * 100_000),
    ("a 10**5000 integer", HEADER, {}, b'{"text": ' + b"1" * 5000 + b"}"),
    ("a v4 header that the adapter cannot read", {**HEADER, "version": "4.0"}, {}, b"{}"),
]


@pytest.mark.parametrize(("why", "header", "parent", "content"), FRAMES, ids=[f[0] for f in FRAMES])
def test_connection_reads_forged_frames_as_malformed(
    tmp_path: Any, why: str, header: Any, parent: Any, content: bytes
) -> None:
    from jupyter_sandbox.backends.kernel import MALFORMED, KernelConnection

    connection = KernelConnection(tmp_path, "k" * 64, 0)
    frames = [b"junk"] if header is None else _frames(connection, header, parent, content)
    message = connection._read("iopub", frames)
    assert message.msg_type == MALFORMED, (why, message)
    assert isinstance(message.content["why"], str)


def test_connection_drops_badly_signed_frames_quietly(tmp_path: Any) -> None:
    from jupyter_sandbox.backends.kernel import MALFORMED, KernelConnection

    connection = KernelConnection(tmp_path, "k" * 64, 0)
    frames = _frames(connection, HEADER, {}, b'{"name": "stdout", "text": "x"}')
    frames[1] = b"0" * 64
    message = connection._read("iopub", frames)
    assert message.msg_type == MALFORMED
    assert message.content["quiet"] is True
    good = connection._read("iopub", _frames(connection, HEADER, {"msg_id": "p"}, b'{"a": 1}'))
    assert (good.msg_type, good.parent_id, good.content) == ("stream", "p", {"a": 1})
