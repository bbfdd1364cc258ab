"""Snapshots and forks (issue 18) on real sandboxes: what survives, what is named as left out,
tenancy, the size cap, and the trust boundary (pickles are loaded only inside sandboxes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox._exceptions import ConflictError, NotFoundError, RequestTooLargeError
from jupyter_sandbox.types.execution import ExecuteResultOutput, Execution

pytestmark = pytest.mark.docker

STATE = """
import numpy as np
import pandas as pd
import socket
df = pd.DataFrame({"a": range(1000), "b": [f"row {i}" for i in range(1000)]})
arr = np.arange(12).reshape(3, 4)
def area(r):
    return round(np.pi * r * r, 2)
class Account:
    def __init__(self, owner):
        self.owner, self.balance = owner, 0
    def deposit(self, amount):
        self.balance += amount
        return self.balance
acct = Account("ada")
acct.deposit(5)
gen = (i for i in range(3))
sock = socket.socket()
open("/mnt/data/data.csv", "w").write(df.head().to_csv())
open("/workspace/notes.txt", "w").write("kept")
"""

CHECK = (
    "(int(df['a'].sum()), df.shape, int(arr.sum()), area(1), isinstance(acct, Account), "
    "acct.deposit(1), np.__name__, open('/workspace/notes.txt').read(), "
    "open('/mnt/data/data.csv').read().count(chr(10)))"
)
EXPECTED = "(499500, (1000, 2), 66, 3.14, True, 6, 'numpy', 'kept', 6)"


def value(execution: Execution) -> str:
    """The `text/plain` of a cell's value (fails with the cell's error if it raised)."""
    assert execution.status == "ok", execution.outputs
    result = [o for o in execution.outputs if isinstance(o, ExecuteResultOutput)]
    return str(result[-1].data["text/plain"])


def test_state_survives_snapshot_then_fork_and_the_source_is_untouched(client: Client) -> None:
    source = client.containers.create(name="source")
    fork_id = None
    try:
        assert client.containers.execute(source.id, STATE).status == "ok"
        count_before = client.containers.execute(source.id, "1").execution_count
        snapshot = client.containers.snapshots.create(source.id, name="v1")
        assert snapshot.id.startswith("snap_")
        assert snapshot.container_id == source.id
        assert snapshot.name == "v1"
        assert snapshot.bytes > 0
        assert snapshot.expires_at > snapshot.created_at
        report = snapshot.report
        assert {"df", "arr", "area", "Account", "acct"} <= set(report.variables)
        assert report.imports == {"np": "numpy", "pd": "pandas", "socket": "socket"}
        skipped = {s.name: s.type for s in report.skipped}
        assert skipped == {"gen": "generator", "sock": "socket"}
        assert report.files == 2
        # Snapshot cells leave no trace in the user's history or namespace.
        assert client.containers.execute(source.id, "1").execution_count == count_before + 1
        assert (
            value(client.containers.execute(source.id, "sorted(k for k in dir() if 'jsb' in k)"))
            == "[]"
        )

        fork = client.containers.create(name="fork", snapshot_id=snapshot.id)
        fork_id = fork.id
        assert fork.id != source.id
        assert fork.model_extra is not None
        assert fork.model_extra["snapshot_id"] == snapshot.id
        assert fork.model_extra["restored"]["failed"] == []
        assert value(client.containers.execute(fork.id, CHECK)) == EXPECTED
        assert value(client.containers.execute(fork.id, "'gen' in dir(), 'sock' in dir()")) == (
            "(False, False)"
        )
        # Both go on independently; the source kept its own state (its deposit is still 5).
        client.containers.execute(fork.id, "df['a'] = 0")
        assert value(client.containers.execute(source.id, CHECK)) == EXPECTED
        assert value(client.containers.execute(fork.id, "int(df['a'].sum())")) == "0"
        assert value(client.containers.execute(source.id, "next(gen), sock.fileno() > 0")) == (
            "(0, True)"
        )
        paths = sorted(f.path for f in client.containers.files.list(fork.id))
        assert paths == ["/mnt/data/data.csv", "/workspace/notes.txt"]  # no bundle left
        assert [s.id for s in client.containers.snapshots.list(source.id)] == [snapshot.id]
        assert client.containers.snapshots.retrieve(source.id, snapshot.id) == snapshot
        client.containers.snapshots.delete(source.id, snapshot.id)
        assert list(client.containers.snapshots.list(source.id)) == []
        with pytest.raises(NotFoundError):
            client.containers.snapshots.retrieve(source.id, snapshot.id)
    finally:
        client.containers.delete(source.id)
        if fork_id is not None:
            client.containers.delete(fork_id)


def test_another_projects_snapshot_is_not_found(client: Client) -> None:
    source = client.containers.create(name="mine")
    try:
        client.containers.execute(source.id, "x = 1")
        snapshot = client.containers.snapshots.create(source.id)
        other = client.for_project("other")
        with pytest.raises(NotFoundError):
            other.containers.snapshots.retrieve(source.id, snapshot.id)
        with pytest.raises(NotFoundError):
            other.containers.snapshots.delete(source.id, snapshot.id)
        with pytest.raises(NotFoundError):
            other.containers.snapshots.create(source.id)
        assert list(other.containers.snapshots.list(source.id)) == []
        with pytest.raises(NotFoundError) as caught:
            other.containers.create(name="steal", snapshot_id=snapshot.id)
        assert caught.value.param == "snapshot_id"
        assert list(other.containers.list()) == []  # refused before anything booted
        assert client.containers.snapshots.retrieve(source.id, snapshot.id).id == snapshot.id
    finally:
        client.containers.delete(source.id)


def test_a_snapshot_over_the_cap_is_refused_naming_it(
    make_client: Callable[..., Client],
) -> None:
    small = make_client(snapshot_max_bytes=2**20)
    source = small.containers.create(name="big")
    try:
        small.containers.execute(source.id, "import numpy as np; big = np.ones(2**18)")  # 2 MiB
        with pytest.raises(RequestTooLargeError, match="1048576 bytes") as caught:
            small.containers.snapshots.create(source.id)
        assert "snapshot_max_bytes" in caught.value.message
        assert list(small.containers.snapshots.list(source.id)) == []
        assert list(small.containers.files.list(source.id)) == []  # the bundle is gone
        assert value(small.containers.execute(source.id, "big.size")) == str(2**18)
    finally:
        small.containers.delete(source.id)


def test_a_malicious_pickle_runs_only_inside_the_fork(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"""
import os
class Payload:
    def __reduce__(self):
        return (os.system, ({f"mkdir -p {tmp_path} && touch {marker}"!r},))
