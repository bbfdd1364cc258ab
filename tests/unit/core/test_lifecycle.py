"""Create, delete and their rollback, step by step, on the in-memory backend."""

from __future__ import annotations

import io

import pytest

from jupyter_sandbox import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
)
from jupyter_sandbox.core.execution_machine import POLL
from tests.unit.core.fake_backend import FakeBackend

ALLOWLIST = {"type": "allowlist", "allowed_domains": ["pypi.org"]}


def test_create_starts_everything_and_delete_releases_everything(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="full", network_policy=ALLOWLIST)
    assert box.status == "ready"
    assert backend.holds() == {
        "sandbox": [box.id],
        "channel": [client._store.get(box.id).socket_dir],  # type: ignore[union-attr]
        "deadline": [box.id],
        "storage": [box.id],
        "network": [box.id],
    }
    spec = backend.sandboxes[box.id].spec
    assert spec.environment["HTTPS_PROXY"] == "http://proxy:3128"
    assert spec.deadline == backend.deadlines[box.id]
    assert spec.labels["org.jupyter-sandbox.container-id"] == box.id
    order = [method for method, _ in backend.calls if method not in ("state", "files")]
    assert order[:7] == [
        "check_network",  # a policy the backend cannot enforce fails before anything exists
        "create_channel",
        "write_deadline",
        "create_storage",
        "attach_network",
        "start",
        "connect",
    ]
    client.containers.delete(box.id)
    assert backend.holds() == {}
    record = client._store.get(box.id)
    assert record is not None
    assert record.deleted
    assert record.status == "terminated"


STEPS = [
    "create_channel",
    "write_deadline",
    "create_storage",
    "files",
    "attach_network",
    "start",
    "connect",
    "wait_ready",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_create_that_fails_at_any_step_leaves_nothing(
    client: Client, backend: FakeBackend, step: str
) -> None:
    stored = client.files.create(file=("in.txt", io.BytesIO(b"data")))
    backend.fail_next(step, APIConnectionError(f"{step} failed"))
    with pytest.raises(APIConnectionError, match=f"{step} failed"):
        client.containers.create(name="doomed", file_ids=[stored.id], network_policy=ALLOWLIST)
    assert backend.holds() == {}
    (record,) = client._store.all()
    assert record.status == "failed"
    assert record.deleted
    assert record.error == f"{step} failed"
    assert list(client.containers.list()) == []
    assert client.containers.create(name="next").status == "ready"  # nothing blocks the next


@pytest.mark.parametrize("step", ["files", "connect"])
def test_files_copied_after_start_roll_back_too(
    client: Client, backend: FakeBackend, step: str
) -> None:
    backend.files_before_start = False  # as with Docker volumes
    stored = client.files.create(file=("in.txt", io.BytesIO(b"data")))
    backend.fail_next(step, APIConnectionError(f"{step} failed"))
    with pytest.raises(APIConnectionError):
        client.containers.create(name="late", file_ids=[stored.id])
    assert backend.holds() == {}
    order = [method for method, _ in backend.calls if method in ("start", "files")]
    assert order == ["start", "files"]
    box = client.containers.create(name="late", file_ids=[stored.id])
    assert [f.path for f in client.containers.files.list(box.id)] == ["/mnt/data/in.txt"]
    client.containers.delete(box.id)


def test_a_store_that_lost_the_record_mid_create_is_a_conflict(
    client: Client, backend: FakeBackend
) -> None:
    original = client._store.take

    def take_nothing(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)
        return None  # as if deleted between the kernel answering and the record turning ready

    client._store.take = take_nothing  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="was deleted while it was starting") as caught:
        client.containers.create(name="lost")
    assert caught.value.param == "container_id"
    assert backend.holds() == {}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"file_ids": ["file_missing"]}, "file_ids"),
        ({"skills": [{"skill_id": "skill_missing"}]}, "skills"),
        ({"memory_limit": "64g"}, "memory_limit"),
    ],
)
def test_a_create_refused_up_front_makes_nothing(
    client: Client, backend: FakeBackend, params: dict[str, object], param: str
) -> None:
    with pytest.raises((BadRequestError, NotFoundError)) as caught:
        client.containers.create(name="refused", **params)  # type: ignore[arg-type]
    assert str(caught.value.param).startswith(param)
    assert backend.calls == []
    assert client._store.all() == []


def test_a_failing_rollback_step_does_not_stop_the_others(
    client: Client, backend: FakeBackend
) -> None:
    backend.fail_next("start", APIConnectionError("start failed"))
    backend.fail_next("remove_channel", OSError("busy"))
    with pytest.raises(APIConnectionError, match="start failed"):
        client.containers.create(name="doomed")
    assert set(backend.holds()) == {"channel"}  # only the step that failed is left
    assert backend.holds()["channel"] == [client._store.all()[0].socket_dir]
    (record,) = client._store.all()
    assert "ended_by" not in record.extra  # its ender is done: no teardown in progress
    report = client.reconcile()  # so reconcile removes what the rollback could not, at once
    assert backend.holds() == {}
    assert report.socket_dirs == [record.socket_dir.rpartition("/")[2]]


