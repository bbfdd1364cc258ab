"""`/v1/containers`: create (retry-safe, quota-checked), list, retrieve, delete, and the
`execute` extension (JSON, or server-sent events with `"stream": true`)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from jupyter_sandbox._exceptions import APIError, ConflictError, NotFoundError
from jupyter_sandbox.core.validation import MAX_TIMEOUT_SECONDS
from jupyter_sandbox.server.errors import (
    INTERNAL_MESSAGE,
    QuotaExceededError,
    api_error_parts,
    error_body,
)
from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.routes.common import After, Limit, Order, list_params
from jupyter_sandbox.server.sse import execution_events
from jupyter_sandbox.server.state import StateDep, TenantDep, run, run_long
from jupyter_sandbox.types.container import (
    Container,
    ContainerCreateParams,
    ContainerDeleted,
    NetworkPolicyAllowlist,
)
from jupyter_sandbox.types.execution import Execution
from jupyter_sandbox.types.page import CursorPage

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/containers", tags=["containers"], responses=ERROR_RESPONSES)
ContainerId = Annotated[str, Path(description="The container's id (`cntr_...`).")]
MAX_CODE_CHARS = 10 * 2**20


class ExecuteParams(BaseModel):
    """What `POST /v1/containers/{id}/execute` accepts (an extension of the hosted API)."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=MAX_CODE_CHARS)
    """Python source run in the sandbox's kernel; state persists between calls."""
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, strict=True, allow_inf_nan=False
    )
    """Seconds before the run is interrupted (then the kernel restarted if it stays busy):
    a JSON number, finite, in (0, 86400]; strings and booleans are refused."""
    stream: bool = False
    """Answer with server-sent events: `output` per output, then `done` (the Execution) or
    `error`."""


def _retry_count(request: Request) -> int:
    raw = request.headers.get("x-stainless-retry-count", "0")
    return int(raw) if raw.isdigit() else 0


@router.post("", response_model=Container, summary="Create a container")
async def create_container(
    params: ContainerCreateParams, request: Request, tenant: TenantDep, state: StateDep
) -> Container:
    """Start a sandbox and wait until its kernel answers. A retried request (the SDK's
    `X-Stainless-Retry-Count` > 0) with the same body returns the container its first attempt
    made instead of starting another."""
    body: dict[str, Any] = params.model_dump(mode="json", exclude_unset=True)
    if isinstance(params.network_policy, NetworkPolicyAllowlist):  # dumps leave secrets out
        body["network_policy"] = params.network_policy.create_params()
    fingerprint = state.ledger.fingerprint(tenant.project, body)
    if _retry_count(request) > 0:
        earlier = await state.ledger.find(fingerprint)
        if earlier is not None:
            await state.ledger.wait(earlier)
            if earlier.container_id is not None:
                with contextlib.suppress(NotFoundError):  # deleted since: create anew
                    return await run(tenant.client.containers.retrieve, earlier.container_id)
    async with state.quota_lock(tenant.project):
        live = await run(tenant.client.count_live, skip_creating_here=True)
        limit = state.settings.server_max_live_sandboxes
        if live + state.ledger.in_flight(tenant.project) >= limit:
            raise QuotaExceededError(
                f"Quota reached: this project may hold {limit} live containers; delete one "
                "or wait for one to expire.",
                retry_after=await _next_expiry(tenant, state),
                should_retry=False,
                code="insufficient_quota",
            )
        attempt = await state.ledger.start(fingerprint, tenant.project)
    container_id: str | None = None
    try:
        container = await run_long(state, tenant.client.containers.create, **body)
        container_id = container.id
    finally:
        await state.ledger.finish(fingerprint, tenant.project, attempt, container_id)
    return container


async def _next_expiry(tenant: TenantDep, state: StateDep) -> float:
    """Seconds until the project's soonest idle or hard expiry (at least 1)."""
    page = await run(tenant.client.containers.list, limit=100, order="asc")
    deadlines = [
        min(c.last_active_at + c.expires_after.minutes * 60, c.expires_at)
        for c in page.data
        if c.status == "ready"
    ]
    return max(1.0, min(deadlines) - time.time()) if deadlines else 60.0


@router.get("", response_model=CursorPage[Container], summary="List containers")
async def list_containers(
    tenant: TenantDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: After = None,
    name: Annotated[str | None, Query(description="Only containers with this name.")] = None,
) -> CursorPage[Container]:
    """A page of this project's containers."""
    return await run(tenant.client.containers.list, **list_params(limit, order, after), name=name)


@router.get("/{container_id}", response_model=Container, summary="Retrieve a container")
async def retrieve_container(container_id: ContainerId, tenant: TenantDep) -> Container:
    """One container (404 if it belongs to another project)."""
    return await run(tenant.client.containers.retrieve, container_id)


@router.delete("/{container_id}", response_model=ContainerDeleted, summary="Delete a container")
async def delete_container(container_id: ContainerId, tenant: TenantDep) -> ContainerDeleted:
    """Stop and remove the sandbox with its files; answers 200 with a JSON body."""
    return await run(tenant.client.containers.delete, container_id)


@router.post(
    "/{container_id}/execute",
    response_model=Execution,
    summary="Run code in a container (extension)",
    responses={
        200: {
            "content": {
                "application/json": {},
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'event: output\ndata: {"type":"stream","name":"stdout",'
                    '"text":"2\\n"}\n\nevent: done\ndata: {...}\n\n',
                },
            },
            "description": "The Execution, or (with `stream`) server-sent events: `output` "
            "for each output as it arrives, then `done` with the Execution, or `error`.",
        }
    },
)
async def execute(
    container_id: ContainerId,
    params: ExecuteParams,
    request: Request,
    tenant: TenantDep,
    state: StateDep,
) -> Response:
    """Run code in the sandbox's kernel. Errors carry `x-should-retry: false`: running the
    same code twice is not harmless."""
    containers = tenant.client.containers
    accept = request.headers.get("accept", "")
    try:
        if params.stream or "text/event-stream" in accept:
            container = await run(containers.retrieve, container_id)
            if container.status != "ready":
                raise ConflictError(
                    f"Container {container.id} is {container.status}; only a ready container "
                    "runs code",
                    param="container_id",
                )
            return execution_events(
                lambda on_output: containers.execute(
                    container_id, params.code, timeout=params.timeout, on_output=on_output
                ),
                limiter=state.long_operations,
            )
        execution = await run_long(
            state, containers.execute, container_id, params.code, timeout=params.timeout
        )
    except APIError as exc:
        status, body, headers = api_error_parts(exc)
        if status != 429:
            headers["x-should-retry"] = "false"
        return JSONResponse(body, status_code=status, headers=headers)
    except Exception:
        logger.exception(
            "request %s: execute failed", request.scope.get("state", {}).get("request_id")
        )
        return JSONResponse(
            error_body(INTERNAL_MESSAGE, type="server_error"),
            status_code=500,
            headers={"x-should-retry": "false"},
        )
    return JSONResponse(execution.model_dump(mode="json"))
