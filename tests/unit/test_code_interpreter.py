"""code_interpreter shapes without Docker: kernel outputs to logs and images, the wire JSON, the
function-tool schemas, all checked against the official `openai` package's models."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionFunctionTool, ChatCompletionFunctionToolParam
from openai.types.responses import (
    FunctionTool,
    FunctionToolParam,
    ResponseCodeInterpreterToolCall,
    ResponseOutputText,
    ResponseStreamEvent,
)
from openai.types.responses.response_input_item_param import FunctionCallOutput as SDKOutput
from pydantic import TypeAdapter

from jupyter_sandbox.code_interpreter import call_id, image_url, strip_ansi, to_outputs
from jupyter_sandbox.code_interpreter.adapters import (
    chat_tool,
    responses_tool,
    tool_output_text,
)
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCall,
    CodeInterpreterCallCodeDeltaEvent,
    CodeInterpreterCallCodeDoneEvent,
    CodeInterpreterCallCompletedEvent,
    CodeInterpreterCallInProgressEvent,
    CodeInterpreterCallInterpretingEvent,
    CodeInterpreterOutputImage,
    CodeInterpreterOutputLogs,
    ContainerFileCitation,
    FunctionCallOutput,
    InputImage,
    InputText,
    OutputItemAddedEvent,
    OutputItemDoneEvent,
)
from jupyter_sandbox.types.execution import Execution

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
TRACEBACK = [
    "\x1b[0;31m-----\x1b[0m",
    "\x1b[0;31mZeroDivisionError\x1b[0m    Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m 1/0",
    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
]


def execution(
    *outputs: dict[str, Any], status: str = "ok", message: str | None = None
) -> Execution:
    return Execution.model_validate(
        {
            "container_id": "cntr_1",
            "status": status,
            "outputs": list(outputs),
            "duration": 0.1,
            "message": message,
        }
    )


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"type": "stream", "name": name, "text": text}


def display(data: dict[str, Any], kind: str = "display_data") -> dict[str, Any]:
    return {"type": kind, "data": data}


def dumped(ex: Execution) -> list[dict[str, Any]]:
    return [o.model_dump() for o in to_outputs(ex)]


@pytest.mark.parametrize(
    ("ex", "expected"),
    [
        (execution(), []),
        (
            execution(
                stream("a\n"),
                stream("b\n", "stderr"),
                display({"text/plain": "3"}, "execute_result"),
            ),
            [{"type": "logs", "logs": "a\nb\n3\n"}],
        ),
        (
            execution(
                stream("before\n"),
                display({"text/plain": "<Figure>", "image/png": PNG_B64[:8] + "\n" + PNG_B64[8:]}),
                stream("after\n"),
            ),
            [
                {"type": "logs", "logs": "before\n"},
                {"type": "image", "url": f"data:image/png;base64,{PNG_B64}"},
                {"type": "logs", "logs": "after\n"},
            ],
        ),
        (
            execution(display({"image/svg+xml": "<svg/>", "text/plain": "<svg>"})),
            [{"type": "image", "url": "data:image/svg+xml;base64,PHN2Zy8+"}],
        ),
        (
            execution(display({"image/jpeg": "/9j/", "text/plain": "x"})),
            [{"type": "image", "url": "data:image/jpeg;base64,/9j/"}],
        ),
        (  # an empty image (IPython.display.Image(data=b"")) shows as its text
            execution(
                display({"image/png": "\n", "text/plain": "<Image object>"}, "execute_result")
            ),
            [{"type": "logs", "logs": "<Image object>\n"}],
        ),
        (  # HTML without text shows nothing
            execution(display({"text/html": "<b>x</b>"})),
            [],
        ),
        (
            execution(
                stream("x\n"),
                {
                    "type": "error",
                    "ename": "ZeroDivisionError",
                    "evalue": "division by zero",
                    "traceback": TRACEBACK,
                },
                status="error",
            ),
            [
                {
                    "type": "logs",
                    "logs": "x\n-----\nZeroDivisionError    Traceback (most recent call last)\n"
                    "Cell In[1], line 1\n----> 1 1/0\nZeroDivisionError: division by zero\n",
                }
            ],
        ),
        (
            execution(
                {"type": "error", "ename": "E", "evalue": "v", "traceback": []}, status="error"
            ),
            [{"type": "logs", "logs": "E: v\n"}],
        ),
        (
            execution(stream("partial"), status="timeout", message="Execution timed out after 1 s"),
            [{"type": "logs", "logs": "partial\nExecution timed out after 1 s\n"}],
        ),
        (
            execution(status="died", message="The kernel ran out of memory"),
            [{"type": "logs", "logs": "The kernel ran out of memory\n"}],
        ),
    ],
)
def test_kernel_outputs_become_logs_and_images(
    ex: Execution, expected: list[dict[str, Any]]
) -> None:
    assert dumped(ex) == expected


def test_ansi_codes_are_stripped() -> None:
    assert (
        strip_ansi("\x1b[0;31mred\x1b[0m \x1b[1;32;40mbold\x1b[39m\x1b]0;title\x07") == "red bold"
    )


def test_image_url_prefers_png_and_ignores_text() -> None:
    assert image_url({"image/jpeg": "/9j/", "image/png": "iVBOR"}) == "data:image/png;base64,iVBOR"
    assert image_url({"text/plain": "x"}) is None


def test_the_call_is_the_wire_shape() -> None:
    call = CodeInterpreterCall(
        id=call_id(),
        status="completed",
        container_id="cntr_1",
        code="print(1)",
        outputs=[
            CodeInterpreterOutputLogs(logs="1\n"),
            CodeInterpreterOutputImage(url="data:image/png;base64,iVBOR"),
        ],
    )
    assert call.id.startswith("ci_")
    assert len(call.id) == 3 + 48
    expected = (
        f'{{"type":"code_interpreter_call","id":"{call.id}","status":"completed",'
        '"container_id":"cntr_1","code":"print(1)","outputs":[{"type":"logs","logs":"1\\n"},'
        '{"type":"image","url":"data:image/png;base64,iVBOR"}]}'
    )
    assert call.model_dump_json() == expected
    assert json.dumps(call.model_dump(), separators=(",", ":")) == expected
    sdk = ResponseCodeInterpreterToolCall.model_validate(call.model_dump())
    assert sdk.model_dump(mode="json") == call.model_dump()
    assert CodeInterpreterCall.model_validate(sdk.model_dump()) == call
    assert (call.logs, call.images) == ("1\n", ["data:image/png;base64,iVBOR"])


def test_every_status_and_a_null_outputs_validate() -> None:
    for status in ("in_progress", "interpreting", "completed", "incomplete", "failed"):
        call = CodeInterpreterCall(id="ci_1", status=status, container_id="c", code=None)
        assert call.model_dump()["outputs"] is None
        ResponseCodeInterpreterToolCall.model_validate(call.model_dump())


def test_events_are_the_sdks_stream_events() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    item = CodeInterpreterCall(id="ci_1", status="in_progress", container_id="c", code="")
    common: Any = {"output_index": 0, "sequence_number": 1}
    events = [
        OutputItemAddedEvent(item=item, **common),
        CodeInterpreterCallInProgressEvent(item_id="ci_1", **common),
        CodeInterpreterCallCodeDeltaEvent(item_id="ci_1", delta="1", **common),
        CodeInterpreterCallCodeDoneEvent(item_id="ci_1", code="1", **common),
        CodeInterpreterCallInterpretingEvent(item_id="ci_1", **common),
        CodeInterpreterCallCompletedEvent(item_id="ci_1", **common),
        OutputItemDoneEvent(item=item, **common),
    ]
    for event in events:
        parsed = adapter.validate_python(event.model_dump())
        assert type(parsed).__module__.startswith("openai.types.responses")
        assert parsed.model_dump(mode="json", exclude_unset=True) == event.model_dump()


def test_citation_is_an_output_text_annotation() -> None:
    citation = ContainerFileCitation(container_id="cntr_1", file_id="cfile_1", filename="p.png")
    text = ResponseOutputText.model_validate(
        {"type": "output_text", "text": "", "annotations": [citation.model_dump()]}
    )
    assert text.annotations[0].model_dump() == citation.model_dump()


@pytest.mark.parametrize("name", ["code_interpreter", "python"])
def test_tool_schemas_are_function_tools(name: str) -> None:
    chat = chat_tool(name)
    ChatCompletionFunctionTool.model_validate(chat)
    TypeAdapter(ChatCompletionFunctionToolParam).validate_python(chat)
    assert chat["function"]["name"] == name
    responses = responses_tool(name)
    assert FunctionTool.model_validate(responses).model_dump(exclude_none=True) == responses
    TypeAdapter(FunctionToolParam).validate_python(responses)
    parameters = responses["parameters"]  # strict mode: every property required, no extras
    assert parameters["required"] == list(parameters["properties"]) == ["code"]
    assert parameters["additionalProperties"] is False


def test_function_call_outputs_are_sdk_input_items() -> None:
    for output in (
        FunctionCallOutput(call_id="call_1", output="1\n"),
        FunctionCallOutput(
            call_id="call_1",
            output=[InputText(text="1"), InputImage(image_url="data:image/png;base64,iVBOR")],
        ),
    ):
        TypeAdapter(SDKOutput).validate_python(output.model_dump())


def test_tool_output_text_names_images_status_and_files() -> None:
    call = CodeInterpreterCall(
        id="ci_1",
        status="incomplete",
        container_id="c",
        code="x",
        outputs=[CodeInterpreterOutputLogs(logs="hi\n"), CodeInterpreterOutputImage(url="data:,")],
    )
    citation = ContainerFileCitation(container_id="c", file_id="cfile_1", filename="out/a.csv")
    assert tool_output_text(call, [citation], images_attached=True) == (
        "hi\n[image 1: attached]\n[status: incomplete]\n[files written: /mnt/data/out/a.csv]"
    )
    empty = call.model_copy(update={"outputs": [], "status": "completed"})
    assert tool_output_text(empty, [], images_attached=False) == "(no output)"
