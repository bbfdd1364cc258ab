"""`/v1/responses` on a real `serve`, driven by the official openai SDK, with a stand-in model
server (real HTTP, the chat completions protocol) that calls the offered tools."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response as SDKResponse

from tests.conftest import EGRESS_IMAGE
from tests.integration.model_stub import StandInModel, running, say, tool_call
from tests.integration.server_harness import KEYS, RunningServer, free_port, serving

pytestmark = pytest.mark.docker

AUTO = {"type": "code_interpreter", "container": {"type": "auto"}}
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def model() -> Iterator[StandInModel]:
    with running(StandInModel()) as stand_in:
        yield stand_in


@pytest.fixture
def server(tmp_path: Path, test_label: str, model: StandInModel) -> Iterator[RunningServer]:
    with serving(
        tmp_path / "home",
        test_label,
        model_base_url=model.url,
        model_map=json.dumps({"gpt-4": "stand-in"}),
        model_timeout=3,
    ) as running_server:
        try:
            yield running_server
        finally:
            print("".join(running_server.log[-80:]))  # shown when the test fails


def _has_egress_image() -> bool:
    probe = ["docker", "image", "inspect", EGRESS_IMAGE]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _strict(server: RunningServer, response_id: str) -> SDKResponse:
    """The stored response as raw JSON, validated strictly by the SDK's model."""
    raw = httpx.get(f"{server.url}/v1/responses/{response_id}", headers=server.headers())
    raw.raise_for_status()
    return SDKResponse.model_validate(raw.json(), strict=True)


def test_seed_complete_example(server: RunningServer, model: StandInModel, tmp_path: Path) -> None:
    """The seed's complete example, in Python with the official SDK; only base_url changed."""
    client = server.sdk()
    data = client.files.create(file=("data.csv", b"city,temp\nOslo,3\n"), purpose="user_data")
    policy = {"type": "allowlist", "domains": ["api.weatherapi.com"]}
    if not _has_egress_image():  # the allowlist needs the egress proxy (tested elsewhere)
        policy = {"type": "disabled"}
    container = client.containers.create(
        name="data-processor",
        memory_limit="2g",  # type: ignore[arg-type]  # a seed tier the SDK's Literal lacks
        network_policy=policy,  # type: ignore[arg-type]  # the seed's spelling
        file_ids=[data.id],
    )
    script = tmp_path / "process.py"
    script.write_text("import csv\nrows = list(csv.DictReader(open('/mnt/data/data.csv')))\n")
    with script.open("rb") as handle:
        uploaded = client.containers.files.create(
            container.id, file=handle, extra_body={"path": "/workspace/process.py"}
        )
    assert uploaded.path == "/workspace/process.py"

    code = (
        "exec(open('/workspace/process.py').read())\n"
        "open('/mnt/data/summary.txt', 'w').write(rows[0]['city'])\n"
        "print(rows[0]['city'])"
    )
    model.turns = [tool_call("code_interpreter", code=code), say("First city: {tool}")]
    response = client.responses.create(
        model="gpt-4",
        input="Process the uploaded data",
        tools=[{"type": "code_interpreter", "container": {"container_id": container.id}}],  # type: ignore[list-item,typeddict-item]
    )
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "code_interpreter_call"
    assert (call.container_id, call.status, call.code) == (container.id, "completed", code)
    assert call.outputs is not None
    assert [(o.type, getattr(o, "logs", None)) for o in call.outputs] == [("logs", "Oslo\n")]
    assert message.type == "message"
    assert response.output_text == "First city: Oslo\n[files written: /mnt/data/summary.txt]"
    (annotation,) = message.content[0].annotations  # type: ignore[union-attr]
    assert annotation.type == "container_file_citation"
    assert (annotation.container_id, annotation.filename) == (container.id, "summary.txt")
    text = response.output_text
    assert text[annotation.start_index : annotation.end_index] == "summary.txt"
    cited = client.containers.files.content.retrieve(annotation.file_id, container_id=container.id)
    assert cited.content == b"Oslo"

    # the model was really asked, with the tool, and read the tool's answer
    first, second = model.requests
    assert first["model"] == "stand-in"
    assert [t["function"]["name"] for t in first["tools"]] == ["code_interpreter"]
    assert first["messages"] == [{"role": "user", "content": "Process the uploaded data"}]
    assert second["messages"][-1]["role"] == "tool"
    assert "Oslo" in second["messages"][-1]["content"]
    assert response.usage is not None
    assert response.usage.total_tokens == 30

    stored = _strict(server, response.id)
    assert stored.id == response.id
    assert stored.tools[0].container == container.id  # type: ignore[union-attr]
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)

    # Cleanup
    client.containers.delete(container.id)
    client.files.delete(data.id)


