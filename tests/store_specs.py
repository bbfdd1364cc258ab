"""Stores named by a string another process can open: a SQLite path or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_sandbox.backends.sqlite_store import SqliteStore
from jupyter_sandbox.backends.store import ContainerRecord, Store

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def open_spec(spec: str) -> Store:
    """The store a spec names: a PostgreSQL URL, or a SQLite file path."""
    if spec.startswith("postgresql://"):
        from jupyter_sandbox.backends.postgres_store import PostgresStore

        return PostgresStore(spec)
    return SqliteStore(Path(spec))


def make_record(index: int, project: str = "default", name: str | None = None) -> ContainerRecord:
    return ContainerRecord(
        id=f"cntr_{index:04d}",
        project=project,
        name=name or f"box-{index}",
        status="ready",
        created_at=1000.0 + index,
        last_active_at=1000.0 + index,
        memory_limit="1g",
        network_policy={"type": "disabled"},
        idle_minutes=20,
        expires_at=5000.0,
        image="img",
        kernel_key="k",
        socket_dir="/tmp/x",
        owner_pid=1,
        owner_host="h",
    )
