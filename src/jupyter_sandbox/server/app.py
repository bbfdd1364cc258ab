"""The FastAPI application: `/v1` routes shaped like OpenAI's, one embedded Client underneath.

The server is the long-running process: on start it builds the Client (which reconciles the
store with the engine, so sandboxes that kept running are reattached and orphans reaped),
then sweeps idle expiry every `server_sweep_interval` seconds and reconciles every 30 sweeps.
Stopping it closes kernel connections only; sandboxes, records and files stay.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.client import Client
from jupyter_sandbox.server import errors
from jupyter_sandbox.server.auth import KeyRing
from jupyter_sandbox.server.limits import RateLimiter
from jupyter_sandbox.server.middleware import RequestContext
from jupyter_sandbox.server.responses import ResponsesService
from jupyter_sandbox.server.routes import (
    container_files,
    containers,
    files,
    responses,
    skills,
    snapshots,
)
from jupyter_sandbox.server.shared_limits import SharedCreateLedger, SharedRateLimiter
from jupyter_sandbox.server.state import ServerState, run
from jupyter_sandbox.settings import Settings

logger = logging.getLogger(__name__)

RECONCILE_EVERY = 30
"""Sweeps between two reconcile passes."""

DESCRIPTION = """\
OpenAI-compatible Containers, Files, Skills and Responses API over hardened local sandboxes.
Point the official openai SDK at it with `base_url="http://HOST:PORT/v1"`.

Errors use OpenAI's body `{"error": {"message", "type", "param", "code"}}`; every response
carries `x-request-id`. Ids of another project answer 404.
"""


def max_body_bytes(settings: Settings) -> int:
    """The request-body limit: the setting, else the file limit plus form framing."""
    if settings.server_max_body_bytes is not None:
        return settings.server_max_body_bytes
    return settings.file_size_limit + 2**20


async def _maintain(state: ServerState, client: Client) -> None:
    """Sweep idle expiry, and now and then reconcile, until cancelled."""
    sweeps = 0
    while True:
        await anyio.sleep(state.settings.server_sweep_interval)
        sweeps += 1
        try:
            expired = await run(client.sweep)
            if expired:
                logger.info("expired %d sandbox(es)", len(expired))
            # Once soon after start too: engine calls that a killed predecessor left in flight
            # (a container still being created) land after the start-up reconcile.
            if sweeps == 1 or sweeps % RECONCILE_EVERY == 0:
                for line in (await run(client.reconcile)).lines():
                    logger.info("reconcile: %s", line)
        except APIError as exc:
            logger.warning("maintenance pass failed: %s", exc)


def create_app(
    settings: Settings,
    keys: KeyRing,
    *,
    allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """The ASGI app.

    Args:
        settings: as for `Client` (home, limits), plus the `server_*` fields.
        keys: the accepted API keys and their projects.
        allowed_hosts: Host header names accepted (None: any); `serve` passes the loopback
            names when it binds to loopback, against DNS rebinding.
    """
    state = ServerState(
        settings=settings, keys=keys, rate_limiter=RateLimiter(settings.server_rate_limit)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = await run(Client, settings=settings)
        report = client._unreported
        for line in report.lines() if report is not None else []:
            logger.info("start-up reconcile: %s", line)
        state.client = client
        if client._store.is_shared:  # servers sharing the store share limits and retries
            state.rate_limiter = SharedRateLimiter(settings.server_rate_limit, client._store)
            state.ledger = SharedCreateLedger(client._store)
        app.state.responses = ResponsesService(settings)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_maintain, state, client)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            state.client = None
            state.views.clear()
            await run(app.state.responses.close)
            await run(client.close)

    app = FastAPI(
        title="jupyter-sandbox",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.server = state
    errors.install(app)
    for module in (containers, container_files, snapshots, files, skills, responses):
        app.include_router(module.router)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its 422 responses: validation here answers 400."""
        if app.openapi_schema is None:
            schema = generate()
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok" if state.client is not None else "starting"}

    app.add_middleware(
        RequestContext,
        keys=keys,
        rate_limiter=lambda: state.rate_limiter,
        max_body=max_body_bytes(settings),
        allowed_hosts=allowed_hosts,
    )
    return app
