"""examples/code_interpreter_loop.py against a scripted stand-in for a model server: a real
HTTP server that answers the official `openai` client with recorded tool calls."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionToolMessageParam
from openai.types.responses.response_input_item_param import FunctionCallOutput
from pydantic import TypeAdapter

from jupyter_sandbox import Client
from tests.conftest import TEST_LABEL, remove_labelled

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).parents[2] / "examples" / "code_interpreter_loop.py"
CODE = "import runpy; runpy.run_path('/workspace/process.py')"

Reply = Callable[[dict[str, Any]], dict[str, Any]]


def responses_script() -> list[Reply]:
    """A model that runs the script once, then reports what the tool returned."""

    def call_tool(request: dict[str, Any]) -> dict[str, Any]:
        return response_body(
            [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "code_interpreter",
                    "arguments": json.dumps({"code": CODE}),
                    "status": "completed",
                }
            ]
        )

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        result = request["input"][-1]
        text = result["output"][0]["text"] if isinstance(result["output"], list) else ""
        return response_body(
            [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": f"Result:\n{text}", "annotations": []}
                    ],
                }
            ]
        )

    return [call_tool, answer]


def response_body(output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1767225600,
        "model": "scripted",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def chat_script() -> list[Reply]:
    def call_tool(request: dict[str, Any]) -> dict[str, Any]:
        tool_call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "code_interpreter", "arguments": json.dumps({"code": CODE})},
        }
        return chat_body({"role": "assistant", "content": None, "tool_calls": [tool_call]})

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        text = request["messages"][-1]["content"]
        return chat_body({"role": "assistant", "content": f"Result:\n{text}"})

    return [call_tool, answer]


def chat_body(message: dict[str, Any]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


class ScriptedModel:
    """Serves `/v1/responses` and `/v1/chat/completions` from a script; records requests."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.requests.append((self.path, body))
                if not model.script:
                    self._send(500, {"error": {"message": "script exhausted", "type": "x"}})
                    return
                self._send(200, model.script.pop(0)(body))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedModel:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("code_interpreter_loop", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_responses_loop_runs_the_models_code(client: Client, example: ModuleType) -> None:
    with ScriptedModel(responses_script()) as model:
        openai = OpenAI(base_url=model.base_url, api_key="test", max_retries=0)
        result = example.run_example(openai, client, model="scripted", api="responses")
    assert result.tool_calls == 1
    assert "Lima" in result.text
    assert "20.25" in result.text
    assert [c.filename for c in result.citations] == ["chart.png"]
    assert [path for path, _ in model.requests] == ["/v1/responses", "/v1/responses"]
    first, second = (body for _, body in model.requests)
    assert first["tools"] == [
        {
            "type": "function",
            "name": "code_interpreter",
            "description": first["tools"][0]["description"],
            "parameters": first["tools"][0]["parameters"],
            "strict": True,
        }
    ]
    output = second["input"][-1]
    TypeAdapter(FunctionCallOutput).validate_python(output)
    assert output["call_id"] == "call_1"
    assert [part["type"] for part in output["output"]] == ["input_text", "input_image"]
    assert output["output"][1]["image_url"].startswith("data:image/png;base64,iVBOR")
    assert second["input"][-2]["type"] == "function_call"  # the model's call goes back too
    assert client.containers.list().data == []  # the example deleted its container


def test_chat_loop_runs_the_models_code(client: Client, example: ModuleType) -> None:
    with ScriptedModel(chat_script()) as model:
        openai = OpenAI(base_url=model.base_url, api_key="test", max_retries=0)
        result = example.run_example(openai, client, model="scripted", api="chat")
    assert "Lima" in result.text
    assert "20.25" in result.text
    assert "[image 1: shown to the user]" in result.text
    assert "/mnt/data/chart.png" in result.text
    second = model.requests[1][1]
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    tool_message = second["messages"][-1]
    TypeAdapter(ChatCompletionToolMessageParam).validate_python(tool_message)
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_1"


def test_the_script_runs_from_the_command_line(tmp_path: Path, test_label: str) -> None:
    env = {
        **os.environ,
        "JUPYTER_SANDBOX_HOME": str(tmp_path / "home"),
        "JUPYTER_SANDBOX_EXTRA_LABELS": json.dumps({TEST_LABEL: test_label}),
    }
    with ScriptedModel(responses_script()) as model:
        done = subprocess.run(
            [
                *(sys.executable, str(EXAMPLE), "--base-url", model.base_url),
                *("--model", "scripted", "--save", str(tmp_path / "out")),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "Lima" in done.stdout
    assert "file: chart.png (cfile_" in done.stdout
    assert (tmp_path / "out" / "chart.png").read_bytes().startswith(b"\x89PNG")
    with Client(home=tmp_path / "home") as check:
        assert check.containers.list().data == []
    assert not remove_labelled(f"{TEST_LABEL}={test_label}")
