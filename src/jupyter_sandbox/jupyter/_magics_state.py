"""What the panel (`widgets`) and the snapshot commands (`magics_snapshots`) use of the
`%sandbox` magics: their client and the sandbox in use.

A Protocol, so neither imports `magics` (which imports them: no import circle).
"""

from __future__ import annotations

from typing import Protocol

from jupyter_sandbox.client import Client

__all__ = ["MagicsState"]


class MagicsState(Protocol):
    """The part of `SandboxMagics` the panel and the snapshot commands use."""

    current: str | None
    """The id of the sandbox `%%sandbox` runs in, or None."""

    @property
    def client(self) -> Client: ...

    def _require_current(self, command: str) -> str:
        """The sandbox in use; a UsageError naming `command` when there is none."""
        ...
