"""The code_interpreter backend on real sandboxes: what a model (and its user) gets back."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from openai.types.chat import ChatCompletionToolMessageParam
from openai.types.responses import (
    ResponseCodeInterpreterToolCall,
    ResponseOutputText,
    ResponseStreamEvent,
)
from openai.types.responses.response_input_item_param import FunctionCallOutput
from pydantic import TypeAdapter

from jupyter_sandbox import BadRequestError, Client, NotFoundError
from jupyter_sandbox.code_interpreter import CodeInterpreter
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCallCodeDeltaEvent,
    CodeInterpreterCallCodeDoneEvent,
    CodeInterpreterEvent,
)

pytestmark = pytest.mark.docker

PNG = "data:image/png;base64,iVBOR"


def png_bytes(url: str) -> bytes:
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1], validate=True)


def test_the_issue_example(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        call = ci.run(
            "import matplotlib.pyplot as plt; plt.plot([1,3,2]); "
            "plt.savefig('/mnt/data/p.png'); print('done')",
            container="auto",
        )
        assert (call.type, call.status) == ("code_interpreter_call", "completed")
        assert call.id.startswith("ci_")
        assert call.container_id.startswith("cntr_")
        wire = call.model_dump()
        assert list(wire) == ["type", "id", "status", "container_id", "code", "outputs"]
        assert wire["outputs"][0] == {"type": "logs", "logs": "done\n"}
        assert wire["outputs"][1]["type"] == "image"
        assert png_bytes(wire["outputs"][1]["url"]).startswith(b"\x89PNG")
        sdk = ResponseCodeInterpreterToolCall.model_validate(wire)
        assert sdk.model_dump(mode="json") == wire
        assert json.loads(call.model_dump_json()) == wire

        [citation] = ci.citations(call)
        assert citation.model_dump() == {
            "type": "container_file_citation",
            "container_id": call.container_id,
            "file_id": citation.file_id,
            "filename": "p.png",
            "start_index": 0,
            "end_index": 0,
        }
        ResponseOutputText.model_validate(
            {"type": "output_text", "text": "", "annotations": [citation.model_dump()]}
        )
        cited = client.containers.files.retrieve(call.container_id, citation.file_id)
        assert (cited.path, cited.source) == ("/mnt/data/p.png", "assistant")
        content = client.containers.files.content.retrieve(
            citation.file_id, container_id=call.container_id
        ).read()
        assert content.startswith(b"\x89PNG")

        again = ci.run("print(open('/mnt/data/p.png', 'rb').read(4))")
        assert ci.citations(again) == []  # read, not written
        changed = ci.run("open('/mnt/data/p.png', 'ab').write(b'x'); open('/mnt/data/n.txt', 'w')")
        assert sorted(c.filename for c in ci.citations(changed)) == ["n.txt", "p.png"]
        assert ci.citations(changed.id) == ci.citations(changed)
        with pytest.raises(NotFoundError):
            ci.citations("ci_unknown")
        container_id = call.container_id
    with pytest.raises(NotFoundError):  # close() deleted the auto container
        client.containers.retrieve(container_id)


def test_errors_are_logs_with_the_traceback(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        call = ci.run("print('before')\n1/0")
    assert call.status == "completed"
    [logs] = call.outputs or []
    assert logs.type == "logs"
    assert logs.logs.startswith("before\n-----")
    assert "ZeroDivisionError: division by zero" in logs.logs
    assert "----> 2 1/0" in logs.logs
    assert "\x1b[" not in logs.logs


def test_images_from_pil_ipython_display_and_results(client: Client) -> None:
    code = """
