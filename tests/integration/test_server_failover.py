"""Two `serve` processes over one PostgreSQL store when things break: one server killed
mid-traffic leaves every sandbox to the other and nothing behind; a database restart gets a
clear 503 with Retry-After (never a hang or a 500) and loses nothing; the two servers' sweeps
and reconciles end each sandbox once and never one that is still in use."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import TEST_LABEL, wait_until
from tests.integration.server_harness import RunningServer, serving
from tests.pg_cluster import PostgresCluster

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(600)]

SWEEP = 0.5
"""Seconds between sweeps; each server reconciles on its first sweep and every 30th (15 s)."""


@pytest.fixture
def servers(
    tmp_path: Path, test_label: str, postgres_url: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    home = tmp_path / "home"  # one host: the kernels' sockets are in this shared folder
    shared = {"store_url": postgres_url, "server_sweep_interval": SWEEP, "server_rate_limit": 0}
    with serving(home, test_label, **shared) as one, serving(home, test_label, **shared) as two:
        yield one, two


def execute(client: openai.OpenAI, container_id: str, code: str) -> dict[str, object]:
    result: dict[str, object] = client.post(
        f"/containers/{container_id}/execute", body={"code": code}, cast_to=dict
    )
    return result


def sandbox_containers(label: str) -> set[str]:
    """The sandbox ids whose containers carry the test label (egress proxies aside)."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={label}",
         "--format", '{{.Label "org.jupyter-sandbox.container-id"}}'],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return set(listed)


def test_a_killed_server_leaves_every_sandbox_to_the_other_and_nothing_behind(
    servers: tuple[RunningServer, RunningServer], test_label: str
) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    boxes = [a.containers.create(name=f"a{i}") for i in range(2)]
    boxes += [b.containers.create(name=f"b{i}") for i in range(2)]
    for index, box in enumerate(boxes):
        execute(a if index % 2 else b, box.id, f"state = {index}")

    # Traffic through the doomed server: executions on every sandbox, and creates.
    stop = threading.Event()
    failures: list[BaseException] = []
    created_by_one: list[str] = []

    def traffic() -> None:
        turn = 0
        while not stop.is_set():
            try:
                if turn % 3 == 2:
                    created_by_one.append(a.containers.create(name=f"late{turn}").id)
                else:
                    execute(a, boxes[turn % len(boxes)].id, "import time; time.sleep(0.05)")
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                failures.append(exc)  # the server died under this request
                return
            turn += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    wait_until(lambda: len(created_by_one) >= 1, 120, what="traffic through the first server")
    one.stop(signal.SIGKILL)
    stop.set()
    worker.join(60)
    assert not worker.is_alive()

    # The survivor serves every sandbox, the dead server's included, with its state.
    for index, box in enumerate(boxes):
        assert execute(b, box.id, "print(state)")["stdout"] == f"{index}\n"
        uploaded = b.containers.files.create(box.id, file=("after.txt", b"survived"))
        content = b.containers.files.content.retrieve(uploaded.id, container_id=box.id)
        assert content.read() == b"survived"
    for late in created_by_one:
        assert execute(b, late, "print(1 + 1)")["stdout"] == "2\n"

    # Nothing leaks: a create the kill interrupted is failed by the survivor's reconcile and
    # its container removed; every remaining container belongs to a listed sandbox.
    def settled() -> bool:
        listed = {c.id for c in b.containers.list(limit=100)}
        return sandbox_containers(f"{TEST_LABEL}={test_label}") == listed

    wait_until(settled, 90, interval=1.0, what="the survivor's reconcile")
    listed = {c.id for c in b.containers.list(limit=100)}
    assert {box.id for box in boxes} | set(created_by_one) <= listed


def test_requests_during_a_database_outage_get_503_with_retry_after_and_nothing_is_lost(
    servers: tuple[RunningServer, RunningServer], postgres_cluster: PostgresCluster
) -> None:
    one, two = servers
    a = one.sdk(max_retries=0)
    box = a.containers.create(name="kept")
    execute(a, box.id, "kept = 'yes'")
    uploaded = a.containers.files.create(box.id, file=("kept.txt", b"kept"))

    requests = [
        ("GET", "/v1/containers", None),
        ("GET", f"/v1/containers/{box.id}", None),
        ("POST", f"/v1/containers/{box.id}/execute", {"code": "print(kept)"}),
        ("POST", "/v1/containers", {"name": "during-outage"}),
        ("DELETE", f"/v1/containers/{box.id}", None),
    ]
    postgres_cluster.stop()
    try:
        with httpx.Client(timeout=30) as http:
            for server in (one, two):
                for method, path, body in requests:
                    started = time.monotonic()
                    answer = http.request(
                        method, server.url + path, json=body, headers=server.headers()
                    )
                    assert time.monotonic() - started < 15, (method, path)
                    assert answer.status_code == 503, (method, path, answer.text)
                    assert int(answer.headers["retry-after"]) >= 1
                    error = answer.json()["error"]
                    assert error["code"] == "store_unavailable"
                    assert str(postgres_cluster.port) not in error["message"]
    finally:
        postgres_cluster.start()

    b = two.sdk(max_retries=0)
    assert b.containers.retrieve(box.id).status == "ready"
    assert execute(b, box.id, "print(kept)")["stdout"] == "yes\n"
    assert [f.id for f in b.containers.files.list(box.id)] == [uploaded.id]
    assert [c.id for c in a.containers.list()] == [box.id]  # the refused create made nothing
    for server in (one, two):  # neither logged a 500 for it
        assert not [line for line in server.log if " 500 " in line]


def test_two_servers_end_each_sandbox_once_and_spare_the_ones_in_use(
    servers: tuple[RunningServer, RunningServer], test_label: str
) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    short = [
        client.containers.create(name=f"short{i}", extra_body={"lifetime_seconds": 6})
        for i, client in enumerate((a, b, a, b))
    ]
    kept = [a.containers.create(name="kept-a"), b.containers.create(name="kept-b")]

    def all_ended() -> bool:
        return all(
            b.containers.retrieve(s.id).status not in ("ready", "initializing") for s in short
        )

    wait_until(all_ended, 90, interval=0.5, what="the short sandboxes to end")
    for box in short:
        assert b.containers.retrieve(box.id).status == "expired"
        # Exactly one server ended it: its sweep, its reconcile, or a call that found the
        # container gone after its own deadline (reconcile logs each line twice: count servers).
        enders = [
            server
            for server in (one, two)
            if any(
                re.search(rf"(expired sandbox|marked gone) {box.id}\b|sandbox {box.id}: ", line)
                for line in server.log
            )
        ]
        assert len(enders) == 1, (box.id, [s.port for s in enders])
    # Both servers reconciled meanwhile; the sandboxes in use stay, served by both.
    for box in kept:
        assert a.containers.retrieve(box.id).status == "ready"
        assert execute(a, box.id, "print('a')")["stdout"] == "a\n"
        assert execute(b, box.id, "print('b')")["stdout"] == "b\n"
    assert sandbox_containers(f"{TEST_LABEL}={test_label}") == {box.id for box in kept}
