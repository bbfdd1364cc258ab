"""Containers: create, retrieve, list and delete sandboxes; leave nothing behind."""

from __future__ import annotations

import logging
import time
from typing import Any

from jupyter_sandbox._exceptions import (
    APIError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
)
from jupyter_sandbox.backends.base import Backend, SandboxState
from jupyter_sandbox.backends.store import ContainerRecord, Store
from jupyter_sandbox.core.container_files import SandboxContent
from jupyter_sandbox.core.network import check_ceiling
from jupyter_sandbox.core.pause import is_paused
from jupyter_sandbox.core.pool import POOL_PROJECT, WarmPool, pool_idle_minutes, pool_request
from jupyter_sandbox.core.resources import BootRequest, SandboxResources
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import (
    LARGE_MEMORY_LIMITS,
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
        status="paused" if is_paused(record) else record.status,  # issue 18
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
        backend: Backend,
        resources: SandboxResources,
        content: SandboxContent | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backend = backend
        self._resources = resources
        self._content = content
        self._pool: WarmPool | None = None

    def attach_pool(self, pool: WarmPool) -> None:
        """Serve default-configuration creates from this warm pool."""
        self._pool = pool

    def create(self, params: dict[str, Any], *, project: str) -> Container:
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
            self._content.plan(request.file_ids, request.skills, project=project)
            if self._content is not None
            else None
        )
        return self._resources.acquire(
            BootRequest(request, memory_limit, lifetime, idle_minutes, project, plan)
        )

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
            # Fail closed: never start a sandbox with a policy we cannot enforce.
            check_ceiling(self._settings, request.network_policy)
            self._backend.check_network(request.network_policy)

    def get_record(self, container_id: str, *, project: str) -> ContainerRecord:
        """The visible record of a sandbox, or NotFoundError."""
        record = self._store.get(container_id) if isinstance(container_id, str) else None
        if record is None or record.deleted or record.project != project:
            raise NotFoundError(
                f"No container found with id {container_id!r}", param="container_id"
            )
        return record

    def get_checked(self, container_id: str, *, project: str) -> ContainerRecord:
        """`get_record`, after checking that a ready sandbox still runs (its kernel's heartbeat
        socket accepts a connection, else the engine says): one whose container died (its
        PID 1 was killed) is marked `terminated` with the reason."""
        record = self.get_record(container_id, project=project)
        if record.status == "ready" and not self._listening(record):
            state = self._backend.state(record.id)
            if state is None or not state.running:
                self._mark_died(record, state)
                record = self.get_record(container_id, project=project)
        return record

    def _listening(self, record: ContainerRecord) -> bool:
        endpoint = self._backend.kernel_endpoint(record.socket_dir, record.kernel_key)
        return self._backend.kernel_listening(endpoint)

    def retrieve(self, container_id: str, *, project: str) -> Container:
        """One sandbox (a ready one whose container died is reported `terminated`)."""
        return to_container(self.get_checked(container_id, project=project))

    def list(
        self, params: dict[str, Any], *, name: str | None = None, project: str
    ) -> CursorPage[Container]:
        """A page of sandboxes, newest first by default; iterate it to walk every page."""
        query = parse(ListParams, params)
        try:
            records, has_more = self._store.page(
                project=project, limit=query.limit, order=query.order, after=query.after, name=name
            )
        except LookupError:
            raise invalid_after(query.after, "container") from None
        quiet = [r for r in records if r.status == "ready" and not self._listening(r)]
        if quiet:  # one backend call tells which of them still run
            dead = {r.id for r in quiet} - self._backend.running_sandboxes()
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

    def delete(self, container_id: str, *, project: str) -> ContainerDeleted:
        """Stop and remove a sandbox and everything it owns; of concurrent deletes one wins,
        the others get NotFoundError."""
        record = self.get_record(container_id, project=project)
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
        """End a sandbox once and release everything it holds (`SandboxResources.release`);
        False if another caller ended it first."""
        return self._resources.release(
            record, status=status, deleted=deleted, error=error, project=project
        )

    def _mark_died(
        self, record: ContainerRecord, state: SandboxState | None = None
    ) -> ContainerRecord:
        """Mark a ready sandbox whose container is gone `terminated` (`expired` once its hard
        lifetime is over: its supervisor obeyed the deadline), with the reason (the
        backend's, as `state` tells it, else the exit code), as reconcile does (`failed`
        records are creates that never finished, and hidden)."""
        reason = state.reason if state is not None else None
        if reason is None:
            code = self._backend.exit_code(record.id, record.created_at)
            reason = (
                f"the sandbox's container exited (code {code})"
                if code is not None
                else "the sandbox's container stopped"
            )
        status: ContainerStatus = "expired" if time.time() >= record.expires_at else "terminated"
        if self.destroy(record, status=status, error=reason):
            logger.warning("sandbox %s: %s", record.id, reason)
        return self._store.get(record.id) or record

    def failure(self, container_id: str, exc: BaseException) -> APIError:
        """The API error for an operation on a sandbox that failed with `exc`, told from the
        sandbox's state: ConflictError once it ended (deleted, expired, or its container
        died, which marks it `terminated`), else `exc` if it is one of ours, else a 500."""
        current = self._store.get(container_id)
        if current is not None and current.status == "ready" and not current.deleted:
            try:
                state = self._backend.state(container_id)
            except APIError as engine:
                return engine
            if state is None or not state.running:
                current = self._mark_died(current, state)
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
