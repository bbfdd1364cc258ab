"""`/v1/containers/{id}/snapshots` (extension, issue 18): create, list, retrieve, delete.
Forking is `POST /v1/containers` with `snapshot_id`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from jupyter_sandbox.server.routes import ERROR_RESPONSES
from jupyter_sandbox.server.state import StateDep, TenantDep, run, run_long
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.snapshot import Snapshot, SnapshotCreateParams, SnapshotDeleted

router = APIRouter(
    prefix="/v1/containers/{container_id}/snapshots",
    tags=["container snapshots"],
    responses=ERROR_RESPONSES,
)
ContainerId = Annotated[str, Path(description="The container's id (`cntr_...`).")]
SnapshotId = Annotated[str, Path(description="The snapshot's id (`snap_...`).")]


@router.post("", response_model=Snapshot, summary="Snapshot a container")
async def create_snapshot(
    container_id: ContainerId, tenant: TenantDep, state: StateDep, params: SnapshotCreateParams
) -> Snapshot:
    """Keep the container's /mnt/data and /workspace files and its kernel's variables
    (pickled inside the sandbox; unpicklable objects are named in `report.skipped`)."""
    return await run_long(
        state, tenant.client.containers.snapshots.create, container_id, name=params.name
    )


@router.get("", response_model=CursorPage[Snapshot], summary="List a container's snapshots")
async def list_snapshots(container_id: ContainerId, tenant: TenantDep) -> CursorPage[Snapshot]:
    """The container's snapshots, oldest first."""
    return await run(tenant.client.containers.snapshots.list, container_id)


@router.get("/{snapshot_id}", response_model=Snapshot, summary="Retrieve a snapshot")
async def retrieve_snapshot(
    container_id: ContainerId, snapshot_id: SnapshotId, tenant: TenantDep
) -> Snapshot:
    """One snapshot (404 if it belongs to another project)."""
    return await run(tenant.client.containers.snapshots.retrieve, container_id, snapshot_id)


@router.delete("/{snapshot_id}", response_model=SnapshotDeleted, summary="Delete a snapshot")
async def delete_snapshot(
    container_id: ContainerId, snapshot_id: SnapshotId, tenant: TenantDep
) -> SnapshotDeleted:
    """Delete a snapshot."""
    return await run(tenant.client.containers.snapshots.delete, container_id, snapshot_id)
