"""`SandboxResources`: the one owner of everything a sandbox holds.

A sandbox holds, in the order they are acquired: its record (in the store), its kernel
channel (folder and HMAC key), its hard-deadline file, its storage (and the file and skill
copies in it), for an `allowlist` sandbox its network and proxy attachment, and the running
sandbox itself; then this process's kernel connection. `acquire` makes them in that order and
on any failure releases what it made; `release` ends a sandbox once (one atomic store
transition decides which of racing callers wins: delete, idle expiry, hard lifetime, a dead
sandbox found by a check, reconcile, pool retirement) and `teardown` removes every resource,
each step attempted even when an earlier one failed. A new resource is added here, once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jupyter_sandbox._exceptions import ConflictError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import labels
from jupyter_sandbox.backends.base import Backend, NetworkGrant, SandboxSpec
from jupyter_sandbox.backends.kernel import new_key
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.container_files import Plan, SandboxContent
from jupyter_sandbox.core.kernels import Kernels
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import (
    MEMORY_LIMIT_BYTES,
    ContainerCreateParams,
    ContainerStatus,
    NetworkPolicyAllowlist,
)

logger = logging.getLogger(__name__)

_TEARDOWN_LOCKS = tuple(threading.Lock() for _ in range(64))
"""Striped: teardowns of one sandbox in this process never overlap (unmounts would race)."""


@dataclass(frozen=True)
class BootRequest:
    """A checked create: what `acquire` makes a sandbox from."""

    request: ContainerCreateParams
    memory_limit: str
    lifetime: int
    idle_minutes: int
    project: str
    plan: Plan | None = None


class SandboxResources:
    """Acquires and releases everything a sandbox holds (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        backend: Backend,
        kernels: Kernels,
        content: SandboxContent | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backend = backend
        self._kernels = kernels
        self._content = content

    def labels(self, sandbox_id: str) -> dict[str, str]:
        """The labels on everything the backend makes for a sandbox."""
        return labels.sandbox_labels(
            sandbox_id, self._settings.store_id, __version__, self._settings.extra_labels
        )

    def acquire(self, boot: BootRequest) -> ContainerRecord:
        """Make a ready sandbox (its kernel answers), or release every trace and raise."""
        now = time.time()
        sandbox_id = ids.container_id()
        record = self._store.insert(
            ContainerRecord(
                id=sandbox_id,
                project=boot.project,
                name=boot.request.name,
                status="initializing",
                created_at=now,
                last_active_at=now,
                memory_limit=boot.memory_limit,
                network_policy=boot.request.network_policy.model_dump(mode="json"),
                idle_minutes=boot.idle_minutes,
                expires_at=now + boot.lifetime,
                image=self._settings.image,
                kernel_key=new_key(),
                socket_dir=self._backend.channel_location(sandbox_id),
                owner_pid=os.getpid(),
                owner_host=socket.gethostname(),
            )
        )
        deadline = time.monotonic() + self._settings.start_timeout
        try:
            ready = self._acquire(record, boot, deadline, since=now)
        except BaseException as exc:
            # The caller gets the error and never the id: like the hosted API, nothing is
            # left to list. The record stays (deleted) with the reason, for diagnosis.
            try:
                if not self.release(
                    record, status="failed", deleted=True, error=str(exc) or type(exc).__name__
                ):
                    self.teardown(record)  # ended by another caller: remove what we made
            except Exception:  # what the rollback left, reconcile removes; the cause is `exc`
                logger.exception("sandbox %s: the rollback of its create failed", sandbox_id)
            raise
        return ready

    def _acquire(
        self, record: ContainerRecord, boot: BootRequest, deadline: float, since: float
    ) -> ContainerRecord:
        backend, sandbox_id = self._backend, record.id
        backend.create_channel(record.socket_dir, record.kernel_key)
        backend.write_deadline(sandbox_id, record.expires_at)
        prepared, extra = None, dict(record.extra)
        if self._content is not None and boot.plan is not None:
            prepared = self._content.prepare(sandbox_id, boot.plan)
            extra["storage"] = prepared.storage.kind
            extra["skills"] = [s.model_dump() for s in prepared.skills]
        network = self._attach_network(record, boot.request)
        docker_id = backend.start(
            SandboxSpec(
                sandbox_id=sandbox_id,
                image=record.image,
                memory_bytes=MEMORY_LIMIT_BYTES[boot.memory_limit],
                deadline=record.expires_at,
                labels=self.labels(sandbox_id),
                channel=record.socket_dir,
                environment={
                    **(prepared.environment if prepared else {}),
                    **(network.environment if network else {}),
                },
                storage=prepared.storage if prepared else None,
                mount_skills=bool(prepared and prepared.skills),
                network=network,
            )
        )
        if self._content is not None and boot.plan is not None and prepared is not None:
            self._content.finish(sandbox_id, boot.plan, prepared)
        self._kernels.open(record, deadline, since=since)
        ready = self._store.take(
            sandbox_id, boot.project, status="ready", docker_id=docker_id, extra=extra
        )
        if ready is None:
            raise ConflictError(
                f"Container {sandbox_id} was deleted while it was starting", param="container_id"
            )
        return ready

    def _attach_network(
        self, record: ContainerRecord, request: ContainerCreateParams
    ) -> NetworkGrant | None:
        policy = request.network_policy
        if not isinstance(policy, NetworkPolicyAllowlist):
            return None
        return self._backend.attach_network(
            record.id,
            policy,
            self.labels(record.id),
            time.monotonic() + self._settings.egress_start_timeout,
        )

    def release(
        self,
        record: ContainerRecord,
        *,
        status: ContainerStatus,
        deleted: bool = False,
        error: str | None = None,
        project: str | None = None,
    ) -> bool:
        """End a sandbox once: mark the record (one atomic store transition, so of racing
        callers exactly one proceeds), then tear down what it holds. Idempotent; True only
        for the caller that ended it."""
        before = self._store.end(
            record.id, status=status, deleted=deleted, error=error, project=project
        )
        if before is None:
            return False
        if before.is_live:
            try:
                self.teardown(before)
            except Exception:
                # The end took effect (the record says so to every process): reporting it
                # as a failure would make a retrying client see 404 and leave what failed
                # here to nobody. This process is done with it, so reconcile may remove
                # what is left at once (no `ended_by`: not a teardown in progress).
                logger.warning(
                    "sandbox %s ended, but part of its teardown failed; reconcile removes "
                    "what is left",
                    record.id,
                    exc_info=True,
                )
                current = self._store.get(record.id)
                if current is not None:
                    extra = {k: v for k, v in current.extra.items() if k != "ended_by"}
                    self._store.update(record.id, extra=extra)
        return True

    def teardown(self, record: ContainerRecord) -> None:
        """Remove every resource of an ended sandbox, newest first; each step runs even if
        an earlier one failed (the first failure is raised after). Idempotent."""
        steps: list[Callable[[], None]] = [
            lambda: self._kernels.close(record.id),
            lambda: self._backend.remove(record.id),
            lambda: self._backend.remove_channel(record.socket_dir),
            lambda: self._backend.remove_deadline(record.id),
            lambda: self._backend.remove_storage(record.id),
        ]
        content = self._content
        if content is not None:
            steps.append(lambda: content.forget(record.id))
        if record.network_policy.get("type") == "allowlist":
            steps.append(lambda: self._backend.release_network(record.id, self.network_needed))
        failure: BaseException | None = None
        with _TEARDOWN_LOCKS[hash(record.id) % len(_TEARDOWN_LOCKS)]:
            for step in steps:
                try:
                    step()
                except BaseException as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    def network_needed(self) -> set[str]:
        """Ids of the live allowlist sandboxes (they keep the egress proxy up)."""
        return {
            r.id
            for r in self._store.all(statuses=("initializing", "ready"))
            if not r.deleted and r.network_policy.get("type") == "allowlist"
        }
