"""One settings model, read when a `Client` is built (never at import).

Every field can be set by keyword, or by an environment variable `JUPYTER_SANDBOX_<FIELD>`
(for example `JUPYTER_SANDBOX_HOME=/srv/sandbox`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jupyter_sandbox._version import __version__

# A Unix socket path must fit in sun_path (108 bytes with the NUL); keep a margin for
# "<run dir>/<sandbox>/k-<n>".
_MAX_RUN_ROOT = 70


def _default_home() -> Path:
    return Path(jupyter_data_dir()) / "sandbox"


class Settings(BaseSettings):
    """Operator settings: where state lives, defaults and ceilings for every sandbox."""

    model_config = SettingsConfigDict(env_prefix="JUPYTER_SANDBOX_", extra="forbid")

    home: Path = Field(default_factory=_default_home)
    """State folder: the SQLite store, blobs and the kernels' socket folders."""
    image: str = f"jupyter-sandbox-kernel:{__version__}"
    """Kernel image every sandbox runs (built by `jupyter-sandbox image build`)."""
    runtime: str | None = None
    """OCI runtime: None for the engine's default (runc), or "runsc" for gVisor."""
    default_memory_limit: str = "1g"
    allow_large_memory: bool = False
    """Allow the SDK's 16g and 64g tiers."""
    default_idle_minutes: int = Field(default=20, ge=1, le=24 * 60)
    default_lifetime_seconds: int = Field(default=3600, ge=5)
    max_lifetime_seconds: int = Field(default=24 * 3600, ge=5)
    pids_limit: int = Field(default=256, ge=16)
    cpu_shares: int = Field(default=512, ge=2)
    cpus: float = Field(default=1.0, gt=0)
    """CPU ceiling per sandbox (shared cores, never dedicated)."""
    tmp_size: str = "256m"
    """Size of the /tmp tmpfs (charged to the sandbox's memory)."""
    shm_size: str = "64m"
    output_limit_bytes: int = Field(default=10 * 2**20, ge=1024)
    """Output kept per execution; the rest is dropped and the result says so."""
    start_timeout: float = Field(default=30.0, gt=0)
    """Seconds a kernel has to answer after its container starts."""
    interrupt_grace: float = Field(default=3.0, gt=0)
    """Seconds a timed-out execution has to stop after SIGINT before the kernel restarts."""
    extra_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every Docker object (tests use them to find leaks)."""
    run_root: Path | None = None
    """Folder of the kernels' socket folders; default `<home>/run`, or a short temp path."""

    @field_validator("default_memory_limit")
    @classmethod
    def _known_limit(cls, value: str) -> str:
        from jupyter_sandbox.types.container import MEMORY_LIMIT_BYTES

        if value not in MEMORY_LIMIT_BYTES:
            raise ValueError(f"must be one of {', '.join(MEMORY_LIMIT_BYTES)}")
        return value

    @property
    def store_path(self) -> Path:
        """The SQLite database."""
        return self.home / "store.sqlite3"

    @property
    def store_id(self) -> str:
        """Short stable id of this state folder, put on every Docker object as a label."""
        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    @property
    def sockets_root(self) -> Path:
        """Where per-sandbox socket folders live (short enough for Unix socket paths)."""
        if self.run_root is not None:
            return self.run_root
        candidate = self.home.resolve() / "run"
        if len(str(candidate)) <= _MAX_RUN_ROOT:
            return candidate
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"jsbx-{os.getuid()}-{self.store_id}"
