"""Containers: create, retrieve, list and delete sandboxes; leave nothing behind."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
)
from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends import deadline_file, kernel, labels
from jupyter_sandbox.backends.runtime.base import Runtime, SandboxNetworkSpec, SandboxSpec
from jupyter_sandbox.backends.runtime.docker import SANDBOX_UID
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core import ids
from jupyter_sandbox.core.container_files import SandboxContent
from jupyter_sandbox.core.kernels import Kernels
from jupyter_sandbox.core.network import EgressService
from jupyter_sandbox.core.pool import POOL_PROJECT, WarmPool, pool_idle_minutes, pool_request
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import (
    LARGE_MEMORY_LIMITS,
    MEMORY_LIMIT_BYTES,
    Container,
    ContainerCreateParams,
    ContainerDeleted,
    ContainerStatus,
    ExpiresAfter,
    NetworkPolicyAllowlist,
    normalize_memory,
)
from jupyter_sandbox.types.page import CursorPage, ListParams, invalid_after

logger = logging.getLogger(__name__)

_TEARDOWN_LOCKS = tuple(threading.Lock() for _ in range(64))
"""Striped: teardowns of one sandbox in this process never overlap (unmounts would race)."""


def check_memory(value: object, settings: Settings) -> str:
    """The tier `value` names (`1G`, `1gb`, `1024m` are `1g`) if this host allows it.

    Raises:
        BadRequestError: naming `memory_limit` and the tiers allowed here.
    """
    allowed = settings.memory_limits()
    hint = f"allowed on this host: {', '.join(allowed)}"
    if not settings.allow_large_memory:
        hint += f"; the operator can allow {', '.join(LARGE_MEMORY_LIMITS)}"
    try:
        tier = normalize_memory(value)
    except ValueError:
        raise BadRequestError(
            f"Invalid memory_limit: {value!r:.40} is not a memory size ({hint})",
            param="memory_limit",
        ) from None
    if tier not in allowed:
        raise BadRequestError(
            f"Invalid memory_limit: {tier!r} is not enabled on this host ({hint})",
            param="memory_limit",
        )
    return tier


def to_container(record: ContainerRecord) -> Container:
    """The API shape of a record."""
    return Container(
        id=record.id,
        name=record.name,
        created_at=int(record.created_at),
        status=record.status,
        last_active_at=int(record.last_active_at),
        expires_after=ExpiresAfter(minutes=record.idle_minutes),
        memory_limit=record.memory_limit,  # type: ignore[arg-type]
        network_policy=record.network_policy,
        expires_at=int(record.expires_at),
        skills=record.extra.get("skills", []),
    )


class ContainerService:
    """The lifecycle of sandboxes, shared by every surface."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime,
        kernels: Kernels,
        content: SandboxContent | None = None,
        egress: EgressService | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        self._kernels = kernels
        self._content = content
        self._egress = egress
        self._pool: WarmPool | None = None

    def attach_pool(self, pool: WarmPool) -> None:
        """Serve default-configuration creates from this warm pool."""
        self._pool = pool

    def create(self, params: dict[str, Any], *, project: str = "default") -> Container:
        """Start a sandbox and wait for its kernel, or roll back every trace of it.

        A request of the default configuration is a claim on the warm pool when one is set
        and holds a ready sandbox; otherwise (or when it is empty) the sandbox boots now.
        """
        if isinstance(params, dict) and params.get("memory_limit") is not None:
            # Before the model, whose error cannot know the tiers this host allows.
            params = {
                **params,
                "memory_limit": check_memory(params["memory_limit"], self._settings),
            }
        request = parse(ContainerCreateParams, params)
        memory_limit = self._check_memory(request.memory_limit)
        lifetime = self._check_lifetime(request.lifetime_seconds)
        self._check_unsupported(request)
        idle_minutes = (
            request.expires_after.minutes
            if request.expires_after
            else self._settings.default_idle_minutes
        )
        if self._pool is not None and self._pool.fits(request, memory_limit):
            claimed = self._pool.claim(
                project=project, name=request.name, idle_minutes=idle_minutes, lifetime=lifetime
            )
            if claimed is not None:
                logger.info("created sandbox %s (%s) from the warm pool", claimed.id, claimed.name)
                return to_container(claimed)
        record = self.boot(
            request,
            memory_limit=memory_limit,
            lifetime=lifetime,
            idle_minutes=idle_minutes,
            project=project,
        )
        logger.info("created sandbox %s (%s)", record.id, request.name)
        return to_container(record)

    def boot_for_pool(self) -> ContainerRecord:
        """Boot one pooled sandbox (the default configuration, the pool's own lifetime)."""
        return self.boot(
            pool_request(),
            memory_limit=self._settings.default_memory_limit,
            lifetime=self._settings.pool_max_age_seconds,
            idle_minutes=pool_idle_minutes(self._settings),
            project=POOL_PROJECT,
        )

    def boot(
        self,
        request: ContainerCreateParams,
        *,
        memory_limit: str,
        lifetime: int,
        idle_minutes: int,
        project: str,
    ) -> ContainerRecord:
        """Start a sandbox from a checked request and wait for its kernel; roll back on failure."""
        plan = (
            self._content.plan(request.file_ids, request.skills, project)
            if self._content is not None
            else None
        )
        now = time.time()
        container_id = ids.container_id()
        socket_dir = self._settings.sockets_root / container_id[5:17]
        deadline_dir = self._settings.deadlines_root / container_id
        record = self._store.insert(
            ContainerRecord(
                id=container_id,
                project=project,
                name=request.name,
                status="initializing",
                created_at=now,
                last_active_at=now,
                memory_limit=memory_limit,
                network_policy=request.network_policy.model_dump(mode="json"),
                idle_minutes=idle_minutes,
                expires_at=now + lifetime,
                image=self._settings.image,
                kernel_key=kernel.new_key(),
                socket_dir=str(socket_dir),
                owner_pid=os.getpid(),
                owner_host=socket.gethostname(),
                extra={"kernel_channel": self._kernels.channel},
            )
        )
        deadline = time.monotonic() + self._settings.start_timeout
        try:
            self._kernels.prepare(record)
            deadline_file.write(deadline_dir, record.expires_at)
            prepared = None
            host_dirs, skills_dir, extra = None, None, dict(record.extra)
            if self._content is not None and plan is not None:
                prepared = self._content.prepare(container_id, plan)
                host_dirs, skills_dir = self._content.mounts(prepared)
                extra["storage"] = "loop" if host_dirs else "volume"
                extra["skills"] = [s.model_dump() for s in prepared.skills]
            network, network_env = self._attach_network(record, request)
            docker_id = self._runtime.start(
                SandboxSpec(
                    container_id=container_id,
                    image=record.image,
                    memory_bytes=MEMORY_LIMIT_BYTES[memory_limit],
                    socket_dir=socket_dir,
                    deadline=record.expires_at,
                    labels=labels.sandbox_labels(
                        container_id,
                        self._settings.store_id,
                        __version__,
                        self._settings.extra_labels,
                    ),
                    environment={**(prepared.environment if prepared else {}), **network_env},
                    network=network,
                    host_dirs=host_dirs,
                    skills_dir=skills_dir,
                    deadline_dir=deadline_dir,
                )
            )
            if self._content is not None and plan is not None and prepared is not None:
                self._content.finish(container_id, plan, prepared)
            self._kernels.open(record, deadline, since=now)
            ready = self._store.take(
                container_id, project, status="ready", docker_id=docker_id, extra=extra
            )
            if ready is None:
                raise ConflictError(
                    f"Container {container_id} was deleted while it was starting",
                    param="container_id",
                )
        except BaseException as exc:
            # The caller gets the error and never the id: like the hosted API, nothing is
            # left to list. The record stays (deleted) with the reason, for diagnosis.
            if not self.destroy(
                record, status="failed", deleted=True, error=str(exc) or type(exc).__name__
            ):
                self._teardown(record)  # ended by another caller meanwhile: remove what we made
            raise
        return ready

    def _check_memory(self, requested: str | None) -> str:
        return check_memory(requested or self._settings.default_memory_limit, self._settings)

    def _check_lifetime(self, requested: int | None) -> int:
        lifetime = requested or self._settings.default_lifetime_seconds
        if lifetime > self._settings.max_lifetime_seconds:
            raise BadRequestError(
                f"Invalid lifetime_seconds: {lifetime} exceeds the maximum of "
                f"{self._settings.max_lifetime_seconds} seconds",
                param="lifetime_seconds",
            )
        return lifetime

    def _check_unsupported(self, request: ContainerCreateParams) -> None:
        if self._content is None and (request.file_ids or request.skills):
            raise BadRequestError(
                "Invalid file_ids/skills: this service has no file storage configured",
                param="file_ids" if request.file_ids else "skills",
            )
        if isinstance(request.network_policy, NetworkPolicyAllowlist):
            if self._egress is None:
                # Fail closed: never start a sandbox with a policy we cannot enforce.
                raise BadRequestError(
                    "Invalid network_policy: this service has no egress proxy; "
                    "use {'type': 'disabled'}",
                    param="network_policy",
                )
            self._egress.check(request.network_policy)

    def _attach_network(
        self, record: ContainerRecord, request: ContainerCreateParams
    ) -> tuple[SandboxNetworkSpec | None, dict[str, str]]:
        """An allowlist sandbox's network and proxy variables; `disabled` gets neither."""
        policy = request.network_policy
        if not isinstance(policy, NetworkPolicyAllowlist) or self._egress is None:
            return None, {}
        attachment = self._egress.attach(
            record,
            policy,
            labels.sandbox_labels(
                record.id, self._settings.store_id, __version__, self._settings.extra_labels
            ),
            time.monotonic() + self._settings.egress_start_timeout,
        )
        network = attachment.network
        spec = SandboxNetworkSpec(
            name=network.name,
            address=network.sandbox_ip,
            dns=network.proxy_ip,
            resolv_conf=attachment.resolv_conf,
            ca_bundle=attachment.ca_bundle,
        )
        return spec, attachment.environment

    def get_record(self, container_id: str, project: str = "default") -> ContainerRecord:
        """The visible record of a sandbox, or NotFoundError."""
        record = self._store.get(container_id) if isinstance(container_id, str) else None
        if record is None or record.deleted or record.project != project:
            raise NotFoundError(
                f"No container found with id {container_id!r}", param="container_id"
            )
        return record

    def get_checked(self, container_id: str, project: str = "default") -> ContainerRecord:
        """`get_record`, after checking that a ready sandbox still runs (its kernel's heartbeat
        socket accepts a connection, else the engine says): one whose container died (its
        PID 1 was killed) is marked `terminated` with the reason."""
        record = self.get_record(container_id, project)
        if record.status == "ready" and not kernel.kernel_listening(
            Path(record.socket_dir), SANDBOX_UID
        ):
            state = self._runtime.state(record.id)
            if state is None or not state.running:
                self._mark_died(record)
                record = self.get_record(container_id, project)
        return record

    def retrieve(self, container_id: str, *, project: str = "default") -> Container:
        """One sandbox (a ready one whose container died is reported `terminated`)."""
        return to_container(self.get_checked(container_id, project))

    def list(
        self, params: dict[str, Any], *, name: str | None = None, project: str = "default"
    ) -> CursorPage[Container]:
        """A page of sandboxes, newest first by default; iterate it to walk every page."""
        query = parse(ListParams, params)
        try:
            records, has_more = self._store.page(
                project=project, limit=query.limit, order=query.order, after=query.after, name=name
            )
        except LookupError:
            raise invalid_after(query.after, "container") from None
        quiet = [
            r
            for r in records
            if r.status == "ready" and not kernel.kernel_listening(Path(r.socket_dir), SANDBOX_UID)
        ]
        if quiet:  # one engine call tells which of them still run
            dead = {r.id for r in quiet} - self._runtime.running(self._settings.store_id)
            records = [self._mark_died(r) if r.id in dead else r for r in records]
        data = [to_container(r) for r in records]
        page = CursorPage[Container](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )
        return page.with_next(
            lambda after: self.list({**params, "after": after}, name=name, project=project)
        )

    def delete(self, container_id: str, *, project: str = "default") -> ContainerDeleted:
        """Stop and remove a sandbox and everything it owns; of concurrent deletes one wins,
        the others get NotFoundError."""
        record = self.get_record(container_id, project)
        if not self.destroy(record, status="terminated", deleted=True, project=project):
            raise NotFoundError(
                f"No container found with id {container_id!r}", param="container_id"
            )
        return ContainerDeleted(id=container_id)

    def destroy(
        self,
        record: ContainerRecord,
        *,
        status: ContainerStatus,
        deleted: bool = False,
        error: str | None = None,
        project: str | None = None,
    ) -> bool:
        """End a sandbox once: mark the record (one atomic store transition, so of racing
        deletes, expiries, reconciles and pool retirements exactly one proceeds), then remove
        its container, volumes and socket folder. False if another caller ended it first."""
        before = self._store.end(
            record.id, status=status, deleted=deleted, error=error, project=project
        )
        if before is None:
            return False
        if before.is_live:
            self._teardown(before)
        return True

    def _teardown(self, record: ContainerRecord) -> None:
        """Remove what a sandbox holds; one teardown of a sandbox at a time in this process."""
        with _TEARDOWN_LOCKS[hash(record.id) % len(_TEARDOWN_LOCKS)]:
            self._kernels.close(record.id)
            try:
                self._runtime.remove(record.id)
            finally:
                kernel.remove_socket_dir(Path(record.socket_dir))
                deadline_file.remove(self._settings.deadlines_root / record.id)
                try:
                    if self._content is not None:
                        self._content.remove(record.id)
                finally:
                    if self._egress is not None:
                        self._egress.release(record)  # the record is no longer live

    def _mark_died(self, record: ContainerRecord) -> ContainerRecord:
        """Mark a ready sandbox whose container is gone `terminated`, with the reason (as
        reconcile does; `failed` records are creates that never finished, and hidden)."""
        code = self._runtime.exit_code(record.id, record.created_at)
        reason = (
            f"the sandbox's container exited (code {code})"
            if code is not None
            else "the sandbox's container stopped"
        )
        if self.destroy(record, status="terminated", error=reason):
            logger.warning("sandbox %s: %s", record.id, reason)
        return self._store.get(record.id) or record

    def failure(self, container_id: str, exc: BaseException) -> APIError:
        """The API error for an operation on a sandbox that failed with `exc`, told from the
        sandbox's state: ConflictError once it ended (deleted, expired, or its container
        died, which marks it `terminated`), else `exc` if it is one of ours, else a 500."""
        current = self._store.get(container_id)
        if current is not None and current.status == "ready" and not current.deleted:
            try:
                state = self._runtime.state(container_id)
            except APIError as engine:
                return engine
            if state is None or not state.running:
                current = self._mark_died(current)
        if current is None or current.deleted:
            return ConflictError(f"Container {container_id} was deleted", param="container_id")
        if not current.is_live:
            why = f" ({current.error})" if current.error else ""
            return ConflictError(
                f"Container {container_id} is {current.status}{why}", param="container_id"
            )
        if isinstance(exc, APIError):
            return exc
        logger.error("sandbox %s: unexpected %r", container_id, exc)
        return InternalServerError(f"Container {container_id}: {type(exc).__name__}")