def test_a_sandbox_that_stops_while_starting_fails_with_its_log(
    client: Client, backend: FakeBackend
) -> None:
    original = backend.start

    def start_then_crash(spec):  # type: ignore[no-untyped-def]
        result = original(spec)
        sandbox = backend.sandboxes[spec.sandbox_id]
        sandbox.kernel_up = False
        sandbox.running = False
        sandbox.log.append((sandbox.log[0][0], "Traceback: no module named ipykernel"))
        return result

    backend.start = start_then_crash  # type: ignore[method-assign]
    with pytest.raises(InternalServerError) as caught:
        client.containers.create(name="crash")
    assert "stopped before its kernel was ready" in caught.value.message
    assert "no module named ipykernel" in caught.value.message
    assert backend.holds() == {}


def test_a_kernel_that_exits_while_starting_fails_with_its_log(
    client: Client, backend: FakeBackend
) -> None:
    original = backend.start

    def start_then_kernel_exits(spec):  # type: ignore[no-untyped-def]
        result = original(spec)
        sandbox = backend.sandboxes[spec.sandbox_id]
        sandbox.kernel_up = False
        sandbox.log.append((sandbox.log[0][0], "sandbox-init: kernel exited with status 1"))
        return result

    backend.start = start_then_kernel_exits  # type: ignore[method-assign]
    with pytest.raises(InternalServerError) as caught:
        client.containers.create(name="exits")
    assert "exited while starting" in caught.value.message
    assert "kernel exited with status 1" in caught.value.message
    assert backend.holds() == {}


def test_a_kernel_that_never_answers_times_out(make_client: object, backend: FakeBackend) -> None:
    client = make_client(start_timeout=0.3)  # type: ignore[operator]
    original = backend.start

    def start_silent(spec):  # type: ignore[no-untyped-def]
        result = original(spec)
        backend.sandboxes[spec.sandbox_id].kernel_up = False
        return result

    backend.start = start_silent  # type: ignore[method-assign]
    with pytest.raises(APITimeoutError) as caught:
        client.containers.create(name="silent")
    assert "(0.3 s)" in caught.value.message
    assert "sandbox-init: kernel started" in caught.value.message  # its log is quoted
    assert backend.holds() == {}


def test_delete_twice_and_a_delete_racing_a_create(client: Client, backend: FakeBackend) -> None:
    box = client.containers.create(name="once")
    client.containers.delete(box.id)
    with pytest.raises(NotFoundError) as caught:
        client.containers.delete(box.id)
    assert caught.value.param == "container_id"
    original = backend.start

    def start_and_get_deleted(spec):  # type: ignore[no-untyped-def]
        result = original(spec)
        client.containers.delete(spec.sandbox_id)  # another caller, mid-create
        return result

    backend.start = start_and_get_deleted  # type: ignore[method-assign]
    with pytest.raises(InternalServerError, match="stopped before its kernel was ready"):
        client.containers.create(name="raced")
    assert backend.holds() == {}
    raced = client._store.all()[-1]
    assert raced.status == "terminated"  # the delete won: its record says so
    assert raced.deleted


def test_a_sandbox_that_died_is_terminated_with_its_exit_code(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="dies")
    backend.stop(box.id, exit_code=137)
    seen = client.containers.retrieve(box.id)
    assert seen.status == "terminated"
    record = client._store.get(box.id)
    assert record is not None
    assert record.error == "the sandbox's container exited (code 137)"
    assert backend.holds() == {}  # ended through the resource owner: all released
    with pytest.raises(ConflictError) as caught:
        client.containers.execute(box.id, "1")
    assert caught.value.param == "container_id"


def test_execute_restart_and_interrupt_reach_the_backend(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="runs")
    result = client.containers.execute(box.id, "print(1)")
    assert result.status == "ok"
    assert result.stdout == "print(1)"
    assert backend.executed == ["print(1)"]
    client.containers.interrupt(box.id)
    client.containers.restart(box.id)
    assert backend.sandboxes[box.id].signals == ["SIGINT", "SIGUSR1"]
    assert ("reset_channel", str(client._store.get(box.id).socket_dir)) in backend.calls  # type: ignore[union-attr]
    client.containers.delete(box.id)


def test_a_kernel_killed_for_memory_is_reported_as_oom(
    client: Client, backend: FakeBackend
) -> None:
    box = client.containers.create(name="oom")
    sandbox = backend.sandboxes[box.id]

    def oom(code: str, msg_id: str) -> list:  # type: ignore[type-arg]
        sandbox.oom_kills += 1
        return []

    backend.script = oom
    result = client.containers.execute(box.id, "x = bytearray(2**40)")
    assert result.status == "died"
    assert result.message == (
        "The kernel ran out of memory (memory_limit 1g = 1073741824 bytes) and was restarted"
    )
    assert sandbox.signals == ["SIGUSR1"]
    assert POLL <= 1
    client.containers.delete(box.id)


@pytest.mark.parametrize("step", ["remove", "remove_storage", "remove_channel", "remove_deadline"])
def test_a_delete_that_took_effect_succeeds_even_if_a_teardown_step_fails(
    client: Client, backend: FakeBackend, step: str
) -> None:
    """Class: an end that took effect reported as a failure. The record is ended for every
    process, so a retrying caller (the openai SDK retries 5xx) would get 404 and nobody would
    free what failed: the delete answers deleted, the rest of the teardown still runs, and
    reconcile removes what the failed step left."""
    box = client.containers.create(name="stubborn")
    backend.fail_next(step, APIConnectionError("the engine hiccuped"))
    assert client.containers.delete(box.id).deleted
    with pytest.raises(NotFoundError):
        client.containers.delete(box.id)
    client.reconcile()
    assert backend.holds() == {}
