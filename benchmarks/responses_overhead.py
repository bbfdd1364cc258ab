"""What `/v1/responses` adds per tool call, excluding the model: a response with one
code_interpreter call (stand-in model answering instantly) beside the same code run through
the execute route, in one run on one server and one sandbox.

Per round: (a) `POST /containers/{id}/execute`; (b) `responses.create` whose model calls the
tool once, then answers; (c) the two model round trips alone, straight to the stand-in.
Overhead per tool call = b - a - c. Usage: `python benchmarks/responses_overhead.py
[--rounds 30]`. Every Docker object carries a run label and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from openai import OpenAI

LABEL = "org.jupyter-sandbox.bench"
KEY = "sk-bench-" + uuid4().hex
CODE = "sum(range(1000))"


class StandIn(BaseHTTPRequestHandler):
    """Chat completions, instantly: a code_interpreter call, then (after the tool's answer)
    a message."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        answered = body["messages"][-1]["role"] == "tool"
        if answered:
            message: dict[str, Any] = {"role": "assistant", "content": "done"}
        else:
            arguments = json.dumps({"code": CODE})
            call = {"id": f"call_{uuid4().hex[:8]}", "type": "function",
                    "function": {"name": "code_interpreter", "arguments": arguments}}  # fmt: skip
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        reply = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "stop" if answered else "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(home: Path, port: int, label: str, model_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    env.update(
        JUPYTER_SANDBOX_HOME=str(home),
        JUPYTER_SANDBOX_API_KEYS=f"bench:{KEY}",
        JUPYTER_SANDBOX_EXTRA_LABELS=json.dumps({LABEL: label}),
        JUPYTER_SANDBOX_SERVER_RATE_LIMIT="0",
        JUPYTER_SANDBOX_MODEL_BASE_URL=model_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-c", "from jupyter_sandbox.cli import main; main()",
         "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    for raw in process.stderr:
        if b"serving" in raw:
            break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("server exited") from None
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Each call once per round, in turn, so load on the machine hits them alike."""
    for call in calls.values():
        call()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    label = f"run-{uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="jsbx-resp-"))
    model = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    model_url = f"http://127.0.0.1:{model.server_address[1]}/v1"
    port = free_port()
    server = start_server(scratch / "home", port, label, model_url)
    results: dict[str, list[float]] = {}
    try:
        with OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY) as sdk:
            container = sdk.containers.create(name="bench")
            tool = {"type": "code_interpreter", "container": container.id}

            def execute() -> None:
                sdk.post(f"/containers/{container.id}/execute", body={"code": CODE}, cast_to=dict)

            def respond() -> None:
                response = sdk.responses.create(model="m", input="go", tools=[tool])  # type: ignore[list-item]
                assert response.output_text == "done", response

            with httpx.Client() as http:
                turn = {"model": "m", "messages": [{"role": "user", "content": "go"}]}
                answer = {"model": "m", "messages": [{"role": "tool", "content": "x"}]}

                def model_only() -> None:
                    http.post(f"{model_url}/chat/completions", json=turn).raise_for_status()
                    http.post(f"{model_url}/chat/completions", json=answer).raise_for_status()

                results = interleaved(
                    {
                        "execute route": execute,
                        "responses.create, 1 tool call": respond,
                        "2 model turns alone": model_only,
                    },
                    args.rounds,
                )
            sdk.containers.delete(container.id)
    finally:
        server.terminate()
        server.wait(30)
        if server.stderr is not None:
            server.stderr.close()
        model.shutdown()
        leftovers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}={label}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        for leftover in leftovers:
            subprocess.run(["docker", "rm", "-fv", leftover], capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.rounds} rounds of `{CODE}` in one sandbox; {os.cpu_count()} CPUs\n")
    print("| path | n | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for name, values in results.items():
        p50, p95 = percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000
        print(f"| {name} | {len(values)} | {p50:.1f} | {p95:.1f} |")
    p50 = {name: percentile(values, 0.5) * 1000 for name, values in results.items()}
    overhead = (
        p50["responses.create, 1 tool call"] - p50["execute route"] - p50["2 model turns alone"]
    )
    print(f"\nOverhead per tool call, model excluded (p50): {overhead:.1f} ms")


if __name__ == "__main__":
    main()
