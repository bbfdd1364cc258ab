"""What the server holds while it runs: one embedded Client, a view of it per project, the
create ledger, and limiters that keep long operations off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jupyter_sandbox._exceptions import AuthenticationError, InternalServerError
from jupyter_sandbox.client import Client
from jupyter_sandbox.server.auth import ApiKey, KeyRing
from jupyter_sandbox.server.limits import CreateLedger, RateLimiter
from jupyter_sandbox.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

LONG_OPERATIONS = 64
"""Creates and executions that may run at once (each holds a worker thread while it runs)."""


@dataclass
class ServerState:
    """Shared by every request of one server process."""

    settings: Settings
    keys: KeyRing
    rate_limiter: RateLimiter
    ledger: CreateLedger = field(default_factory=CreateLedger)
    client: Client | None = None
    views: dict[str, Client] = field(default_factory=dict)
    quota_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    long_operations: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(LONG_OPERATIONS)
    )

    def view(self, project: str) -> Client:
        """The client as `project` sees it."""
        if self.client is None:
            raise InternalServerError("the server is not started")
        found = self.views.get(project)
        if found is None:
            found = self.views[project] = self.client.for_project(project)
        return found

    def quota_lock(self, project: str) -> anyio.Lock:
        """Serialises quota checks of one project."""
        lock = self.quota_locks.get(project)
        if lock is None:
            lock = self.quota_locks[project] = anyio.Lock()
        return lock


async def run(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking core call in a worker thread (the event loop never waits on Docker)."""
    return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))


async def run_long(
    state: ServerState, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R:
    """`run` for creates and executions, with their own thread budget, so long runs cannot
    starve quick requests of worker threads."""
    return await anyio.to_thread.run_sync(
        partial(function, *args, **kwargs), limiter=state.long_operations
    )


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from the server's key file or JUPYTER_SANDBOX_API_KEYS.",
)


@dataclass(frozen=True)
class Tenant:
    """The caller: its key, its project, and the client scoped to that project."""

    key: ApiKey
    client: Client

    @property
    def project(self) -> str:
        """The project (tenant) every object of this request belongs to."""
        return self.key.project


def server_state(request: Request) -> ServerState:
    """The running server's state."""
    state: ServerState = request.app.state.server
    return state


def tenant(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Tenant:
    """The authenticated caller (the middleware checked the key before the body was read)."""
    key = request.scope.get("state", {}).get("api_key")
    if not isinstance(key, ApiKey):
        raise AuthenticationError("Incorrect API key provided.")
    return Tenant(key, server_state(request).view(key.project))


TenantDep = Annotated[Tenant, Depends(tenant)]
StateDep = Annotated[ServerState, Depends(server_state)]