EXPECTED_STREAM = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
    "response.output_item.done",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_stream_then_previous_response_continues_in_the_same_container(
    server: RunningServer, model: StandInModel
) -> None:
    client = server.sdk()
    model.turns = [tool_call("code_interpreter", code="x = 6 * 7\nprint(x)"), say("{tool}")]
    events = list(
        client.responses.create(model="gpt-4", input="compute", tools=[AUTO], stream=True)  # type: ignore[list-item]
    )
    assert [e.type for e in events] == EXPECTED_STREAM
    assert [e.sequence_number for e in events] == list(range(len(events)))
    first = events[-1].response  # type: ignore[union-attr]
    assert first.output_text == "42"
    container_id = first.output[0].container_id  # type: ignore[union-attr]
    assert _strict(server, first.id).status == "completed"

    show = (
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{PIXEL}')))\nprint(x + 1)"
    )
    model.turns = [tool_call("code_interpreter", code=show), say("{tool}")]
    second = client.responses.create(
        model="gpt-4",
        input="and one more",
        tools=[AUTO],  # type: ignore[list-item]
        previous_response_id=first.id,
        instructions="Be brief.",
    )
    assert second.output_text == "43\n[image 1: shown to the user]"  # x kept: same sandbox
    outputs = second.output[0].outputs  # type: ignore[union-attr]
    assert [o.type for o in outputs] == ["image", "logs"]
    assert outputs[0].url == f"data:image/png;base64,{PIXEL}"
    assert second.output[0].container_id == container_id  # type: ignore[union-attr]
    assert second.previous_response_id == first.id
    sent = model.requests[-2]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in sent[1:]] == ["user", "assistant", "tool", "assistant", "user"]
    with pytest.raises(openai.NotFoundError) as caught:
        server.sdk("bob").responses.create(model="gpt-4", input="x", previous_response_id=first.id)
    assert caught.value.param == "previous_response_id"


def test_shell_tool(server: RunningServer, model: StandInModel) -> None:
    client = server.sdk()
    model.turns = [
        tool_call("shell", commands=["echo hello; echo oops >&2", "exit 3"]),
        say("{tool}"),
    ]
    response = client.responses.create(
        model="gpt-4",
        input="run it",
        tools=[{"type": "shell", "environment": {"type": "container_auto"}}],
    )
    call, output, _message = response.output
    assert call.type == "shell_call"
    assert call.action.commands == ["echo hello; echo oops >&2", "exit 3"]
    assert call.environment is not None
    assert call.environment.type == "container_reference"
    assert output.type == "shell_call_output"
    assert output.call_id == call.call_id
    assert [(o.stdout, o.stderr, o.outcome.type) for o in output.output] == [
        ("hello\n", "oops\n", "exit"),
        ("", "", "exit"),
    ]
    assert [o.outcome.exit_code for o in output.output] == [0, 3]  # type: ignore[union-attr]
    assert "hello" in response.output_text
    assert "exit code 3" in response.output_text
    _strict(server, response.id)

    # the runner's own words in a command are data, never code (parameters are a literal)
    words = "COMMANDS TIMEOUT LIMIT MARKER ''' \"\"\" __jsbx_shell_result__[[1]]"
    model.turns = [tool_call("shell", commands=[f"cat <<'EOF'\n{words}\nEOF"]), say("{tool}")]
    tricky = client.responses.create(model="gpt-4", input="tricky", tools=[{"type": "shell"}])
    assert tricky.output[1].output[0].stdout == words + "\n"  # type: ignore[union-attr]

    # the same sandbox by reference, streamed
    container_id = call.environment.container_id  # type: ignore[union-attr]
    model.turns = [tool_call("shell", commands=["cat /proc/1/comm; pwd"]), say("{tool}")]
    events = list(
        client.responses.create(
            model="gpt-4",
            input="again",
            tools=[{"type": "shell",
                    "environment": {"type": "container_reference", "container_id": container_id}}],
            stream=True,
        )
    )  # fmt: skip
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[3:6] == [
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
    ]
    assert "response.shell_call_output_content.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert "/mnt/data" in events[-1].response.output_text  # type: ignore[union-attr]


def test_function_tool_comes_back_and_the_conversation_continues(
    server: RunningServer, model: StandInModel
) -> None:
    client = server.sdk()
    city = {"type": "object", "properties": {"city": {"type": "string"}}}
    weather = {"type": "function", "name": "get_weather", "parameters": city}
    model.turns = [tool_call("get_weather", city="Oslo")]
    first = client.responses.create(model="gpt-4", input="weather?", tools=[weather])  # type: ignore[list-item]
    (call,) = first.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4", input="well?", previous_response_id=first.id)
    assert caught.value.param == "input"

    model.turns = [say("It is {tool}")]
    second = client.responses.create(
        model="gpt-4",
        previous_response_id=first.id,
        input=[
            {"role": "user", "content": "here you are"},
            {"type": "function_call_output", "call_id": call.call_id, "output": "3 C"},
        ],
        tools=[weather],  # type: ignore[list-item]
    )
    assert second.output_text == "It is 3 C"
    # the answer went right after the call, whatever its place in the input
    sent = model.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    items = client.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data] == ["message", "function_call_output"]


