"""The snapshot object (an extension): a sandbox's files and kernel variables, kept to fork.

The report inside it is written by the sandbox, so every field is bounded and checked here
before the host keeps it; the pickled namespace itself is never read on the host.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_REPORT_NAMES = 2000
"""Names a report keeps per list; a sandbox with more says so in `truncated`."""
_Name = Annotated[str, Field(max_length=200)]


class SkippedObject(BaseModel):
    """A variable left out of a snapshot, and why (it could not be pickled)."""

    model_config = ConfigDict(extra="forbid")
    name: _Name
    type: str = Field(max_length=200)
    """The object's type, as the sandbox named it (`generator`, `socket`, ...)."""
    reason: str = Field(max_length=500)


class SnapshotReport(BaseModel):
    """What a snapshot holds, as the sandbox reported it (sandbox-controlled, bounded)."""

    model_config = ConfigDict(extra="forbid")
    variables: list[_Name] = Field(default_factory=list, max_length=MAX_REPORT_NAMES)
    """Names of the variables, functions and classes pickled (with dill, in the sandbox)."""
    imports: dict[_Name, str] = Field(default_factory=dict, max_length=MAX_REPORT_NAMES)
    """Names bound to modules (`np` -> `numpy`): re-imported on restore, not pickled."""
    skipped: list[SkippedObject] = Field(default_factory=list, max_length=MAX_REPORT_NAMES)
    """Names left out: unpicklable objects (open files, sockets, generators, locks, ...)."""
    files: int = Field(default=0, ge=0)
    """Regular files kept from /mnt/data and /workspace."""
    truncated: bool = False
    """More names than the report keeps."""


class Snapshot(BaseModel):
    """A snapshot of a sandbox (extension): `containers.create(snapshot_id=...)` forks it."""

    model_config = ConfigDict(extra="allow")
    id: str
    """`snap_` + 32 hex."""
    object: Literal["container.snapshot"] = "container.snapshot"
    container_id: str
    """The sandbox it was taken from (it may have ended since)."""
    name: str | None = None
    created_at: int
    expires_at: int
    """When it is deleted by itself (`snapshot_expiry_seconds` after creation)."""
    bytes: int
    """Size of the stored bundle (files plus pickled namespace)."""
    report: SnapshotReport


class SnapshotDeleted(BaseModel):
    """The body a snapshot delete returns."""

    id: str
    object: Literal["container.snapshot.deleted"] = "container.snapshot.deleted"
    deleted: bool = True


class SnapshotCreateParams(BaseModel):
    """What `containers.snapshots.create` accepts."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """A label of your own."""


class RestoreReport(BaseModel):
    """What a fork restored, as the new sandbox reported it (sandbox-controlled, bounded)."""

    model_config = ConfigDict(extra="forbid")
    variables: list[_Name] = Field(default_factory=list, max_length=MAX_REPORT_NAMES)
    imports: list[_Name] = Field(default_factory=list, max_length=MAX_REPORT_NAMES)
    failed: list[SkippedObject] = Field(default_factory=list, max_length=MAX_REPORT_NAMES)
    """Names that could not be restored (a module missing here, a failing unpickle)."""
