"""Helpers for the adversarial suite: run attack code in a sandbox, read its cgroup from the host.

Each test runs the attack as the sandboxed code a malicious user would write and checks the
outcome from the host (cgroup files, the engine, the store, this process's memory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.types.execution import Execution, StreamOutput
from tests.conftest import SESSION_RUN, TEST_LABEL, labelled_client, mounts_under, remove_labelled

CGROUP_ROOT = Path("/sys/fs/cgroup")


def stdout_of(execution: Execution) -> str:
    """Everything the execution printed on stdout."""
    return "".join(
        o.text for o in execution.outputs if isinstance(o, StreamOutput) and o.name == "stdout"
    )


def run(client: Client, container_id: str, code: str, timeout: float = 60) -> str:
    """Run code that must succeed; return its stdout."""
    execution = client.containers.execute(container_id, code, timeout=timeout)
    assert execution.status == "ok", (execution.status, execution.message, execution.outputs)
    return stdout_of(execution)


def run_json(client: Client, container_id: str, code: str, timeout: float = 60) -> object:
    """Run code whose last stdout line is JSON; return it decoded."""
    return json.loads(run(client, container_id, code, timeout).strip().splitlines()[-1])


def docker_id(container_id: str) -> str:
    """The engine's id of a sandbox's container."""
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", f"jsbx-{container_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def cgroup_file(container_id: str, controller: str, name: str) -> Path:
    """A cgroup (v1 or v2) file of the sandbox's container, found through its init's pid."""
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", f"jsbx-{container_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, relative = line.split(":", 2)
        if controllers == "":
            candidate = CGROUP_ROOT / relative.lstrip("/") / name
        elif controller in controllers.split(","):
            candidate = CGROUP_ROOT / controllers / relative.lstrip("/") / name
        else:
            continue
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no cgroup file {controller}/{name} for {container_id}")


def oom_kills(container_id: str) -> int:
    """The container cgroup's oom_kill counter (v1 memory.oom_control or v2 memory.events)."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            text = cgroup_file(container_id, "memory", name).read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    raise FileNotFoundError("no oom_kill counter")


def pids_current(container_id: str) -> int:
    """Tasks (processes and threads) in the sandbox's pids cgroup."""
    return int(cgroup_file(container_id, "pids", "pids.current").read_text())


def rss_bytes() -> int:
    """This process's resident set size now."""
    return _status_kb("VmRSS") * 1024


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """This process's peak RSS since `reset_peak_rss`."""
    return _status_kb("VmHWM") * 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


RUNTIMES = ("runc", "runsc")


def runsc_missing() -> str | None:
    """Why gVisor cannot run here, or None if the engine has runsc registered."""
    probe = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or '"runsc"' not in probe.stdout:
        return "runsc is not registered with the engine (run scripts/system-deps)"
    return None


@pytest.fixture(scope="module", params=RUNTIMES, autouse=True)
def runtime(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every adversarial test runs under runc and under runsc (gVisor), through the
    environment, so clients in subprocesses get it too. runsc is skipped if the engine lacks
    it, and fails the run when Docker tests are required. A module that tests only host-side
    code, the same whatever the sandbox's runtime, says why in `RUNC_ONLY` (CI's time budget
    on 2 cores: the runsc half of these endurance runs would add about 20 minutes)."""
    name = str(request.param)
    runc_only = getattr(request.module, "RUNC_ONLY", None)
    if name == "runsc" and runc_only:
        pytest.skip(f"runc only: {runc_only}")
    if name == "runsc" and (reason := runsc_missing()) is not None:
        if os.environ.get("JUPYTER_SANDBOX_REQUIRE_DOCKER") == "1":
            pytest.fail(f"gVisor tests are required but cannot run: {reason}")
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        if name == "runsc":
            patch.setenv("JUPYTER_SANDBOX_RUNTIME", name)
        else:
            patch.delenv("JUPYTER_SANDBOX_RUNTIME", raising=False)
        yield name


def is_gvisor() -> bool:
    """Whether this test's sandboxes run under gVisor (see `runtime`)."""
    return os.environ.get("JUPYTER_SANDBOX_RUNTIME") == "runsc"


@dataclass
class Sandboxes:
    """Clients on one private state folder; every object labelled and swept at the end."""

    home: Path
    label: str
    made: list[Client]

    def client(self, **settings: Any) -> Client:
        self.made.append(labelled_client(self.home, self.label, **settings))
        return self.made[-1]


def _sweep(sandboxes: Sandboxes) -> None:
    sockets = {client.settings.sockets_root for client in sandboxes.made}
    for client in sandboxes.made:
        for record in client._store.all(statuses=("ready",)):
            if not record.deleted:  # a test may leave its sandbox: delete it the user's way
                client.for_project(record.project).containers.delete(record.id)
        client.close()
    leaked = remove_labelled(f"{TEST_LABEL}={sandboxes.label}")
    stuck = mounts_under(sandboxes.home)
    for mount in stuck:
        subprocess.run(["umount", "-l", mount], check=False)
    leftovers = [p.name for root in sockets if root.is_dir() for p in root.iterdir()]
    for root in sockets:
        for entry in root.iterdir() if root.is_dir() else []:
            if os.path.ismount(entry):
                subprocess.run(["umount", "-l", str(entry)], check=False)
        shutil.rmtree(root, ignore_errors=True)
    assert not leaked, f"leaked Docker objects: {leaked}"
    assert not stuck, f"leaked mounts: {stuck}"
    assert not leftovers, f"leaked socket folders: {leftovers}"


@pytest.fixture
def sandboxes(tmp_path: Path, runtime: str) -> Iterator[Sandboxes]:
    """Make clients with custom settings; fails the test if anything is left behind."""
    made = Sandboxes(tmp_path / "home", f"{SESSION_RUN}-{uuid4().hex[:8]}", [])
    try:
        yield made
    finally:
        _sweep(made)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, runtime: str) -> Iterator[Sandboxes]:
    """Like `sandboxes`, for a module whose probes share one sandbox (read-only probes)."""
    made = Sandboxes(
        tmp_path_factory.mktemp("adv") / "home", f"{SESSION_RUN}-{uuid4().hex[:8]}", []
    )
    try:
        yield made
    finally:
        _sweep(made)


@pytest.fixture(scope="module")
def probe(shared: Sandboxes) -> Iterator[Callable[[str], str]]:
    """Run probe code in one module-wide sandbox; returns its stdout."""
    client = shared.client()
    container = client.containers.create(name="probe")
    yield lambda code: run(client, container.id, code)
    client.containers.delete(container.id)