payload = Payload()
"""
    source = client.containers.create(name="hostile")
    fork_id = None
    try:
        client.containers.execute(source.id, hostile)
        snapshot = client.containers.snapshots.create(source.id)
        assert "payload" in snapshot.report.variables
        client.containers.snapshots.list(source.id)
        client.containers.snapshots.retrieve(source.id, snapshot.id)
        assert not marker.exists()  # the host stored the bundle without unpickling it
        fork = client.containers.create(name="fork", snapshot_id=snapshot.id)
        fork_id = fork.id
        assert not marker.exists()  # unpickled in the fork's kernel, not here
        probe = f"import os; os.path.exists({str(marker)!r})"
        assert value(client.containers.execute(fork.id, probe)) == "True"  # it ran, in there
        assert value(client.containers.execute(source.id, probe)) == "False"
    finally:
        client.containers.delete(source.id)
        if fork_id is not None:
            client.containers.delete(fork_id)


def test_a_forged_report_cannot_pass_as_one(client: Client) -> None:
    """The report is sandbox-made JSON: it is checked, and a shape we do not know fails."""
    source = client.containers.create(name="forger")
    try:
        client.containers.execute(
            source.id,
            "import builtins, json\n_print = builtins.print\n"
            "def print(*a, **k):\n"
            "    _print(str(a[0]).split(':', 1)[0] + ':' + json.dumps({'evil': 1}))\n"
            "builtins.print = print",
        )
        with pytest.raises(ConflictError, match="report is malformed"):
            client.containers.snapshots.create(source.id)
        assert list(client.containers.snapshots.list(source.id)) == []
        text = json.dumps([f.path for f in client.containers.files.list(source.id)])
        assert ".jupyter-sandbox-snapshot" not in text
    finally:
        client.containers.delete(source.id)
