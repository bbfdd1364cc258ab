"""The server process on the real engine: restarts, retried creates, quotas, streaming, expiry."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from tests.conftest import wait_until
from tests.integration.server_harness import RunningServer, serving

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, test_label: str) -> Iterator[RunningServer]:
    with serving(tmp_path / "home", test_label) as running:
        yield running


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_restart_loses_nothing_and_reattaches(server: RunningServer, how: int) -> None:
    client = server.sdk()
    container = client.containers.create(name="survivor")
    data = client.files.create(file=("kept.txt", b"kept"), purpose="user_data")
    cfile = client.containers.files.create(container.id, file_id=data.id)
    run = client.post(
        f"/containers/{container.id}/execute",
        body={"code": "x = 41"},
        cast_to=dict,
    )
    assert run["status"] == "ok"

    server.restart(how)

    again = server.sdk()
    assert again.containers.retrieve(container.id).status == "ready"
    assert [c.id for c in again.containers.list()] == [container.id]
    assert again.files.retrieve(data.id).bytes == 4
    assert (
        again.containers.files.content.retrieve(cfile.id, container_id=container.id).content
        == b"kept"
    )
    answer = again.post(
        f"/containers/{container.id}/execute",
        body={"code": "x + 1"},
        cast_to=dict,
    )
    assert answer["outputs"][0]["data"]["text/plain"] == "42"  # same kernel, reattached


def test_a_retried_create_returns_the_first_container(server: RunningServer) -> None:
    body = {"name": "retried", "memory_limit": "1g"}
    with httpx.Client(base_url=f"{server.url}/v1", headers=server.headers(), timeout=60) as http:
        first = http.post("/containers", json=body, headers={"x-stainless-retry-count": "0"})
        retried = http.post("/containers", json=body, headers={"x-stainless-retry-count": "1"})
        fresh = http.post("/containers", json=body)  # no retry header: a new sandbox
        other = http.post(  # a retry by another tenant never sees alice's attempt
            "/containers",
            json=body,
            headers={**server.headers("bob"), "x-stainless-retry-count": "1"},
        )
    assert first.status_code == retried.status_code == fresh.status_code == 200
    assert retried.json()["id"] == first.json()["id"]
    assert fresh.json()["id"] != first.json()["id"]
    assert other.json()["id"] not in (first.json()["id"], fresh.json()["id"])
    assert len(list(server.sdk().containers.list())) == 2


def test_live_sandbox_quota_is_429(tmp_path: Path, test_label: str) -> None:
    with serving(tmp_path / "home", test_label, server_max_live_sandboxes=1) as server:
        client = server.sdk()
        first = client.containers.create(name="one")
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as caught:
            client.containers.create(name="two")
        assert time.monotonic() - started < 5  # retry-after is minutes away: the SDK gives up
        response = caught.value.response
        assert caught.value.code == "insufficient_quota"
        assert response.headers["x-should-retry"] == "false"
        assert 60 < int(response.headers["retry-after"]) <= 20 * 60
        server.sdk("bob").containers.create(name="bobs-own")  # quotas are per project
        client.containers.delete(first.id)
        client.containers.create(name="two")


def test_execute_streams_outputs_as_events(server: RunningServer) -> None:
    client = server.sdk()
    container = client.containers.create(name="streamer")
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)\n1/0"
    events: list[tuple[str, dict[str, object], float]] = []
    with (
        httpx.Client(base_url=f"{server.url}/v1", headers=server.headers(), timeout=60) as http,
        http.stream(
            "POST", f"/containers/{container.id}/execute", json={"code": code, "stream": True}
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:]), time.monotonic()))
    names = [name for name, _, _ in events]
    assert names == ["output", "output", "output", "output", "done"]
    assert [data.get("text") for _, data, _ in events[:3]] == ["0\n", "1\n", "2\n"]
    assert events[2][2] - events[0][2] > 0.4  # they arrived as printed, not at the end
    assert events[3][1]["ename"] == "ZeroDivisionError"
    done = events[-1][1]
    assert (done["status"], done["stdout"]) == ("error", "0\n1\n2\n")


def test_execute_errors_are_not_retried(server: RunningServer) -> None:
    with httpx.Client(base_url=f"{server.url}/v1", headers=server.headers(), timeout=60) as http:
        missing = http.post("/containers/cntr_nope/execute", json={"code": "1"})
        assert missing.status_code == 404
        assert missing.headers["x-should-retry"] == "false"
        streamed = http.post("/containers/cntr_nope/execute", json={"code": "1", "stream": True})
        assert streamed.status_code == 404
        assert streamed.json()["error"]["param"] == "container_id"
        bad = http.post("/containers/cntr_nope/execute", json={"code": 1})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "code"


def test_the_server_sweeps_expiry_without_requests(tmp_path: Path, test_label: str) -> None:
    home = tmp_path / "home"
    with serving(home, test_label, server_sweep_interval=0.5) as server:
        container = server.sdk().containers.create(name="short", extra_body={"lifetime_seconds": 5})
        store = Store(home / "store.sqlite3")
        try:
            wait_until(  # no API call: only the sweeper acts
                lambda: getattr(store.get(container.id), "status", None) == "expired",
                30,
                interval=0.2,
                what=f"the sweeper to expire {container.id}",
            )
        finally:
            store.close()
        assert server.sdk().containers.retrieve(container.id).status == "expired"


def test_long_runs_do_not_block_other_requests(server: RunningServer) -> None:
    client = server.sdk()
    busy = client.containers.create(name="busy")
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(
            client.post,
            f"/containers/{busy.id}/execute",
            body={"code": "import time; time.sleep(6); 'slept'"},
            cast_to=dict,
        )
        creating = [pool.submit(client.containers.create, name=f"parallel-{n}") for n in range(2)]
        started = time.monotonic()
        assert client.containers.retrieve(busy.id).status == "ready"
        assert time.monotonic() - started < 1.0  # answered while the kernel sleeps
        created = [future.result(60).id for future in creating]
        assert not running.done()  # both creates finished during the 6 s run
        assert running.result(60)["outputs"][0]["data"]["text/plain"] == "'slept'"
    assert len(set(created)) == 2
    assert {c.id for c in client.containers.list()} == {busy.id, *created}


@pytest.fixture
def image_server(tmp_path: Path, test_label: str) -> Iterator[RunningServer]:
    """`server`, on the kernel image this test run uses (`JUPYTER_SANDBOX_IMAGE` if set)."""
    image = os.environ.get("JUPYTER_SANDBOX_IMAGE")
    with serving(tmp_path / "home", test_label, **({"image": image} if image else {})) as running:
        yield running


def test_snapshots_over_http_fork_and_keep_tenants_apart(image_server: RunningServer) -> None:
    server = image_server
    alice, bob = server.sdk(), server.sdk("bob")
    source = alice.containers.create(name="source")
    run = alice.post(f"/containers/{source.id}/execute", body={"code": "x = 41"}, cast_to=dict)
    assert run["status"] == "ok"
    snapshot = alice.post(f"/containers/{source.id}/snapshots", body={"name": "s"}, cast_to=dict)
    assert snapshot["object"] == "container.snapshot"
    assert snapshot["report"]["variables"] == ["x"]
    path = f"/containers/{source.id}/snapshots"
    listed = alice.get(path, cast_to=dict)
    assert [s["id"] for s in listed["data"]] == [snapshot["id"]]
    assert alice.get(f"{path}/{snapshot['id']}", cast_to=dict) == snapshot
    with pytest.raises(openai.NotFoundError):
        bob.get(f"{path}/{snapshot['id']}", cast_to=dict)
    with pytest.raises(openai.NotFoundError):
        bob.containers.create(name="steal", extra_body={"snapshot_id": snapshot["id"]})
    with pytest.raises(openai.BadRequestError):
        alice.post(path, body={"unknown": 1}, cast_to=dict)
    fork = alice.containers.create(name="fork", extra_body={"snapshot_id": snapshot["id"]})
    answer = alice.post(f"/containers/{fork.id}/execute", body={"code": "x + 1"}, cast_to=dict)
    assert answer["outputs"][0]["data"]["text/plain"] == "42"
    deleted = alice.delete(f"{path}/{snapshot['id']}", cast_to=dict)
    assert deleted == {
        "id": snapshot["id"],
        "object": "container.snapshot.deleted",
        "deleted": True,
    }
    assert alice.get(path, cast_to=dict)["data"] == []
