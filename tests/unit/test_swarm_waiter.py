"""`TaskWaiter`: creates in flight share one poll of the manager, each gets its own task, and
a failed, missing or late task fails only its own create. The manager is a scripted stand-in
for docker-py's `tasks()` (the real one is exercised by tests/cluster/ and
benchmarks/cluster.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
import pytest

from jupyter_sandbox import InternalServerError
from jupyter_sandbox.backends.swarm_waiter import TaskWaiter


class Manager:
    """`tasks(filters={"service": ...})` over a table of service id -> polls until running;
    every call is recorded with the services it named."""

    def __init__(self, running_after: dict[str, int], ended: frozenset[str] = frozenset()):
        self.running_after = running_after
        self.ended = ended
        self.removed: set[str] = set()
        self.calls: list[list[str]] = []
        self._asked: dict[str, int] = {}
        self._lock = threading.Lock()

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        named = filters["service"]
        services = [named] if isinstance(named, str) else list(named)
        with self._lock:
            self.calls.append(services)
            if any(s in self.removed for s in services):
                raise docker.errors.NotFound("service not found")
            found = []
            for service in services:
                asked = self._asked[service] = self._asked.get(service, 0) + 1
                if service in self.ended:
                    state = "rejected"
                elif asked >= self.running_after[service]:
                    state = "running"
                else:
                    state = "pending"
                status = {"State": state, "Err": "no suitable node" if state == "rejected" else ""}
                found.append({"ID": f"task-{service}", "ServiceID": service, "Status": status})
            return found


def wait_all(waiter: TaskWaiter, services: list[str], timeout: float = 10) -> list[Any]:
    def one(service: str) -> Any:
        try:
            return waiter.wait(service, timeout)
        except InternalServerError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        return list(pool.map(one, services))


def test_concurrent_creates_share_each_poll_and_each_gets_its_own_task() -> None:
    services = [f"s{i}" for i in range(6)]
    manager = Manager({s: 3 + i for i, s in enumerate(services)})
    results = wait_all(TaskWaiter(manager), services)
    assert [task["ServiceID"] for task in results] == services
    assert all(task["Status"]["State"] == "running" for task in results)
    # One create alone would need 3 to 8 polls; one each, side by side, 33. Shared: the
    # slowest create's 8 polls, plus a few for creates that joined after a poll had started.
    assert len(manager.calls) <= 8 + len(services)
    assert max(len(named) for named in manager.calls) > 1


def test_a_rejected_task_fails_only_its_own_create() -> None:
    manager = Manager({"good": 2, "bad": 1}, ended=frozenset({"bad"}))
    good, bad = wait_all(TaskWaiter(manager), ["good", "bad"])
    assert good["ServiceID"] == "good"
    assert isinstance(bad, InternalServerError)
    assert "rejected: no suitable node" in bad.message


def test_a_removed_service_fails_its_create_and_the_others_go_on() -> None:
    manager = Manager({"kept": 4, "removed": 100})
    manager.removed.add("removed")
    kept, removed = wait_all(TaskWaiter(manager), ["kept", "removed"])
    assert kept["ServiceID"] == "kept"
    assert isinstance(removed, InternalServerError)
    assert "removed" in removed.message


def test_a_task_no_node_takes_times_out_with_its_state() -> None:
    manager = Manager({"late": 10_000})
    with pytest.raises(InternalServerError, match=r"within 0.3 s \(pending\)"):
        TaskWaiter(manager).wait("late", 0.3)


def test_a_poll_error_reaches_the_waiter_that_polled_and_the_waiter_stays_usable() -> None:
    class Flaky(Manager):
        def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
            if not self.calls:
                self.calls.append(["boom"])
                raise docker.errors.APIError("manager unreachable")
            return super().tasks(filters)

    manager = Flaky({"s": 1})
    waiter = TaskWaiter(manager)
    with pytest.raises(docker.errors.APIError):
        waiter.wait("s", 5)
    assert waiter.wait("s", 5)["ServiceID"] == "s"
