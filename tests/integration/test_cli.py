"""The real `jupyter-sandbox` script against the real engine: what a user types and sees."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from jupyter_sandbox.backends.sqlite_store import SqliteStore as Store
from tests.conftest import IMAGE, SESSION_RUN, TEST_LABEL, remove_labelled


def _image_missing() -> str | None:
    """Why these tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    probe = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        if "No such image" in probe.stderr or "No such object" in probe.stderr:
            return f"kernel image {IMAGE} is missing: run `jupyter-sandbox image build`"
        return f"the Docker engine is not usable: {probe.stderr.strip()}"
    return None


_SKIP = _image_missing()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

SCRIPT = Path(sys.executable).with_name("jupyter-sandbox")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


Run = Callable[..., Result]


@pytest.fixture(scope="module")
def run_id() -> Iterator[str]:
    """A label value for everything this module creates; leaks fail the last test."""
    run = f"{SESSION_RUN}-cli{uuid4().hex[:8]}"
    yield run
    leaked = remove_labelled(f"{TEST_LABEL}={run}")
    assert not leaked, f"leaked Docker objects: {leaked}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cli(run_id: str, home: Path) -> Run:
    """Run the installed script with `--home` and this module's test label."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    env["JUPYTER_SANDBOX_EXTRA_LABELS"] = json.dumps({TEST_LABEL: run_id})

    def run(
        *args: str,
        input: str | None = None,
        home_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Result:
        done = subprocess.run(
            [str(SCRIPT), "--home", str(home_dir or home), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            timeout=120,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(scope="module")
def sandbox(cli: Run) -> Iterator[str]:
    """One sandbox shared by the exec tests (state carries over between them)."""
    created = cli("create", "--name", "cli-exec", "--json")
    assert created.code == 0, created.stderr
    container_id = json.loads(created.stdout)["id"]
    try:
        yield container_id
    finally:
        deleted = cli("delete", container_id)
        assert deleted.code == 0, deleted.stderr


def test_create_get_list_delete(cli: Run) -> None:
    created = cli("create", "--name", "cli-lifecycle", "--memory", "512m", "--json")
    assert created.code == 0, created.stderr
    container = json.loads(created.stdout)
    container_id = container["id"]
    try:
        assert container_id.startswith("cntr_")
        assert container["object"] == "container"
        assert container["name"] == "cli-lifecycle"
        assert container["status"] == "ready"
        assert container["memory_limit"] == "512m"
        assert container["network_policy"] == {"type": "disabled"}
        assert container["expires_after"] == {"anchor": "last_active_at", "minutes": 20}

        shown = cli("get", container_id)
        assert shown.code == 0, shown.stderr
        lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
        assert lines[:5] == [
            f"id {container_id}",
            "name cli-lifecycle",
            "status ready",
            "memory_limit 512m",
            "network_policy disabled",
        ]
        assert lines[7] == "expires_after 20 min idle"

        listed = cli("list", "--name", "cli-lifecycle")
        assert listed.code == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split() == ["ID", "NAME", "STATUS", "MEMORY", "CREATED", "LAST", "ACTIVE"]
        assert [row.split()[:4] for row in rows] == [
            [container_id, "cli-lifecycle", "ready", "512m"]
        ]

        as_json = json.loads(cli("list", "--json", "--all").stdout)
        assert container_id in [c["id"] for c in as_json["data"]]
        assert as_json["has_more"] is False

        nobody = cli("list", "--name", "nobody-has-this-name")
        assert (nobody.code, nobody.stdout, nobody.stderr) == (0, "", "No sandboxes.\n")
    finally:
        deleted = cli("delete", container_id)
    assert (deleted.code, deleted.stdout, deleted.stderr) == (0, f"deleted {container_id}\n", "")

    gone = cli("get", container_id)
    assert (gone.code, gone.stdout) == (2, "")
    assert gone.stderr == f"error: No container found with id {container_id!r}\n"
    again = cli("delete", container_id)
    assert again.code == 2
    assert again.stderr == f"error: No container found with id {container_id!r}\n"


def test_list_pages_with_all(cli: Run) -> None:
    ids: list[str] = []
    try:
        for _ in range(3):
            created = cli("create", "--name", "cli-paging", "--json")
            assert created.code == 0, created.stderr
            ids.append(json.loads(created.stdout)["id"])
        first = cli("list", "--name", "cli-paging", "--limit", "2")
        assert [row.split()[0] for row in first.stdout.splitlines()[1:]] == ids[::-1][:2]
        assert first.stderr == "More than 2: use --all to list every one.\n"
        every = cli("list", "--name", "cli-paging", "--limit", "2", "--all", "--order", "asc")
        assert [row.split()[0] for row in every.stdout.splitlines()[1:]] == ids
        assert every.stderr == ""
    finally:
        deleted = cli("delete", *ids)
    assert deleted.stdout == "".join(f"deleted {i}\n" for i in ids)


def test_create_with_bad_input_says_what_is_wrong(cli: Run) -> None:
    result = cli("create", "--name", "x", "--memory", "3g")
    assert (result.code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: Invalid memory_limit: ")
    result = cli("create", "--name", "x", "--lifetime", "999999")
    assert result.code == 2
    assert result.stderr == (
        "error: Invalid lifetime_seconds: 999999 exceeds the maximum of 86400 seconds\n"
    )


def test_exec_code_argument(cli: Run, sandbox: str) -> None:
    result = cli("exec", sandbox, "print(1 + 1)")
    assert (result.code, result.stdout, result.stderr) == (0, "2\n", "")


def test_exec_keeps_state_and_prints_the_last_value(cli: Run, sandbox: str) -> None:
    assert cli("exec", sandbox, "x = 41").code == 0
    result = cli("exec", sandbox, "x + 1")
    assert (result.code, result.stdout, result.stderr) == (0, "42\n", "")


@pytest.mark.parametrize("args", [(), ("-",)], ids=["no-code", "dash"])
def test_exec_reads_stdin(cli: Run, sandbox: str, args: tuple[str, ...]) -> None:
    result = cli("exec", sandbox, *args, input="import numpy as np\nprint(np.arange(3).sum())\n")
    assert (result.code, result.stdout, result.stderr) == (0, "3\n", "")


def test_exec_reads_a_file(cli: Run, sandbox: str, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import pandas as pd\nprint(pd.Series([1, 2, 3]).mean())\n")
    result = cli("exec", sandbox, "--file", str(script))
    assert (result.code, result.stdout, result.stderr) == (0, "2.0\n", "")


def test_exec_streams_stderr_separately(cli: Run, sandbox: str) -> None:
    result = cli("exec", sandbox, "import sys; print('out'); print('err', file=sys.stderr)")
    assert (result.code, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_exec_error_prints_the_traceback_and_exits_1(cli: Run, sandbox: str) -> None:
    result = cli("exec", sandbox, "print('before')\n1 / 0")
    assert (result.code, result.stdout) == (1, "before\n")
    assert "\x1b[" not in result.stderr  # no colour codes when stderr is not a terminal
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "Traceback" in result.stderr or "----" in result.stderr


def test_exec_timeout_exits_1(cli: Run, sandbox: str) -> None:
    result = cli(
        "exec", sandbox, "import time; print('start', flush=True); time.sleep(60)", "--timeout", "1"
    )
    assert (result.code, result.stdout) == (1, "start\n")
    assert result.stderr.endswith("error: Execution timed out after 1 s and was interrupted\n")
    after = cli("exec", sandbox, "print('still alive')")
    assert (after.code, after.stdout) == (0, "still alive\n")


def test_exec_json(cli: Run, sandbox: str) -> None:
    result = cli("exec", sandbox, "print('hi')\n'done'", "--json")
    assert result.code == 0, result.stderr
    execution = json.loads(result.stdout)
    assert execution["object"] == "container.execution"
    assert execution["container_id"] == sandbox
    assert execution["status"] == "ok"
    assert execution["stdout"] == "hi\n"
    assert execution["outputs"][-1]["data"]["text/plain"] == "'done'"


def test_exec_unknown_sandbox_exits_2(cli: Run) -> None:
    result = cli("exec", "cntr_doesnotexist", "print(1)")
    assert (result.code, result.stdout) == (2, "")
    assert result.stderr == "error: No container found with id 'cntr_doesnotexist'\n"


def test_gc_on_a_clean_store(cli: Run, tmp_path: Path) -> None:
    result = cli("gc", home_dir=tmp_path)
    assert (result.code, result.stdout, result.stderr) == (0, "Nothing to clean up.\n", "")
    as_json = json.loads(cli("gc", "--json", home_dir=tmp_path).stdout)
    assert as_json == {
        "expired": [],
        "marked": [],
        "removed": [],
        "socket_dirs": [],
        "storage": [],
        "egress": [],
        "uploads": [],
        "blobs": [],
    }


@pytest.mark.slow
def test_gc_expires_an_idle_sandbox(cli: Run, tmp_path: Path) -> None:
    created = cli(
        "create", "--name", "cli-gc", "--expires-minutes", "1", "--json", home_dir=tmp_path
    )
    assert created.code == 0, created.stderr
    container_id = json.loads(created.stdout)["id"]
    try:
        # Two idle minutes pass (the record's clock moved back rather than a real wait).
        store = Store(tmp_path / "store.sqlite3")
        try:
            store.touch(container_id, time.time() - 120)
        finally:
            store.close()
        result = cli("gc", home_dir=tmp_path)
        assert (result.code, result.stdout) == (0, f"expired {container_id}\n")
        shown = json.loads(cli("get", container_id, "--json", home_dir=tmp_path).stdout)
        assert shown["status"] == "expired"
    finally:
        # Deleting an expired sandbox only hides its record; it must not fail.
        cli("delete", container_id, home_dir=tmp_path)


def test_doctor(cli: Run, home: Path) -> None:
    result = cli("doctor")
    rows = [re.split(r"\s{2,}", line, maxsplit=2) for line in result.stdout.splitlines()]
    assert all(len(row) == 3 for row in rows), result.stdout
    assert [name for name, _, _ in rows][:4] == ["Docker engine", "runc", "cgroup", "seccomp"]
    assert {level for _, level, _ in rows} <= {"OK", "INFO", "WARN", "FAIL"}
    assert result.code == (1 if any(level == "FAIL" for _, level, _ in rows) else 0)
    found = {name: (level, detail) for name, level, detail in rows}
    level, detail = found["kernel image"]
    assert level == "OK"
    assert re.fullmatch(re.escape(IMAGE) + r" \(up to date, \d+ MB\)", detail)
    assert rows[-1] == ["store", "INFO", str(home / "store.sqlite3")]

    report = json.loads(cli("doctor", "--json").stdout)
    assert [c["name"] for c in report["checks"]] == [name for name, _, _ in rows]
    assert report["ok"] == (result.code == 0)


def test_doctor_fails_and_says_why_when_the_kernel_image_is_missing(cli: Run) -> None:
    missing = {"JUPYTER_SANDBOX_IMAGE": "jupyter-sandbox-kernel:missing"}
    result = cli("doctor", extra_env=missing)
    assert result.code == 1, result.stdout
    rows = {
        name: (level, detail)
        for name, level, detail in (
            re.split(r"\s{2,}", line, maxsplit=2) for line in result.stdout.splitlines()
        )
    }
    level, detail = rows["kernel image"]
    assert level == "FAIL"
    assert detail.startswith("jupyter-sandbox-kernel:missing is missing, so no sandbox can start")
    assert "Sandboxes cannot be created here until these are fixed: kernel image" in (
        " ".join(result.stderr.split())
    )
    report = json.loads(cli("doctor", "--json", extra_env=missing).stdout)
    assert report["ok"] is False
    assert "kernel image" in report["missing"]


def test_memory_spellings_and_this_hosts_tiers(cli: Run) -> None:
    created = cli("create", "--name", "cli-memory", "--memory", "1GB", "--json")
    assert created.code == 0, created.stderr
    container = json.loads(created.stdout)
    try:
        assert container["memory_limit"] == "1g"
    finally:
        assert cli("delete", container["id"]).code == 0
    refused = cli("create", "--name", "cli-memory", "--memory", "16G")
    assert refused.code == 2
    assert "'16g' is not enabled on this host (allowed on this host: 512m, 1g, 2g, 4g;" in (
        " ".join(refused.stderr.split())
    )


def test_logs_shows_the_sandbox_log_without_terminal_controls(cli: Run, sandbox: str) -> None:
    ran = cli("exec", sandbox, "import os; os.write(2, b'\\x1b]0;title\\x07[red]marker[/red]\\n')")
    assert ran.code == 0, ran.stderr
    result = cli("logs", sandbox)
    assert result.code == 0, result.stderr
    assert "sandbox-init: kernel started" in result.stdout
    assert "\\x1b]0;title\\x07[red]marker[/red]\n" in result.stdout  # shown escaped, no markup
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    as_json = json.loads(cli("logs", sandbox, "--json").stdout)
    assert as_json["id"] == sandbox
    assert "\x1b]0;title\x07[red]marker[/red]" in as_json["log"]  # JSON keeps the bytes
    assert cli("logs", "cntr_unknown").code == 2


def test_image_status(cli: Run) -> None:
    result = cli("image", "status", "--json")
    assert result.code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["tag"] == IMAGE
    assert status["exists"] is True
    assert status["size_bytes"] > 0


def test_snapshots_create_list_and_fork(cli: Run) -> None:
    image = os.environ.get("JUPYTER_SANDBOX_IMAGE")
    env = {"JUPYTER_SANDBOX_IMAGE": image} if image else None
    created = cli("create", "--name", "cli-snap", "--idle-action", "pause", "--json", extra_env=env)
    assert created.code == 0, created.stderr
    source = json.loads(created.stdout)["id"]
    fork = None
    try:
        assert cli("exec", source, "answer = 41").code == 0
        taken = cli("snapshots", "create", source, "--name", "first")
        assert taken.code == 0, taken.stderr
        snapshot_id, size = taken.stdout.split()[:2]
        assert snapshot_id.startswith("snap_")
        assert int(size) > 0
        assert "1 variables, 0 imports, 0 files" in taken.stdout
        listed = cli("snapshots", "list", source)
        assert listed.code == 0, listed.stderr
        assert snapshot_id in listed.stdout
        assert "first" in listed.stdout
        forked = cli(
            "create", "--name", "cli-fork", "--snapshot", snapshot_id, "--json", extra_env=env
        )
        assert forked.code == 0, forked.stderr
        fork = json.loads(forked.stdout)["id"]
        assert cli("exec", fork, "answer + 1").stdout == "42\n"
        missing = cli("create", "--name", "nope", "--snapshot", "snap_unknown")
        assert missing.code != 0
        assert "snap_unknown" in missing.stderr
        assert cli("snapshots", "delete", source, snapshot_id).stdout == f"deleted {snapshot_id}\n"
        bad = cli("create", "--name", "bad", "--idle-action", "sleep")
        assert bad.code != 0
        assert "idle_action" in bad.stderr
    finally:
        for container_id in (source, fork):
            if container_id is not None:
                cli("delete", container_id)
