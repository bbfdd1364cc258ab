"""Idle pause (issue 18): an idle sandbox with `idle_action="pause"` is frozen, not ended; its
next execute or file call resumes it with its state; its hard lifetime still ends it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox._exceptions import BadRequestError, ConflictError

pytestmark = pytest.mark.docker


def engine_state(client: Client, container_id: str) -> str:
    """What Docker says: `paused`, `running`, or `gone`."""
    probe = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", f"jsbx-{container_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else "gone"


def make_idle(client: Client, container_id: str) -> None:
    """Move its last use past its idle limit (the sweep's only input)."""
    client._store.update(container_id, last_active_at=time.time() - 3600)


def test_an_idle_sandbox_with_the_pause_policy_keeps_its_state_and_answers(
    client: Client,
) -> None:
    container = client.containers.create(name="pausing", idle_action="pause")
    try:
        client.containers.execute(container.id, "x = 41")
        make_idle(client, container.id)
        assert client._expiry.sweep(force=True) == []  # paused, not expired
        assert client.containers.retrieve(container.id).status == "paused"
        assert engine_state(client, container.id) == "paused"
        assert [c.status for c in client.containers.list()] == ["paused"]
        execution = client.containers.execute(container.id, "x + 1")
        assert execution.status == "ok"
        assert execution.outputs[0].data["text/plain"] == "42"  # type: ignore[union-attr]
        assert client.containers.retrieve(container.id).status == "ready"
        assert engine_state(client, container.id) == "running"
        assert client._expiry.sweep(force=True) == []  # used again: idle no more
    finally:
        client.containers.delete(container.id)


def test_a_file_call_resumes_a_paused_sandbox(client: Client) -> None:
    container = client.containers.create(name="pausing", idle_action="pause")
    try:
        client.containers.execute(container.id, "open('/mnt/data/kept.txt', 'w').write('hi')")
        make_idle(client, container.id)
        client._expiry.sweep(force=True)
        assert client.containers.retrieve(container.id).status == "paused"
        paths = [f.path for f in client.containers.files.list(container.id)]
        assert paths == ["/mnt/data/kept.txt"]
        assert client.containers.retrieve(container.id).status == "ready"
    finally:
        client.containers.delete(container.id)


def test_the_settings_default_applies_and_expire_stays_the_default(
    make_client: Callable[..., Client],
) -> None:
    pausing = make_client(default_idle_action="pause")
    paused = pausing.containers.create(name="default-pause")
    ended = pausing.containers.create(name="explicit-expire", idle_action="expire")
    for container_id in (paused.id, ended.id):
        make_idle(pausing, container_id)
    assert pausing._expiry.sweep(force=True) == [ended.id]
    assert pausing.containers.retrieve(paused.id).status == "paused"
    assert pausing.containers.retrieve(ended.id).status == "expired"
    pausing.containers.delete(paused.id)


def test_the_hard_lifetime_ends_a_paused_sandbox(client: Client) -> None:
    container = client.containers.create(name="short", idle_action="pause", lifetime_seconds=15)
    make_idle(client, container.id)
    client._expiry.sweep(force=True)
    assert engine_state(client, container.id) == "paused"
    # Frozen, the in-container deadline cannot fire: the host's timer ends it, with no call.
    deadline = container.expires_at + 10
    while engine_state(client, container.id) != "gone" and time.time() < deadline:
        time.sleep(0.5)
    assert engine_state(client, container.id) == "gone"
    assert client._expiry.sweep(force=True) == []  # already done
    assert client.containers.retrieve(container.id).status == "expired"
    assert engine_state(client, container.id) == "gone"
    with pytest.raises(ConflictError, match="expired"):
        client.containers.execute(container.id, "1")


def test_an_unknown_idle_action_is_refused_naming_it(client: Client) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.containers.create(name="bad", idle_action="sleep")  # type: ignore[arg-type]
    assert caught.value.param == "idle_action"
    assert list(client.containers.list()) == []


def test_another_process_reconciles_a_paused_sandbox_as_alive_and_resumes_it(
    make_client: Callable[..., Client],
) -> None:
    first = make_client()
    container = first.containers.create(name="pausing", idle_action="pause")
    first.containers.execute(container.id, "x = 41")
    make_idle(first, container.id)
    first._expiry.sweep(force=True)
    second = make_client()  # its start-up reconcile sees a frozen container
    assert second.reconcile().marked == []
    assert second.containers.retrieve(container.id).status == "paused"
    execution = second.containers.execute(container.id, "x + 1")
    assert execution.outputs[0].data["text/plain"] == "42"  # type: ignore[union-attr]
    assert first.containers.retrieve(container.id).status == "ready"
    second.containers.delete(container.id)


@pytest.mark.slow
def test_a_real_idle_period_longer_than_the_limit_pauses_and_keeps_the_variables(
    client: Client,
) -> None:
    container = client.containers.create(
        name="real-idle",
        idle_action="pause",
        expires_after={"anchor": "last_active_at", "minutes": 1},
    )
    try:
        client.containers.execute(container.id, "kept = [1, 2, 3]")
        idle_until = time.time() + 65
        while time.time() < idle_until:
            time.sleep(1)
        statuses = {c.id: c.status for c in client.containers.list()}  # any call sweeps
        assert statuses[container.id] == "paused"
        execution = client.containers.execute(container.id, "sum(kept)")
        assert execution.outputs[0].data["text/plain"] == "6"  # type: ignore[union-attr]
    finally:
        client.containers.delete(container.id)


def test_a_cell_running_past_the_idle_limit_is_not_frozen(client: Client) -> None:
    container = client.containers.create(name="busy", idle_action="pause")
    try:
        done: list[object] = []
        worker = threading.Thread(
            target=lambda: done.append(
                client.containers.execute(container.id, "import time; time.sleep(3); 7")
            )
        )
        worker.start()
        deadline = time.monotonic() + 10
        while not client._executions.is_running(container.id) and time.monotonic() < deadline:
            time.sleep(0.05)
        make_idle(client, container.id)
        assert client._expiry.sweep(force=True) == []
        assert client.containers.retrieve(container.id).status == "ready"  # not frozen
        worker.join(timeout=30)
        assert done[0].outputs[0].data["text/plain"] == "7"  # type: ignore[attr-defined]
    finally:
        client.containers.delete(container.id)
