"""What the Client's resources (`containers`, `files`, `containers.files`, `skills`,
`containers.snapshots`) use of the Client: its project, settings, backend, the expiry sweep
and the core services it composed.

A Protocol, so a resource never imports the Client that builds it (no import circle): the
Client (`client/__init__.py`) imports the resources, the resources import this.
"""

from __future__ import annotations

from typing import Protocol

from jupyter_sandbox.backends.base import Backend
from jupyter_sandbox.backends.store import ContainerRecord
from jupyter_sandbox.core.container_files import ContainerFileService
from jupyter_sandbox.core.containers import ContainerService
from jupyter_sandbox.core.execution import ExecutionService
from jupyter_sandbox.core.files import FileService
from jupyter_sandbox.core.pause import PauseService
from jupyter_sandbox.core.skills import SkillService
from jupyter_sandbox.core.snapshots import SnapshotService
from jupyter_sandbox.settings import Settings

__all__ = ["ClientServices"]


class ClientServices(Protocol):
    """The part of `Client` its resources call; `Client` has it structurally."""

    @property
    def project(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def _backend(self) -> Backend: ...

    @property
    def _executions(self) -> ExecutionService: ...

    @property
    def _files(self) -> FileService: ...

    @property
    def _container_files(self) -> ContainerFileService: ...

    @property
    def _skills(self) -> SkillService: ...

    @property
    def _snapshots(self) -> SnapshotService: ...

    @property
    def _pause(self) -> PauseService: ...

    @property
    def _containers(self) -> ContainerService: ...

    def sweep(self) -> list[str]: ...

    def _resumed(self, container_id: str, project: str) -> ContainerRecord: ...
