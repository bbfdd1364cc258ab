"""What the `/v1/responses` routes call (in worker threads): prepare a response against the
project's stored conversation, store it when it ends, and read, page and delete stored ones.

Every lookup is by (id, project): another project's response is a 404 like an unknown one.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import TypeAdapter

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends.open_store import open_store
from jupyter_sandbox.backends.response_store import ResponseRecord, ResponseStore
from jupyter_sandbox.client import Client
from jupyter_sandbox.server.responses.loop import Turns
from jupyter_sandbox.server.responses.prepare import prepare
from jupyter_sandbox.server.responses.upstream import ChatUpstream
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.response_params import ResponseCreateParams
from jupyter_sandbox.types.responses import (
    InputItem,
    InputItemList,
    Response,
    ResponseDeleted,
)

__all__ = ["ResponsesService"]

_ITEM: TypeAdapter[InputItem] = TypeAdapter(InputItem)


class ResponsesService:
    """Stored responses and the model client, shared by every request of a server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store = open_store(settings)
        self.responses = ResponseStore(self._store)
        self._upstream: ChatUpstream | None = None
        self._lock = threading.Lock()

    def upstream(self) -> ChatUpstream:
        """The model client (UpstreamError if none is configured)."""
        with self._lock:
            if self._upstream is None:
                self._upstream = ChatUpstream(self.settings)
            return self._upstream

    def prepare(self, project: str, client: Client, params: ResponseCreateParams) -> Turns:
        """Check a create request and build its loop.

        Raises:
            NotFoundError: `previous_response_id` or a tool's container is unknown.
            BadRequestError: the input is unusable.
            UpstreamError: no model server is configured.
        """
        previous = None
        if params.previous_response_id is not None:
            record = self.responses.get(params.previous_response_id, project)
            if record is None:
                raise NotFoundError(
                    f"Previous response with id '{params.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            previous = (record.messages, record.containers)
        return prepare(
            params,
            client=client,
            previous=previous,
            upstream=self.upstream(),
            max_tool_calls=self.settings.responses_max_tool_calls,
            max_live=self.settings.server_max_live_sandboxes,
        )

    def run(self, project: str, turns: Turns, sink: Any = None) -> Response:
        """Run the loop, then store the response (unless `store: false`)."""
        response = turns.run(sink)
        if turns.params.store:
            self.responses.put(
                ResponseRecord(
                    id=response.id,
                    project=project,
                    created_at=response.created_at,
                    response=response.model_dump(mode="json"),
                    input_items=[i.model_dump(mode="json") for i in turns.input_items],
                    messages=turns.messages,
                    containers=turns.tools.containers,
                )
            )
        return response

    def _record(self, response_id: str, project: str) -> ResponseRecord:
        record = self.responses.get(response_id, project)
        if record is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return record

    def retrieve(self, response_id: str, project: str) -> Response:
        """A stored response."""
        return Response.model_validate(self._record(response_id, project).response)

    def input_items(
        self, response_id: str, project: str, *, limit: int, order: str, after: str | None
    ) -> InputItemList:
        """A page of a stored response's input items (`order` "desc": newest first)."""
        stored = self._record(response_id, project).input_items
        items = [_ITEM.validate_python(item) for item in stored]
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise BadRequestError(f"Invalid after: no input item {after!r}", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return InputItemList(
            data=page,
            first_id=page[0].id if page else "",
            last_id=page[-1].id if page else "",
            has_more=len(items) > limit,
        )

    def delete(self, response_id: str, project: str) -> ResponseDeleted:
        """Forget a stored response (its sandboxes stay until they expire)."""
        if not self.responses.delete(response_id, project):
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return ResponseDeleted(id=response_id)

    def close(self) -> None:
        """Close the model client and the store connection."""
        if self._upstream is not None:
            self._upstream.close()
        self._store.close()
