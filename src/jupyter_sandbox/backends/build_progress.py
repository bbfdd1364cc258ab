"""Build progress: how an image build reports its stages and tool output.

`BuildProgress` is the protocol the build calls; `RichBuildProgress` draws it for the CLI,
and `NullProgress` (the default) only logs.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

logger = logging.getLogger(__name__)


class BuildProgress(Protocol):
    """Receives a build's stages and output lines (the CLI shows them with rich)."""

    def step(self, description: str) -> None:
        """A new stage started."""

    def log(self, line: str) -> None:
        """One line of tool output within the current stage."""


class RichBuildProgress:
    """A `BuildProgress` drawn as a rich spinner with the stage, last output line and time."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("[dim]{task.fields[line]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichBuildProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish()
        self._progress.stop()

    def step(self, description: str) -> None:
        self._finish()
        self._task = self._progress.add_task(description, total=None, line="")

    def log(self, line: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, line=line.strip()[:60])

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=1, completed=1, line="")
            self._task = None


class NullProgress:
    """A `BuildProgress` that only logs: stages at INFO, tool output at DEBUG."""

    def step(self, description: str) -> None:
        logger.info("%s", description)

    def log(self, line: str) -> None:
        logger.debug("%s", line.rstrip())
