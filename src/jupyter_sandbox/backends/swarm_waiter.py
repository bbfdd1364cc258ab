"""Waiting for sandbox tasks to run: one poll of the manager for every create in flight.

Swarm has no event for a task's state, so a create polls the manager's record until its task
runs. One poll per create per tick made N concurrent creates cost the manager N requests a
tick (70 to 125 per create in `benchmarks/cluster.py`, most of a create's manager requests).
`TaskWaiter` coalesces them: whichever waiting thread is due polls once, with a filter naming
every service still waiting, and hands each waiter its task; the others sleep on a condition.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import docker.errors

from jupyter_sandbox._exceptions import InternalServerError
from jupyter_sandbox.backends.swarm_services import (
    _NODE_CHECK,
    STARTING,
    TASK_ENDED,
    NodeLostError,
)

__all__ = ["POLL", "TaskWaiter"]

POLL = 0.1
"""Seconds between two polls of the manager (shared by every create in flight)."""


class TaskWaiter:
    """Waits for services' tasks on the manager `api` (docker-py's APIClient), shared by the
    threads of one backend."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._cond = threading.Condition()
        self._waiting: dict[str, int] = {}  # service id -> threads waiting for it
        self._tasks: dict[str, dict[str, Any]] = {}  # service id -> its task at the last poll
        self._gone: set[str] = set()  # services the last poll found removed
        self._round = 0  # polls done
        self._polling = False
        self._last = 0.0  # when the last poll started
        self.polls = 0
        """Polls made (`benchmarks/cluster.py` reads it)."""

    def wait(self, service_id: str, timeout: float) -> dict[str, Any]:
        """The service's task once it runs.

        Raises:
            InternalServerError: no node took it in time (Swarm's reason), or it failed to
                start.
            NodeLostError: the node Swarm gave the task stopped being ready before it ran.
            APIError: the manager could not be asked (as `docker_errors` maps it).
        """
        deadline = time.monotonic() + timeout
        node_checked = time.monotonic()
        with self._cond:
            self._waiting[service_id] = self._waiting.get(service_id, 0) + 1
        try:
            while True:
                task, gone = self._next_poll(service_id, deadline)
                if gone:
                    raise InternalServerError("the sandbox's service was removed while it started")
                state = task["Status"]["State"] if task else "new"
                if state == "running" and task is not None:
                    return task
                node_id = task.get("NodeID") if task is not None and state in STARTING else None
                if node_id and time.monotonic() - node_checked > _NODE_CHECK:  # lost since?
                    node_checked = time.monotonic()
                    self._check_node(str(node_id), state)
                if state in TASK_ENDED and task is not None:
                    why = task["Status"].get("Err") or task["Status"].get("Message")
                    raise InternalServerError(f"the sandbox's task did not start ({state}: {why})")
                if time.monotonic() > deadline:
                    why = (task["Status"].get("Err") or state) if task else "no task"
                    raise InternalServerError(
                        f"no node of the swarm started the sandbox within {timeout:g} s ({why})"
                    )
        finally:
            with self._cond:
                left = self._waiting.pop(service_id) - 1
                if left:
                    self._waiting[service_id] = left
                else:
                    self._tasks.pop(service_id, None)

    def _check_node(self, node_id: str, state: str) -> None:
        """Raise NodeLostError if the node a starting task was given is no longer ready."""
        node = self._api.inspect_node(node_id)
        if node["Status"]["State"] != "ready":
            raise NodeLostError(
                f"the sandbox's node {node['Description']['Hostname']} is "
                f"{node['Status']['State']} (its task was {state})"
            )

    def _next_poll(self, service_id: str, deadline: float) -> tuple[dict[str, Any] | None, bool]:
        """The service's task as the next poll saw it, and whether the service was gone;
        this thread polls if no other does."""
        with self._cond:
            seen = self._round
            while self._polling and self._round == seen:
                self._cond.wait(max(0.0, deadline - time.monotonic()) + POLL)
            if self._round != seen:
                return self._tasks.get(service_id), service_id in self._gone
            self._polling = True
            services = sorted(self._waiting)
            pause = self._last + POLL - time.monotonic()
        try:
            if pause > 0:
                time.sleep(pause)  # the tick: every waiter's request is in this one poll
            self._last = time.monotonic()
            found, gone = self._ask(services)
        except BaseException:
            with self._cond:
                self._polling = False
                self._cond.notify_all()  # another waiter polls (and meets its own error)
            raise
        tasks: dict[str, dict[str, Any]] = {}
        for task in found:  # one replica, restart policy none: one task per service
            tasks.setdefault(task["ServiceID"], task)
        with self._cond:
            self._tasks = {sid: tasks[sid] for sid in self._waiting if sid in tasks}
            self._gone = gone
            self._round += 1
            self.polls += 1
            self._polling = False
            self._cond.notify_all()
            return self._tasks.get(service_id), service_id in gone

    def _ask(self, services: list[str]) -> tuple[list[dict[str, Any]], set[str]]:
        """The services' tasks, and which of them no longer exist (the manager refuses the
        whole filter if one service is gone: then each is asked alone)."""
        try:
            return list(self._api.tasks(filters={"service": services})), set()
        except docker.errors.NotFound:
            pass
        found: list[dict[str, Any]] = []
        gone: set[str] = set()
        for service in services:
            try:
                found += self._api.tasks(filters={"service": service})
            except docker.errors.NotFound:
                gone.add(service)
        return found, gone