from PIL import Image
from IPython.display import Image as IPyImage, display
import io
im = Image.new("RGB", (3, 2), "red")
display(im)
buffer = io.BytesIO(); im.save(buffer, format="PNG")
display(IPyImage(data=buffer.getvalue()))
print("between")
display({"text/plain": "plain only"}, raw=True)
im
"""
    with CodeInterpreter(client) as ci:
        call = ci.run(code)
    kinds = [(o.type, getattr(o, "logs", None)) for o in call.outputs or []]
    assert kinds == [
        ("image", None),
        ("image", None),
        ("logs", "between\nplain only\n"),
        ("image", None),
    ]
    assert all(png_bytes(url).startswith(b"\x89PNG") for url in call.images)


def test_values_stdout_and_stderr_share_the_logs(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        call = ci.run("import sys; print('out'); print('err', file=sys.stderr); 6 * 7")
    assert call.logs == "out\nerr\n42\n"


def test_timeout_is_incomplete_with_the_reason(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        ci.run("x = 1")
        call = ci.run("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1)
        assert call.status == "incomplete"
        assert call.logs.startswith("started\n")
        assert "KeyboardInterrupt" in call.logs
        assert call.logs.endswith("Execution timed out after 1 s and was interrupted\n")
        ResponseCodeInterpreterToolCall.model_validate(call.model_dump())
        assert ci.run("print(x)").logs == "1\n"  # the same kernel, state kept


def test_out_of_memory_fails_with_the_reason(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        call = ci.run(
            "blocks = []\nwhile True: blocks.append(bytearray(64 * 2**20))",
            container={"type": "auto", "memory_limit": "512m"},
            timeout=60,
        )
        assert call.status == "failed"
        assert "ran out of memory (memory_limit 512m" in call.logs
        ResponseCodeInterpreterToolCall.model_validate(call.model_dump())
        after = ci.run("print(2 + 2)", container={"type": "auto", "memory_limit": "512m"})
        assert (after.status, after.logs, after.container_id) == (
            "completed",
            "4\n",
            call.container_id,
        )


def test_auto_reuses_one_sandbox_per_configuration(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        first = ci.run("x = 41")
        second = ci.run("x + 1", container={"type": "auto"})
        assert second.container_id == first.container_id
        assert second.logs == "42\n"
        other = ci.run("print('x' in dir())", container={"type": "auto", "memory_limit": "512m"})
        assert other.container_id != first.container_id
        assert other.logs == "False\n"
        made = ci.auto_containers
        assert sorted(made) == sorted({first.container_id, other.container_id})
        container = client.containers.retrieve(first.container_id)
        assert (container.name, container.expires_after.minutes) == ("code-interpreter", 20)
        assert [c.id for c in ci.calls] == [first.id, second.id, other.id]
    assert client.containers.list().data == []


def test_an_expired_auto_sandbox_is_replaced(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        first = ci.run("x = 1")
        client._store.touch(first.container_id, time.time() - 21 * 60)  # 21 idle minutes
        client.gc()
        assert client.containers.retrieve(first.container_id).status == "expired"
        second = ci.run("print('x' in dir())")
        assert second.container_id != first.container_id
        assert second.logs == "False\n"  # a fresh sandbox: state does not survive expiry
        assert ci.auto_containers == [second.container_id]


def test_auto_copies_file_ids_in(client: Client) -> None:
    data = client.files.create(file=("a.csv", b"n\n1\n2\n"), purpose="user_data")
    more = client.files.create(file=("b.txt", b"hello"), purpose="user_data")
    try:
        with CodeInterpreter(client) as ci:
            auto: dict[str, Any] = {"type": "auto", "file_ids": [data.id]}
            call = ci.run(
                "import pandas as pd; print(pd.read_csv('/mnt/data/a.csv').n.sum())", container=auto
            )
            assert call.logs == "3\n"
            assert ci.citations(call) == []  # copied in, not written by the code
            auto["file_ids"] = [data.id, more.id]
            later = ci.run("print(open('/mnt/data/b.txt').read())", container=auto)
            assert (later.container_id, later.logs) == (call.container_id, "hello\n")
    finally:
        client.files.delete(data.id)
        client.files.delete(more.id)


def test_explicit_containers_in_every_spelling(client: Client) -> None:
    container = client.containers.create(name="mine")
    try:
        with CodeInterpreter(client) as ci:
            ci.run("y = 5", container=container.id)
            by_ref = ci.run("y", container={"container_id": container.id})
            assert (by_ref.container_id, by_ref.logs) == (container.id, "5\n")
            assert ci.auto_containers == []
        assert client.containers.retrieve(container.id).status == "ready"  # not ours to delete
    finally:
        client.containers.delete(container.id)


@pytest.mark.parametrize(
    ("container", "error", "param"),
    [
        ("cntr_nope", NotFoundError, "container_id"),
        ({"container_id": "cntr_nope"}, NotFoundError, "container_id"),
        ({"id": "cntr_x"}, BadRequestError, "container"),
        ({"container_id": "cntr_x", "type": "auto"}, BadRequestError, "container.type"),
        ({"type": "explicit"}, BadRequestError, "container.type"),
        ({"type": "auto", "memory_limit": "3g"}, BadRequestError, "container.memory_limit"),
        ({"type": "auto", "bogus": 1}, BadRequestError, "container.bogus"),
        (42, BadRequestError, "container"),
    ],
)
def test_bad_containers_are_refused(
    client: Client, container: Any, error: type[Exception], param: str
) -> None:
    with CodeInterpreter(client) as ci, pytest.raises(error) as raised:
        ci.run("1", container=container)
    assert getattr(raised.value, "param", None) == param
    assert client.containers.list().data == []


def test_stream_yields_the_responses_events_as_output_arrives(client: Client) -> None:
    code = "import time\nprint('a', flush=True)\ntime.sleep(1.5)\nprint('b')"
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    with CodeInterpreter(client) as ci:
        ci.run("pass")  # start the sandbox first, so timings measure the run
        arrivals: list[tuple[float, CodeInterpreterEvent]] = []
        for event in ci.stream(code, output_events=True, output_index=2, sequence_number=10):
            arrivals.append((time.monotonic(), event))
    events = [event for _, event in arrivals]
    assert [e.type for e in events] == [
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "sandbox.code_interpreter_call.output",
        "sandbox.code_interpreter_call.output",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(10, 19))
    assert {e.output_index for e in events} == {2}
    for event in events:
        if event.type.startswith("response."):
            wire = event.model_dump()
            parsed = adapter.validate_python(wire)
            assert parsed.model_dump(mode="json", exclude_unset=True) == wire
    done = events[-1]
    assert done.type == "response.output_item.done"
    assert done.item.status == "completed"
    assert done.item.logs == "a\nb\n"
    assert {getattr(e, "item_id", done.item.id) for e in events} == {done.item.id}
    first_output, last_output = arrivals[5][0], arrivals[6][0]
    assert last_output - first_output > 1.0  # 'a' came while the code was still running
    delta, code_done = events[2], events[3]
    assert isinstance(delta, CodeInterpreterCallCodeDeltaEvent)
    assert isinstance(code_done, CodeInterpreterCallCodeDoneEvent)
    assert (delta.delta, code_done.code) == (code, code)


def test_run_reports_events_to_a_callback(client: Client) -> None:
    seen: list[str] = []
    with CodeInterpreter(client) as ci:
        call = ci.run("print(1)", on_event=lambda event: seen.append(event.type))
    assert seen[0] == "response.output_item.added"
    assert seen[-1] == "response.output_item.done"
    assert "sandbox.code_interpreter_call.output" not in seen  # only when asked for
    assert call.logs == "1\n"


def test_closing_a_stream_early_interrupts_the_code(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        stream = ci.stream("import time\ntime.sleep(60)")
        for event in stream:
            if event.type == "response.code_interpreter_call.interpreting":
                break
        started = time.monotonic()
        stream.close()  # type: ignore[attr-defined]
        assert time.monotonic() - started < 10
        assert ci.calls[-1].status == "completed"  # interrupted: KeyboardInterrupt in the logs
        assert "KeyboardInterrupt" in ci.calls[-1].logs


def test_chat_adapter_answers_a_tool_call(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        tool_call = {
            "id": "call_7",
            "type": "function",
            "function": {
                "name": "code_interpreter",
                "arguments": json.dumps(
                    {
                        "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
                        "plt.savefig('/mnt/data/f.png'); plt.show()\nprint('ok')"
                    }
                ),
            },
        }
        message = ci.handle_chat_tool_call(tool_call)
        TypeAdapter(ChatCompletionToolMessageParam).validate_python(message)
        assert message == {
            "role": "tool",
            "tool_call_id": "call_7",
            "content": "ok\n[image 1: shown to the user]\n[files written: /mnt/data/f.png]",
        }
        assert ci.calls[-1].images  # the image itself stays with the call

        bad = ci.handle_chat_tool_call(
            {**tool_call, "function": {"name": "code_interpreter", "arguments": "print(1)"}}
        )
        assert bad["content"].startswith("Invalid arguments: not JSON")
        assert len(ci.calls) == 1  # nothing ran
        with pytest.raises(BadRequestError):
            ci.handle_chat_tool_call(
                {**tool_call, "function": {"name": "other", "arguments": "{}"}}
            )


def test_responses_adapter_answers_a_function_call(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        item = {
            "type": "function_call",
            "call_id": "call_9",
            "name": "code_interpreter",
            "arguments": json.dumps({"code": "import time; time.sleep(30)"}),
        }
        output = ci.handle_function_call(item, timeout=1)
        TypeAdapter(FunctionCallOutput).validate_python(output)
        assert output["type"] == "function_call_output"
        assert output["call_id"] == "call_9"
        assert output["output"].endswith(
            "Execution timed out after 1 s and was interrupted\n[status: incomplete]"
        )
        wrong = ci.handle_function_call({**item, "arguments": json.dumps({"cod": "1"})})
        assert wrong["output"] == 'Invalid arguments: send {"code": "<python code>"}'


def test_fork_gives_a_second_interpreter_with_the_same_state(client: Client) -> None:
    with CodeInterpreter(client) as ci:
        first = ci.run("import numpy as np\nxs = np.arange(5)\nprint(int(xs.sum()))")
        assert first.outputs[0].model_dump() == {"type": "logs", "logs": "10\n"}
        with ci.fork() as twin:
            assert twin.auto_containers != ci.auto_containers
            try_a = twin.run("xs = xs * 2\nprint(int(xs.sum()))")
            try_b = ci.run("xs = xs + 1\nprint(int(xs.sum()))")
            assert try_a.outputs[0].model_dump() == {"type": "logs", "logs": "20\n"}
            assert try_b.outputs[0].model_dump() == {"type": "logs", "logs": "15\n"}
            forked = twin.auto_containers[0]
            assert list(client.containers.snapshots.list(ci.auto_containers[0])) == []
        with pytest.raises(NotFoundError):  # closing the fork deleted only its sandbox
            client.containers.retrieve(forked)
        assert ci.run("print(int(xs.sum()))").outputs[0].model_dump()["logs"] == "15\n"
