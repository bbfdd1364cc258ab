"""`/v1/responses` without sandboxes: parameter errors name the parameter, every object we
send parses with the official SDK's models, the model client maps upstream failures to
502/504, and the responses table joins an existing store file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseItemList, ResponseStreamEvent
from pydantic import SecretStr, TypeAdapter

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.migrations import MIGRATIONS
from jupyter_sandbox.backends.response_store import ResponseRecord, ResponseStore
from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from jupyter_sandbox.server.responses.events import Events
from jupyter_sandbox.server.responses.upstream import (
    ChatUpstream,
    UpstreamError,
    UpstreamTimeoutError,
)
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCall,
    CodeInterpreterOutputImage,
    CodeInterpreterOutputLogs,
    ContainerFileCitation,
)
from jupyter_sandbox.types.response_params import parse_create
from jupyter_sandbox.types.responses import (
    ContainerReference,
    FunctionCall,
    FunctionCallOutput,
    IncompleteDetails,
    InputItemList,
    InputMessage,
    InputText,
    OutputMessage,
    OutputText,
    Response,
    ShellAction,
    ShellCall,
    ShellCallOutput,
    ShellCommandOutput,
    ShellOutcomeExit,
    ShellOutcomeTimeout,
    Usage,
)
from tests.integration.model_stub import StandInModel, running, say
from tests.integration.server_harness import free_port

CI = {"type": "code_interpreter", "container": {"type": "auto"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tools": [CI, {"type": "nope"}]}, "tools[1].type"),
        ({"model": "m", "input": "x", "tools": [{"container": "auto"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]},
         "tools[0].container"),
        ({"model": "m", "input": "x",
          "tools": [{"type": "code_interpreter",
                     "container": {"type": "auto", "memory_limit": "3g"}}]},
         "tools[0].container.memory_limit"),
        ({"model": "m", "input": "x",
          "tools": [{"type": "shell", "environment": {"type": "local"}}]},
         "tools[0].environment.type"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "bad name"}]},
         "tools[0].name"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "shell"}]},
         "tools[0].name"),
        ({"model": "m", "input": "x", "tools": [CI, CI]}, "tools[1]"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": ["x"]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
         "input[0].call_id"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
         "input[0].content[0].type"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "input": "x", "frobnicate": 1}, "frobnicate"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice.type"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ],
)  # fmt: skip
def test_bad_parameters_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_create(body)
    assert caught.value.param == param, caught.value.message
    assert caught.value.message.startswith(f"Invalid {param}")


def test_accepted_forms() -> None:
    params = parse_create(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "a"}]},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "tools": [
                {"type": "code_interpreter", "container": {"container_id": "cntr_x"}},
                {"type": "shell",
                 "environment": {"type": "container_reference", "container_id": "cntr_x"}},
                {"type": "function", "name": "lookup", "parameters": {"type": "object"}},
            ],
            "tool_choice": {"type": "shell"},
            "metadata": {"k": "v"},
            "stream": True,
        }
    )  # fmt: skip
    assert [t.type for t in params.tools] == ["code_interpreter", "shell", "function"]
    assert len(params.input or []) == 3


def _full_response() -> Response:
    citation = ContainerFileCitation(container_id="cntr_a", file_id="cfile_b", filename="p.png")
    return Response(
        created_at=time.time(),
        completed_at=time.time(),
        status="incomplete",
        incomplete_details=IncompleteDetails(reason="max_messages"),
        model="gpt-4",
        tools=[
            {"type": "code_interpreter", "container": "cntr_a"},
            {"type": "shell", "environment": {"type": "container_auto"}},
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
        ],
        output=[
            CodeInterpreterCall(
                id="ci_1",
                status="completed",
                container_id="cntr_a",
                code="print(1)",
                outputs=[
                    CodeInterpreterOutputLogs(logs="1\n"),
                    CodeInterpreterOutputImage(url="data:image/png;base64,AA=="),
                ],
            ),
            ShellCall(
                call_id="call_1",
                action=ShellAction(commands=["ls"]),
                environment=ContainerReference(container_id="cntr_a"),
            ),
            ShellCallOutput(
                call_id="call_1",
                output=[
                    ShellCommandOutput(
                        stdout="a\n", stderr="", outcome=ShellOutcomeExit(exit_code=0)
                    ),
                    ShellCommandOutput(stdout="", stderr="", outcome=ShellOutcomeTimeout()),
                ],
            ),
            FunctionCall(call_id="call_2", name="f", arguments="{}"),
            OutputMessage(content=[OutputText(text="see p.png", annotations=[citation])]),
        ],
        usage=Usage(input_tokens=3, output_tokens=2, total_tokens=5),
        metadata={"k": "v"},
    )  # fmt: skip


def test_every_output_item_parses_with_the_official_models() -> None:
    data = _full_response().model_dump(mode="json")
    parsed = SDKResponse.model_validate(data, strict=True)
    assert [item.type for item in parsed.output] == [
        "code_interpreter_call", "shell_call", "shell_call_output", "function_call", "message",
    ]  # fmt: skip
    assert parsed.output_text == "see p.png"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_messages"


def test_input_item_list_parses_with_the_official_models() -> None:
    items = InputItemList(
        data=[
            InputMessage(role="user", content=[InputText(text="hi")]),
            OutputMessage(content=[OutputText(text="yes")]),
            FunctionCall(call_id="c", name="f", arguments="{}"),
            FunctionCallOutput(call_id="c", output="42"),
        ],
        first_id="a",
        last_id="b",
        has_more=False,
    )
    parsed = ResponseItemList.model_validate(items.model_dump(mode="json"), strict=True)
    assert [i.type for i in parsed.data] == ["message", "message", "function_call",
                                             "function_call_output"]  # fmt: skip


def test_events_parse_with_the_official_models() -> None:
    sent: list[dict[str, Any]] = []
    events = Events(sent.append)
    response = _full_response()
    events.emit("response.created", response=response)
    item = OutputMessage(content=[], status="in_progress")
    where = {"item_id": item.id, "output_index": 0, "content_index": 0}
    events.emit("response.output_item.added", output_index=0, item=item)
    events.emit("response.content_part.added", **where, part=OutputText(text=""))
    events.emit("response.output_text.delta", **where, delta="hi", logprobs=[])
    events.emit("response.shell_call_command.added", output_index=1, command_index=0, command="")
    events.emit("response.shell_call_output_content.delta", item_id="sho_1", output_index=2,
                command_index=0, delta={"stdout": "a", "stderr": ""})  # fmt: skip
    events.emit("response.completed", response=response)
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    parsed = [adapter.validate_python(event) for event in sent]
    assert [e.sequence_number for e in parsed] == list(range(len(sent)))
    assert type(parsed[-1]).__name__ == "ResponseCompletedEvent"


def _upstream(url: str, timeout: float = 5.0) -> ChatUpstream:
    settings = Settings(model_base_url=url, model_api_key=SecretStr("sk-upstream-secret"),
                        model_timeout=timeout)  # fmt: skip
    return ChatUpstream(settings)


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_upstream_answer_is_parsed() -> None:
    with running(StandInModel(turns=[say("hello")])) as model:
        upstream = _upstream(model.url)
        completion = upstream.complete(BODY)
        upstream.close()
    assert completion.choices[0].message.content == "hello"
    assert model.requests == [BODY]


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("garbage", UpstreamError, "not a chat completion"),
        ("error", UpstreamError, "HTTP 500: model exploded"),
        ("slow", UpstreamTimeoutError, "did not answer within 1 s"),
        ("trickle", UpstreamTimeoutError, "did not answer within 1 s"),
        ("huge", UpstreamError, "answered more than"),
    ],
)
def test_upstream_failures_are_502_or_504(mode: str, error: type[Exception], words: str) -> None:
    with running(StandInModel(mode=mode, delay=3)) as model:
        upstream = _upstream(model.url, timeout=30 if mode == "huge" else 1)
        with pytest.raises(error) as caught:  # trickle: without the deadline, garbage (502)
            upstream.complete(BODY)
        upstream.close()
    assert words in str(caught.value)
    assert "sk-upstream-secret" not in str(caught.value)
    assert caught.value.status_code == (502 if error is UpstreamError else 504)  # type: ignore[attr-defined]


def test_upstream_down_is_502() -> None:
    upstream = _upstream(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamError) as caught:
        upstream.complete(BODY)
    assert caught.value.status_code == 502
    assert "unreachable" in caught.value.message


def test_responses_table_joins_an_old_store_file(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = sqlite3.connect(path)  # a store from before the table existed
    old.executescript(";\n".join(MIGRATIONS[0].statements))
    old.execute("INSERT INTO containers (id, project, name, status, created_at, last_active_at, "
                "memory_limit, network_policy, idle_minutes, expires_at, image, kernel_key, "
                "socket_dir, owner_pid, owner_host) VALUES ('cntr_old', 'p', 'n', 'ready', 1, 1, "
                "'1g', '{}', 20, 2, 'i', 'k', 's', 1, 'h')")  # fmt: skip
    old.commit()
    assert "responses" not in {r[0] for r in old.execute("SELECT name FROM sqlite_master")}
    old.close()
    store = Store(path)
    responses = ResponseStore(store)
    record = ResponseRecord("resp_1", "alice", 1.0, {"id": "resp_1"}, [], [{"role": "user"}], {})
    responses.put(record)
    assert responses.get("resp_1", "alice") == record
    assert responses.get("resp_1", "bob") is None
    assert not responses.delete("resp_1", "bob")
    assert responses.delete("resp_1", "alice")
    assert responses.get("resp_1", "alice") is None
    with store.reading() as db:
        assert db.execute("SELECT id FROM containers").fetchall()[0][0] == "cntr_old"
    store.close()


def test_upstream_content_parts_are_joined() -> None:
    from jupyter_sandbox.server.responses.upstream import ChatCompletion

    completion = ChatCompletion.model_validate(
        {"choices": [{"message": {"role": "assistant",
                                  "content": [{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b"}]}}]}
    )  # fmt: skip
    assert completion.choices[0].message.content == "ab"


def test_items_passed_back_become_the_chat_conversation() -> None:
    from jupyter_sandbox.server.responses.convert import to_chat, to_stored

    params = parse_create(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
                {"type": "code_interpreter_call", "id": "ci_1", "status": "completed",
                 "container_id": "cntr_a", "code": "print(1)",
                 "outputs": [{"type": "logs", "logs": "1\n"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "one",
                                                   "annotations": []}]},
                {"type": "shell_call", "call_id": "c2", "action": {"commands": ["ls"]},
                 "status": "completed", "id": "sh_1"},
                {"type": "shell_call_output", "call_id": "c2", "output": [
                    {"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
            ],
        }
    )  # fmt: skip
    items = list(params.input or [])
    chat = to_chat(items)  # type: ignore[arg-type]
    assert [m["role"] for m in chat] == [
        "system", "user", "assistant", "tool", "assistant", "assistant", "tool",
    ]  # fmt: skip
    assert chat[1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "auto"}
    }  # fmt: skip
    assert chat[2]["tool_calls"][0]["function"] == {
        "name": "code_interpreter", "arguments": '{"code": "print(1)"}'
    }  # fmt: skip
    assert chat[3] == {"role": "tool", "tool_call_id": "ci_1", "content": "1"}
    assert chat[6]["content"] == "stdout:\na\n\nstderr:\n\n[exit code 0]"
    stored = InputItemList(
        data=to_stored(items),  # type: ignore[arg-type]
        first_id="a",
        last_id="b",
        has_more=False,
    )
    parsed = ResponseItemList.model_validate(stored.model_dump(mode="json"), strict=True)
    assert [i.type for i in parsed.data] == [
        "message", "message", "code_interpreter_call", "message", "shell_call",
        "shell_call_output",
    ]  # fmt: skip
