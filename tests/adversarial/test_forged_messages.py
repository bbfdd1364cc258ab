"""Sandbox code holds its kernel's key, so it can sign any message the host reads. Each forged
shape here is sent from a cell, on iopub, answering the running request: the run goes on,
the forged message is dropped with a stderr note (or ignored), and the Execution serialises.
Over HTTP the same run answers 200 with strict JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.types.execution import Execution
from tests.adversarial.conftest import Sandboxes

pytestmark = pytest.mark.docker

# Defined in the sandbox: sign and send raw frames (header, parent, content as given).
FORGE = """
import json
_k = get_ipython().kernel
def forge(msg_type, content, *, header=None, parent=None, raw=None, sign=True):
    s = _k.session
    h = s.msg_header(msg_type) if header is None else header
    p = _k.get_parent()["header"] if parent is None else parent
    parts = [json.dumps(h, default=str).encode(), json.dumps(p, default=str).encode(), b"{}",
             content if isinstance(content, bytes) else json.dumps(content).encode()]
    frames = raw if raw is not None else [b"<IDS|MSG>", s.sign(parts) if sign else b"", *parts]
    _k.iopub_socket.send_multipart(frames)
"""
NOTE = "dropped a malformed kernel message"

# (id, the forging call, what the host must make of it)
CASES: list[tuple[str, str, str]] = [
    ("stream name evil", 'forge("stream", {"name": "evil", "text": "x"})', "note"),
    ("stream text int", 'forge("stream", {"name": "stdout", "text": 5})', "note"),
    ("stream without text", 'forge("stream", {"name": "stdout"})', "note"),
    ("content a list", 'forge("stream", [1, 2])', "note"),
    ("content a string", 'forge("display_data", "x")', "note"),
    ("content nested 100000 deep", 'forge("stream", b"[" * 100000 + b"]" * 100000)', "note"),
    ("content not JSON", 'forge("stream", b"{nope")', "note"),
    ("NaN in data", 'forge("display_data", b\'{"data": {"text/plain": NaN}}\')', "note"),
    ("1e999999 in data", 'forge("display_data", b\'{"data": {"a/b": 1e999999}}\')', "note"),
    ("10**5000 in data", 'forge("display_data", b\'{"data": {"a/b": \' + b"9" * 5000 + b"}}")',
     "note"),
    ("data a list", 'forge("display_data", {"data": [1]})', "note"),
    ("data nested 200 deep",
     'forge("display_data", {"data": {"a/b": eval("[" * 200 + "]" * 200)}})', "note"),
    ("metadata a string", 'forge("display_data", {"data": {}, "metadata": "m"})', "note"),
    ("execution_count a string",
     'forge("execute_result", {"execution_count": "3", "data": {"text/plain": "3"}})', "note"),
    ("traceback a string",
     'forge("error", {"ename": "E", "evalue": "v", "traceback": "tb"})', "note"),
    ("traceback of ints", 'forge("error", {"ename": "E", "evalue": "v", "traceback": [1]})',
     "note"),
    ("header without msg_type", 'forge("stream", {}, header={"msg_id": "x"})', "note"),
    ("header a list", 'forge("stream", {}, header=[1, 2])', "note"),
    ("msg_type a number", 'forge("stream", {}, header={"msg_id": "x", "msg_type": 7})', "note"),
    ("parent msg_id a list", 'forge("stream", {"name": "stdout", "text": "x"}, '
     'parent={"msg_id": ["x"]})', "note"),
    ("v4 header", 'forge("stream", {}, header={"msg_id": "x", "msg_type": "stream", '
     '"version": "4.0"})', "note"),
    ("no delimiter", 'forge("stream", {}, raw=[b"junk", b"more"])', "note"),
    ("unsigned", 'forge("stream", {"name": "stdout", "text": "unsigned"}, sign=False)',
     "ignored"),
    ("unknown msg_type", 'forge("evil_type", {"anything": [1]})', "ignored"),
    ("status a list", 'forge("status", {"execution_state": ["idle"]})', "ignored"),
    ("wrong parent", 'forge("stream", {"name": "evil", "text": "x"}, parent={"msg_id": "other"})',
     "ignored"),
    ("lone surrogate text", 'forge("stream", b\'{"name": "stdout", "text": "a\\\\ud800b"}\')',
     "replaced"),
]  # fmt: skip


@pytest.fixture(scope="module")
def forger(shared: Sandboxes) -> Iterator[tuple[Client, str]]:
    client = shared.client()
    container = client.containers.create(name="forger")
    execution = client.containers.execute(container.id, FORGE, timeout=60)
    assert execution.status == "ok", execution
    yield client, container.id
    client.containers.delete(container.id)


def _run(client: Client, container_id: str, call: str) -> Execution:
    code = f"print('before', flush=True)\n{call}\nimport time; time.sleep(0.2)\nprint('after')\n"
    return client.containers.execute(container_id, code, timeout=60)


@pytest.mark.parametrize(("call", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_forged_message_is_dropped_and_the_run_goes_on(
    forger: tuple[Client, str], call: str, outcome: str
) -> None:
    client, container_id = forger
    execution = _run(client, container_id, call)
    assert execution.status == "ok", (execution.message, execution.outputs)
    assert execution.stdout.startswith("before\n"), execution.outputs
    assert execution.stdout.endswith("after\n"), execution.outputs
    if outcome == "note":
        assert NOTE in execution.stderr, execution.outputs
    elif outcome == "ignored":
        assert NOTE not in execution.stderr, execution.outputs
        assert "evil" not in json.dumps(execution.model_dump(mode="json"))
    else:
        assert "a\ufffdb" in execution.stdout
    # Strict, encodable JSON: what the server sends.
    json.dumps(execution.model_dump(mode="json"), allow_nan=False).encode("utf-8")


def test_the_kernel_still_works_after_every_forgery(forger: tuple[Client, str]) -> None:
    client, container_id = forger
    calls = "\n".join(call for _, call, _ in CASES)
    execution = _run(client, container_id, calls)
    assert execution.status == "ok", execution.message
    assert execution.stderr.count(NOTE) == 1  # one note per run, however many were dropped
    again = client.containers.execute(container_id, "print(6 * 7)", timeout=60)
    assert (again.status, again.stdout) == ("ok", "42\n")


def test_forged_messages_over_http_answer_200(sandboxes: Sandboxes) -> None:
    from tests.integration.server_harness import serving

    with serving(sandboxes.home.parent / "server-home", sandboxes.label) as server:
        headers = server.headers()
        with httpx.Client(base_url=f"{server.url}/v1", headers=headers, timeout=120) as http:
            created = http.post("/containers", json={"name": "forged-http"})
            assert created.status_code == 200, created.text
            container_id = created.json()["id"]
            calls = "\n".join(call for _, call, _ in CASES)
            for stream in (False, True):
                response = http.post(
                    f"/containers/{container_id}/execute",
                    json={"code": f"{FORGE}\n{calls}\nprint('after')", "stream": stream},
                )
                assert response.status_code == 200, response.text[:500]
                assert "after" in response.text
                assert NOTE in response.text
