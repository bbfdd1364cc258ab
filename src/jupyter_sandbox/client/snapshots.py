"""`client.containers.snapshots` and the create-time hooks of issue 18 (idle policy, fork)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox._exceptions import APIError
from jupyter_sandbox.backends.snapshot_store import SnapshotRecord
from jupyter_sandbox.types.container import Container, IdleAction
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.snapshot import Snapshot, SnapshotDeleted

if TYPE_CHECKING:
    from jupyter_sandbox.client._services import ClientServices

__all__ = ["ContainerSnapshots", "finish_create"]

logger = logging.getLogger(__name__)


@api_errors
class ContainerSnapshots:
    """`client.containers.snapshots`: keep a sandbox's files and variables; fork them with
    `containers.create(name=..., snapshot_id=...)`. Pickles are loaded only in sandboxes."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client

    def create(self, container_id: str, *, name: str | None = None) -> Snapshot:
        """Snapshot a sandbox at a cell boundary: /mnt/data, /workspace and its variables.

        Unpicklable objects are left out and named in `report.skipped`.

        Raises:
            RequestTooLargeError: over `snapshot_max_bytes` (the message names the cap).
        """
        self._client.sweep()
        params: dict[str, Any] = {} if name is None else {"name": name}
        return self._client._snapshots.create(container_id, params, project=self._client.project)

    def list(self, container_id: str) -> CursorPage[Snapshot]:
        """A sandbox's snapshots, oldest first (kept after the sandbox ends, until expiry)."""
        data = self._client._snapshots.list(container_id, project=self._client.project)
        return CursorPage[Snapshot](
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=False,
        )

    def retrieve(self, container_id: str, snapshot_id: str) -> Snapshot:
        """One snapshot."""
        return self._client._snapshots.retrieve(
            container_id, snapshot_id, project=self._client.project
        )

    def delete(self, container_id: str, snapshot_id: str) -> SnapshotDeleted:
        """Delete a snapshot."""
        return self._client._snapshots.delete(
            container_id, snapshot_id, project=self._client.project
        )


def finish_create(
    client: ClientServices,
    container: Container,
    idle_action: IdleAction | None,
    snapshot: SnapshotRecord | None,
) -> Container:
    """After a create: record the idle policy, restore the snapshot a fork names; on any
    failure the new sandbox is deleted (nothing is left) and the error raised."""
    try:
        client._pause.set_policy(container.id, idle_action)
        if snapshot is None:
            return container
        record = client._containers.get_record(container.id, project=client.project)
        report = client._snapshots.restore(record, snapshot)
    except BaseException:
        with contextlib.suppress(APIError):
            client._containers.delete(container.id, project=client.project)
        raise
    logger.info("forked snapshot %s into %s", snapshot.id, container.id)
    current = client._containers.retrieve(container.id, project=client.project)
    return Container.model_validate(
        {
            **current.model_dump(),
            "snapshot_id": snapshot.id,
            "restored": report.model_dump(mode="json"),
        }
    )
