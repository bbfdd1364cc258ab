"""Lifecycle races and dead sandboxes: whatever runs at once (delete, execute, restart,
interrupt, files, expiry, in threads or processes) ends in an API error (NotFoundError,
ConflictError) or success, never a raw exception; and a sandbox whose PID 1 was killed from
inside is reported `failed` with the reason at the next call."""

from __future__ import annotations

import functools
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_sandbox import Client, ConflictError, NotFoundError
from jupyter_sandbox.types.execution import Execution
from tests.adversarial.conftest import Sandboxes
from tests.conftest import labelled_client, wait_until

pytestmark = pytest.mark.docker

ALLOWED = (NotFoundError, ConflictError)


def _outcome(call: Callable[[], Any]) -> Any:
    """What `call` returned, or the exception it raised (any type: the test judges it)."""
    try:
        return call()
    except Exception as exc:
        return exc


def _in_threads(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def worker(index: int, call: Callable[[], Any]) -> None:
        start.wait()
        results[index] = _outcome(call)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return results


def _only_api_errors(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, ALLOWED), repr(result)


def test_sigterm_to_pid_1_is_reported_at_the_next_call(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="pid1").id
    client.containers.files.create(container_id, file=b"x", path="/mnt/data/x.txt")
    killed = _outcome(
        lambda: client.containers.execute(
            container_id, "import os, signal; os.kill(1, signal.SIGTERM)", timeout=60
        )
    )
    assert isinstance(killed, Execution | ConflictError), repr(killed)
    wait_until(lambda: client._backend.state(container_id) is None, 30)  # auto-removed on exit
    with pytest.raises(ConflictError, match=r"container exited \(code 0\)") as caught:
        client.containers.execute(container_id, "print(1)", timeout=30)
    assert container_id in caught.value.message
    assert client.containers.retrieve(container_id).status == "terminated"
    record = client._store.get(container_id)
    assert record is not None
    assert record.error == "the sandbox's container exited (code 0)"  # sandbox-init: SIGTERM
    for call in (
        lambda: client.containers.execute(container_id, "print(1)", timeout=30),
        lambda: client.containers.files.list(container_id),
        lambda: client.containers.restart(container_id),
        lambda: client.containers.interrupt(container_id),
    ):
        assert isinstance(_outcome(call), ConflictError)
    client.containers.delete(container_id)
    with pytest.raises(NotFoundError):
        client.containers.retrieve(container_id)


def test_list_and_retrieve_report_a_container_that_died(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="died-quietly").id
    # PID 1 ends without any call of ours watching; list is the next call.
    client._backend.signal(container_id, "SIGTERM")
    wait_until(lambda: client._backend.state(container_id) is None, 30)
    listed = {c.id: c.status for c in client.containers.list()}
    assert listed[container_id] == "terminated"
    assert client.containers.retrieve(container_id).status == "terminated"
    client.containers.delete(container_id)


def test_three_concurrent_deletes_one_success(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    for round_ in range(2):
        container_id = client.containers.create(name=f"deletes-{round_}").id
        delete = functools.partial(client.containers.delete, container_id)
        results = _in_threads(delete, delete, delete)
        _only_api_errors(results)
        assert sum(not isinstance(r, BaseException) for r in results) == 1, results
        assert sum(isinstance(r, NotFoundError) for r in results) == 2, results


BUSY = "import time\nfor i in range(300):\n    print(i, flush=True); time.sleep(0.01)\n"


def _delete_under_execute(client: Client, container_id: str, delay: float) -> None:
    def delete() -> Any:
        time.sleep(delay)
        return client.containers.delete(container_id)

    executed, deleted = _in_threads(
        lambda: client.containers.execute(container_id, BUSY, timeout=60), delete
    )
    assert not isinstance(deleted, BaseException), repr(deleted)
    if isinstance(executed, BaseException):
        assert isinstance(executed, ALLOWED), repr(executed)
        if isinstance(executed, ConflictError):
            assert "deleted" in executed.message
    # Then: NotFound for anything, never a raw error.
    for call in (
        lambda: client.containers.execute(container_id, "1"),
        lambda: client.containers.restart(container_id),
        lambda: client.containers.files.list(container_id),
    ):
        assert isinstance(_outcome(call), NotFoundError)


def test_delete_under_a_running_execute_ends_it_cleanly(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    for delay in (0.0, 0.3, 1.5):
        _delete_under_execute(client, client.containers.create(name="busy").id, delay)


def _everything_at_once(client: Client, container_id: str, delay: float) -> None:
    containers = client.containers

    def delete() -> Any:
        time.sleep(delay)
        return containers.delete(container_id)

    results = _in_threads(
        lambda: containers.execute(container_id, "import time; time.sleep(1)", timeout=30),
        lambda: containers.execute(container_id, "print(2)", timeout=30),
        lambda: containers.restart(container_id),
        lambda: containers.interrupt(container_id),
        lambda: containers.files.list(container_id),
        lambda: containers.files.create(container_id, file=b"y", path="/mnt/data/y"),
        lambda: containers.retrieve(container_id),
        lambda: client._expiry.sweep(force=True),
        delete,
        delete,
    )
    _only_api_errors(results)
    assert sum(isinstance(r, NotFoundError) for r in results[-2:]) == 1, results[-2:]


def test_every_operation_racing_delete_gives_api_errors(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    for round_ in range(3):
        container_id = client.containers.create(name=f"mix-{round_}").id
        _everything_at_once(client, container_id, 0.2 * round_)


def test_expiry_racing_delete(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="expiring").id
    client._store.update(container_id, last_active_at=0.0)  # overdue now
    results = _in_threads(
        lambda: client._expiry.sweep(force=True),
        lambda: client.containers.delete(container_id),
        lambda: client.containers.delete(container_id),
    )
    _only_api_errors(results)
    record = client._store.get(container_id)
    assert record is not None
    assert not record.is_live
    # Expiry won (then one delete), or one delete won: never two winners, never an error.
    deletes = results[1:]
    assert sum(not isinstance(r, BaseException) for r in deletes) == 1, results


def _process_delete(home: str, label: str, container_id: str, start: Any, out: Any) -> None:
    client = labelled_client(Path(home), label)
    try:
        start.wait()
        result = _outcome(lambda: client.containers.delete(container_id))
        out.put(type(result).__name__)
    finally:
        client.close()


def _process_execute(home: str, label: str, container_id: str, start: Any, out: Any) -> None:
    client = labelled_client(Path(home), label)
    try:
        start.wait()
        code = "import time\nfor i in range(200):\n    print(i, flush=True); time.sleep(0.01)\n"
        result = _outcome(lambda: client.containers.execute(container_id, code, timeout=60))
        name = type(result).__name__
        out.put(f"{name}:{result.status}" if isinstance(result, Execution) else name)
    finally:
        client.close()


@pytest.mark.parametrize("second", ["delete", "execute"])
def test_races_across_processes(sandboxes: Sandboxes, second: str) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name=f"procs-{second}").id
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    out = context.Queue()
    other = _process_delete if second == "delete" else _process_execute
    args = (str(sandboxes.home), sandboxes.label, container_id, start, out)
    processes = [
        context.Process(target=_process_delete, args=args),
        context.Process(target=_process_delete, args=args),
        context.Process(target=other, args=args),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
        assert process.exitcode == 0
    results = sorted(out.get(timeout=5) for _ in processes)
    allowed = {"ContainerDeleted", "NotFoundError", "ConflictError", "Execution:ok"}
    assert set(results) <= allowed | {"Execution:died"}, results
    assert results.count("ContainerDeleted") == 1, results
    assert not Path(client._store.get(container_id).socket_dir).exists()  # type: ignore[union-attr]
