"""Snapshots without Docker: the sandbox's report is bounded, the kernel cell cannot be broken
out of, the user-name filter, and the snapshot records."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from jupyter_sandbox.backends.snapshot_kernel import (
    RESTORE_ENTRY,
    SNAPSHOT_ENTRY,
    _jsb_user_names,
)
from jupyter_sandbox.backends.snapshot_store import SnapshotRecord, SnapshotStore
from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from jupyter_sandbox.core.snapshots import kernel_call, snapshot_id
from jupyter_sandbox.types.snapshot import RestoreReport, SnapshotReport


@pytest.mark.parametrize(
    "report",
    [
        {"variables": ["x"], "evil": 1},  # unknown field
        {"variables": ["x" * 201]},  # a name too long
        {"variables": [f"v{i}" for i in range(2001)]},  # too many names
        {"skipped": [{"name": "g", "type": "generator"}]},  # no reason
        {"files": -1},
        {"imports": {"np": 7}},
    ],
)
def test_a_report_out_of_shape_is_refused(report: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SnapshotReport.model_validate(report)


def test_a_report_in_shape_is_kept() -> None:
    report = SnapshotReport.model_validate(
        {
            "variables": ["df"],
            "imports": {"np": "numpy"},
            "skipped": [{"name": "g", "type": "generator", "reason": "TypeError: no"}],
            "files": 2,
        }
    )
    assert report.skipped[0].type == "generator"
    assert RestoreReport.model_validate({"variables": ["df"]}).failed == []


@pytest.mark.parametrize("entry", [SNAPSHOT_ENTRY, RESTORE_ENTRY])
def test_the_kernel_cell_is_one_exec_call_whatever_the_arguments(entry: str) -> None:
    hostile = "/workspace/x'); import os; os.system('id'); ('\n\"\"\""
    cell = kernel_call(entry, hostile, [hostile], 5, "M:")
    tree = ast.parse(cell)
    assert len(tree.body) == 1
    call = tree.body[0].value  # type: ignore[attr-defined]
    assert isinstance(call, ast.Call)
    assert call.func.id == "exec"  # type: ignore[attr-defined]
    source = ast.literal_eval(call.args[0])
    last = ast.parse(source).body[-1]
    assert isinstance(last, ast.Expr)
    assert ast.literal_eval(last.value.args[0]) == hostile  # type: ignore[attr-defined]
    assert ast.literal_eval(call.args[1]) == {"__name__": "jupyter_sandbox_snapshot"}


def test_only_names_the_user_bound_are_kept() -> None:
    marker = object()
    namespace = {
        "df": 1,
        "_private": 2,
        "In": [],
        "Out": {},
        "exit": marker,
        "hidden": marker,
        "rebound": 3,
    }
    hidden = {"hidden": marker, "rebound": "IPython's own value"}
    assert _jsb_user_names(namespace, hidden) == ["df", "rebound"]


def test_snapshot_records_are_scoped_and_expire(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite3")
    records = SnapshotStore(store)
    SnapshotStore(store)  # idempotent schema
    now = time.time()
    first = SnapshotRecord(
        id=snapshot_id(),
        project="a",
        container_id="cntr_1",
        name=None,
        created_at=now,
        expires_at=now + 60,
        bytes=3,
        sha256="f" * 64,
        report={"variables": ["x"]},
    )
    records.insert(first)
    assert records.get(first.id) == first
    assert records.for_container("cntr_1", "a") == [first]
    assert records.for_container("cntr_1", "b") == []
    assert records.uses_blob("f" * 64)
    assert records.expired(now) == []
    assert records.expired(now + 61) == [first]
    assert records.delete(first.id) == first
    assert records.delete(first.id) is None  # one caller wins
    assert not records.uses_blob("f" * 64)
    store.close()
