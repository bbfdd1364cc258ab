"""`/v1/responses`: create (JSON, or server-sent events with `"stream": true`), retrieve,
input items, delete. The tool loop runs in a worker thread with the long-operation budget;
the model is the operator's chat completions server (`serve --model-base-url`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response as HTTPResponse

from jupyter_sandbox.server.responses import ResponsesService
from jupyter_sandbox.server.responses.events import EventSink, response_events
from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.routes.common import After, Limit, Order, json_object
from jupyter_sandbox.server.state import StateDep, TenantDep, run, run_long
from jupyter_sandbox.types.response_params import ResponseCreateParams, parse_create
from jupyter_sandbox.types.responses import InputItemList, Response, ResponseDeleted

router = APIRouter(prefix="/v1/responses", tags=["responses"], responses=ERROR_RESPONSES)
ResponseId = Annotated[str, Path(description="The response's id (`resp_...`).")]
ERROR_RESPONSES_MODEL: dict[int | str, dict[str, Any]] = {
    502: {"description": "The model server is unreachable or answered garbage"},
    504: {"description": "The model server did not answer within `model_timeout`"},
}


def service(request: Request) -> ResponsesService:
    """The app's responses service."""
    found: ResponsesService = request.app.state.responses
    return found


@router.post(
    "",
    response_model=Response,
    summary="Create a model response (tools run in sandboxes)",
    responses={
        **ERROR_RESPONSES_MODEL,
        200: {
            "content": {
                "application/json": {},
                "text/event-stream": {"schema": {"type": "string"}},
            },
            "description": "The response, or (with `stream`) its events, ending with "
            "`response.completed`, `response.incomplete` or `response.failed`.",
        },
    },
)
async def create_response(
    request: Request, tenant: TenantDep, state: StateDep
) -> HTTPResponse | Response:
    """Run the model with the tools until it answers; `code_interpreter` and `shell` calls
    run in this project's sandboxes, `function` calls come back for the caller to run."""
    body = await json_object(request, set(ResponseCreateParams.model_fields))
    params = parse_create(body)
    responses = service(request)
    turns = await run(responses.prepare, tenant.project, tenant.client, params)
    if params.stream:

        def work(sink: EventSink) -> None:
            responses.run(tenant.project, turns, sink)

        return response_events(work, limiter=state.long_operations)
    return await run_long(state, responses.run, tenant.project, turns)


@router.get("/{response_id}", response_model=Response, summary="Retrieve a response")
async def retrieve_response(
    response_id: ResponseId, request: Request, tenant: TenantDep
) -> Response:
    """A stored response of this project."""
    return await run(service(request).retrieve, response_id, tenant.project)


@router.get("/{response_id}/input_items", response_model=InputItemList, summary="List input items")
async def list_input_items(
    response_id: ResponseId,
    request: Request,
    tenant: TenantDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: After = None,
    include: Annotated[list[str] | None, Query(description="Accepted; ignored.")] = None,
) -> InputItemList:
    """The input items the response was created with (newest first by default)."""
    return await run(
        service(request).input_items,
        response_id,
        tenant.project,
        limit=limit,
        order=order,
        after=after,
    )


@router.delete("/{response_id}", response_model=ResponseDeleted, summary="Delete a response")
async def delete_response(
    response_id: ResponseId, request: Request, tenant: TenantDep
) -> ResponseDeleted:
    """Forget a stored response (the sandboxes it used stay until they expire)."""
    return await run(service(request).delete, response_id, tenant.project)