def test_tool_call_cap_gives_incomplete(tmp_path: Path, test_label: str) -> None:
    turns = [tool_call("code_interpreter", code=f"print({n})") for n in range(5)]
    with (
        running(StandInModel(turns=turns)) as model,
        serving(tmp_path / "home", test_label, model_base_url=model.url,
                responses_max_tool_calls=2) as server,
    ):  # fmt: skip
        response = server.sdk().responses.create(model="m", input="loop", tools=[AUTO])  # type: ignore[list-item]
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_messages"
        assert [i.type for i in response.output] == ["code_interpreter_call"] * 2
        _strict(server, response.id)


def test_bad_input_and_upstream_failures(server: RunningServer, model: StandInModel) -> None:
    client = server.sdk(max_retries=0)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "user"}]}, "input[0].content"),
        ({"tools": [{"type": "code_interpreter", "container": "cntr_nope"}]}, "tools[0].container"),
    ]
    for extra, param in cases:
        body = {"model": "gpt-4", "input": "x", **extra}
        with pytest.raises(openai.APIStatusError) as caught:
            client.post("/responses", body=body, cast_to=dict)
        assert caught.value.status_code in (400, 404)
        assert caught.value.body["param"] == param  # type: ignore[index]
    assert model.requests == []  # refused before the model was asked

    for mode, status, words in [
        ("garbage", 502, "not a chat completion"),
        ("error", 502, "model exploded"),
        ("slow", 504, "did not answer within 3 s"),
    ]:
        model.mode, model.delay = mode, 6
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model="gpt-4", input="x")
        assert caught.value.status_code == status
        assert words in caught.value.message

    model.mode = "garbage"  # streamed: the failure is the last event
    events = list(client.responses.create(model="gpt-4", input="x", stream=True))
    assert [e.type for e in events] == ["response.created", "response.in_progress",
                                        "response.failed"]  # fmt: skip
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed"
    assert failed.error is not None
    assert "not a chat completion" in failed.error.message


def test_upstream_down_is_502(tmp_path: Path, test_label: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with serving(tmp_path / "home", test_label, model_base_url=nowhere) as server:
        with pytest.raises(openai.APIStatusError) as caught:
            server.sdk(max_retries=0).responses.create(model="m", input="x")
        assert caught.value.status_code == 502
        assert "unreachable" in caught.value.message


def test_sandbox_killed_mid_call_fails_the_call_not_the_response(
    server: RunningServer, model: StandInModel
) -> None:
    code = "import time\nprint('start', flush=True)\ntime.sleep(120)"
    model.turns = [tool_call("code_interpreter", code=code), say("Tool said: {tool}")]
    stream = server.sdk().responses.create(model="gpt-4", input="x", tools=[AUTO], stream=True)  # type: ignore[list-item]
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if (
            event.type == "response.output_item.added"
            and event.item.type == "code_interpreter_call"
        ):
            container_id = event.item.container_id
        if event.type == "response.code_interpreter_call.interpreting":
            subprocess.run(["docker", "kill", f"jsbx-{container_id}"], check=True,
                           capture_output=True)  # fmt: skip
        last = event
    assert kinds[-1] == "response.completed"
    response = last.response  # type: ignore[union-attr]
    call = response.output[0]
    assert call.type == "code_interpreter_call"
    assert call.status == "failed"
    assert "Tool said:" in response.output_text
    assert "status: failed" in response.output_text or "failed" in response.output_text


def test_example_script(server: RunningServer, model: StandInModel) -> None:
    """examples/seed_responses.py, run as a user would, prints the code's output and answer."""
    code = "exec(open('/workspace/process.py').read())"
    model.turns = [tool_call("code_interpreter", code=code), say("Done: {tool}")]
    script = Path(__file__).parents[2] / "examples" / "seed_responses.py"
    run = subprocess.run(
        [sys.executable, str(script), "--base-url", f"{server.url}/v1",
         "--api-key", KEYS["alice"]],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "code_interpreter_call (completed)" in run.stdout
    assert "{'Oslo': 3.0, 'Lima': 19.0}" in run.stdout
    assert "message: Done: {'Oslo': 3.0, 'Lima': 19.0}" in run.stdout
    assert list(server.sdk().containers.list()) == []
