"""The hard deadline a sandbox's supervisor obeys, as a host file it can read but not write.

`sandbox-init` rereads the file about once a second; the host replaces it atomically (a new
file renamed over the old), so a reader never sees half a number.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MOUNT = "/run/sandbox"
FILE_NAME = "deadline"
CONTAINER_PATH = f"{MOUNT}/{FILE_NAME}"


def write(folder: Path, deadline: float) -> None:
    """Set the deadline (Unix time); makes the folder (0755, host-owned) on first use."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o755)
    fresh = folder / f".{FILE_NAME}.new"
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{deadline:.3f}")
    fresh.replace(folder / FILE_NAME)


def remove(folder: Path) -> None:
    """Delete the folder; idempotent."""
    shutil.rmtree(folder, ignore_errors=True)
