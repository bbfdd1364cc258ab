"""Stored responses (the `responses` table): what `GET /v1/responses/{id}` returns, its input
items, and the conversation state `previous_response_id` continues from.

The table is migration 2 of the store (`backends/migrations.py`), so a store made before it
existed gains it on the next start. Rows are JSON documents: the response
object, its input items, the chat messages of the whole conversation so far (without the
instructions, which are not carried over), and the sandboxes its `auto` containers use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jupyter_sandbox.backends.store import Store

__all__ = ["ResponseRecord", "ResponseStore"]


@dataclass(frozen=True)
class ResponseRecord:
    """One stored response."""

    id: str
    project: str
    created_at: float
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    containers: dict[str, str]
    """An `auto` container's configuration key -> the sandbox made for it."""


class ResponseStore:
    """The `responses` table of one store, filtered by project on every read."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def put(self, record: ResponseRecord) -> None:
        """Insert or replace a response."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO responses (id, project, created_at, response, input_items, "
                "messages, containers) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET project = excluded.project, created_at = excluded.created_at, "
                "response = excluded.response, input_items = excluded.input_items, "
                "messages = excluded.messages, containers = excluded.containers",
                (
                    record.id,
                    record.project,
                    record.created_at,
                    json.dumps(record.response),
                    json.dumps(record.input_items),
                    json.dumps(record.messages),
                    json.dumps(record.containers),
                ),
            )

    def get(self, response_id: str, project: str) -> ResponseRecord | None:
        """The response if it belongs to `project`, else None."""
        with self._store.reading() as db:
            row = db.execute(
                "SELECT * FROM responses WHERE id = ? AND project = ?", (response_id, project)
            ).fetchone()
        if row is None:
            return None
        return ResponseRecord(
            id=row["id"],
            project=row["project"],
            created_at=row["created_at"],
            response=json.loads(row["response"]),
            input_items=json.loads(row["input_items"]),
            messages=json.loads(row["messages"]),
            containers=json.loads(row["containers"]),
        )

    def delete(self, response_id: str, project: str) -> bool:
        """Remove a response; False if `project` has none of that id."""
        with self._store.transaction() as db:
            cursor = db.execute(
                "DELETE FROM responses WHERE id = ? AND project = ?", (response_id, project)
            )
        return cursor.rowcount > 0
