"""Two `serve` processes sharing one PostgreSQL store serve one fleet: a sandbox made through
one is retrieved, listed, executed, given files and deleted through the other; a key's rate
limit and a retried create are shared too; tenancy holds across both; a database restart
loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.server_harness import KEYS, RunningServer, serving
from tests.pg_cluster import PostgresCluster

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
RATE_LIMIT = 40
CAROL = "sk-carol-0123456789abcdef"  # drains her bucket; the teardown's keys keep theirs


@pytest.fixture
def servers(
    tmp_path: Path, test_label: str, postgres_url: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    # One host and state folder (the kernels' sockets and files live there until the
    # multi-node backend); two processes, each with its own port and connections.
    home = tmp_path / "home"
    keys = ",".join(f"{p}:{k}" for p, k in {**KEYS, "carol": CAROL}.items())
    shared = {"store_url": postgres_url, "server_rate_limit": RATE_LIMIT, "api_keys": keys}
    with serving(home, test_label, **shared) as one, serving(home, test_label, **shared) as two:
        yield one, two


def test_one_fleet_through_two_servers(servers: tuple[RunningServer, RunningServer]) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    created = a.containers.create(name="shared")
    assert b.containers.retrieve(created.id).name == "shared"
    assert created.id in [c.id for c in b.containers.list()]
    with pytest.raises(openai.NotFoundError):  # another tenant, on either server
        two.sdk("bob", max_retries=0).containers.retrieve(created.id)

    execution = b.post(
        f"/containers/{created.id}/execute", body={"code": "x = 41\nprint(x + 1)"}, cast_to=dict
    )
    assert (execution["status"], execution["stdout"]) == ("ok", "42\n")
    again = a.post(f"/containers/{created.id}/execute", body={"code": "print(x)"}, cast_to=dict)
    assert again["stdout"] == "41\n"  # the same kernel, whichever server relays

    uploaded = b.containers.files.create(created.id, file=("notes.txt", b"hello"))
    assert [f.path for f in a.containers.files.list(created.id)] == [uploaded.path]
    assert a.containers.files.content.retrieve(uploaded.id, container_id=created.id).read() == (
        b"hello"
    )

    b.containers.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        a.containers.retrieve(created.id)
    assert created.id not in [c.id for c in a.containers.list()]


def test_a_retried_create_on_the_other_server_returns_the_first(
    servers: tuple[RunningServer, RunningServer],
) -> None:
    one, two = servers
    body = {"name": "retried"}
    first = httpx.post(
        f"{one.url}/v1/containers", json=body, headers=one.headers(), timeout=120
    ).json()
    retry = httpx.post(
        f"{two.url}/v1/containers",
        json=body,
        headers={**two.headers(), "X-Stainless-Retry-Count": "1"},
        timeout=120,
    ).json()
    assert retry["id"] == first["id"]
    assert [c.id for c in two.sdk(max_retries=0).containers.list()] == [first["id"]]


def test_a_key_has_one_rate_limit_across_servers(
    servers: tuple[RunningServer, RunningServer],
) -> None:
    started = time.monotonic()
    accepted = 0
    with httpx.Client(timeout=30) as http:
        for turn in range(3 * RATE_LIMIT):
            server = servers[turn % 2]
            answer = http.get(
                f"{server.url}/v1/containers", headers={"Authorization": f"Bearer {CAROL}"}
            )
            if answer.status_code == 429:
                break
            assert answer.status_code == 200
            accepted += 1
    refilled = (time.monotonic() - started) * RATE_LIMIT / 60
    # Separate buckets would have let about twice the limit through.
    assert RATE_LIMIT <= accepted <= RATE_LIMIT + refilled + 1


def test_servers_reconnect_after_a_database_restart_and_lose_nothing(
    servers: tuple[RunningServer, RunningServer], postgres_cluster: PostgresCluster
) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    created = a.containers.create(name="before-restart")
    uploaded = a.containers.files.create(created.id, file=("kept.txt", b"kept"))
    postgres_cluster.restart()  # every server's connections are dropped
    assert b.containers.retrieve(created.id).status == "ready"
    assert [f.id for f in b.containers.files.list(created.id)] == [uploaded.id]
    after = a.containers.create(name="after-restart")
    assert {c.id for c in b.containers.list()} == {created.id, after.id}
    b.containers.delete(created.id)
    b.containers.delete(after.id)
    assert list(a.containers.list()) == []
