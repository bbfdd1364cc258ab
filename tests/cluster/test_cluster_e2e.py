"""Issue 15's "done when", end to end: `jupyter-sandbox cluster up --nodes 3 --servers 2 --json`
(the Swarm backend, the cluster's PostgreSQL, two API servers), then the official `openai`
SDK against the printed `base_url` and `api_key`, the CLI with the printed `env`, and
`Client`s on other state folders; a worker node stopped under traffic; `cluster down`.

One cluster for the module (its tests run in file order and build on each other: the six
sandboxes made by the second are used by the later ones); the last test takes it down and
checks that nothing is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import docker
import openai
import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends import kernel_tcp
from jupyter_sandbox.backends.cluster_nodes import CLUSTER
from tests.cluster.conftest import SCRIPT, TIMINGS
from tests.conftest import labelled_objects, mounts_under, remove_labelled

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]

NODES = 3
NOTICED_WITHIN = 60.0


@dataclass
class Up:
    """The running cluster, as `cluster up --json` described it."""

    name: str
    home: Path
    summary: dict[str, Any]
    boxes: dict[str, str] = field(default_factory=dict)
    """The six sandboxes made through the SDK: id -> node (filled by the second test)."""
    down: subprocess.CompletedProcess[str] | None = None

    @property
    def folder(self) -> Path:
        return self.home / "clusters" / self.name

    def sdk(self, server: int = 0) -> openai.OpenAI:
        url = self.summary["servers"][server]["url"] + "/v1"
        return openai.OpenAI(base_url=url, api_key=self.summary["api_key"], max_retries=0)


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI; with `env`, only the printed variables point it somewhere (not this one's)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, "JUPYTER_SANDBOX_HOME": str(home), **(env or {})},
        timeout=600,
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, node_image: str) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("home")
    name = f"t{uuid4().hex[:8]}"
    started = time.monotonic()
    result = cli(home, "cluster", "up", "--nodes", str(NODES), "--servers", "2", "--name", name,
                 "--json")  # fmt: skip
    took = round(time.monotonic() - started, 1)
    cluster = Up(name, home, json.loads(result.stdout) if result.returncode == 0 else {})
    try:
        assert result.returncode == 0, result.stderr
        timings = result.stderr.rpartition("timings: ")[2].strip()
        with TIMINGS.open("a") as log:
            log.write(json.dumps({"nodes": NODES, "servers": 2, "up s": took, "cli": timings}))
            log.write("\n")
        yield cluster
    finally:
        logs = tmp_path_factory.mktemp("server-logs")  # kept for a failure's post-mortem
        for saved in (cluster.folder / "servers").glob("*.log"):
            shutil.copy(saved, logs / saved.name)
        if cluster.down is None:  # a test failed before the last one: still take it down
            cli(home, "cluster", "down", "--name", name)
            remove_labelled(f"{CLUSTER}={name}")


def status(up: Up) -> dict[str, Any]:
    shown = cli(up.home, "cluster", "status", "--name", up.name, "--json")
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def node_of(up: Up, container_id: str) -> str:
    """`jupyter-sandbox get ID --json` with the printed env: the node it names."""
    shown = cli(up.home, "get", container_id, "--json", env=up.summary["env"])
    assert shown.returncode == 0, shown.stderr
    node: str = json.loads(shown.stdout)["node"]
    return node


def test_up_prints_what_a_client_needs_and_keeps_its_secrets(up: Up) -> None:
    summary = up.summary
    assert set(summary) == {"base_url", "api_key", "nodes", "env", "servers"}
    assert [node["role"] for node in summary["nodes"]] == ["manager", "worker", "worker"]
    env = summary["env"]
    assert env["JUPYTER_SANDBOX_BACKEND"] == "swarm"  # the default: sandboxes on the nodes
    assert env["DOCKER_HOST"] == summary["nodes"][0]["docker_host"]  # the manager, over TLS
    assert env["DOCKER_TLS_VERIFY"] == "1"
    assert env["JUPYTER_SANDBOX_STORE_URL"].startswith("postgresql://jsbx@127.0.0.1:")
    pids = [server["pid"] for server in summary["servers"]]
    assert len(pids) == 2

    # Secrets: 0600 files in the 0700 folder, on no command line.
    assert up.folder.stat().st_mode & 0o777 == 0o700
    assert (up.folder / "api-key").read_text().strip() == summary["api_key"]
    for secret in ("api-key", "pgpass"):
        assert (up.folder / secret).stat().st_mode & 0o777 == 0o600
    password = (up.folder / "pgpass").read_text().strip().rpartition(":")[2]
    assert password not in env["JUPYTER_SANDBOX_STORE_URL"]
    for pid in [*pids, _postgres_pid(up.folder)]:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert summary["api_key"].encode() not in argv
        assert password.encode() not in argv

    shown = status(up)
    assert shown["backend"] == "swarm"
    assert [(s["pid"], s["alive"]) for s in shown["servers"]] == [(p, True) for p in pids]
    assert shown["postgres"]["alive"]
    assert [(row["name"], row["swarm"]) for row in shown["nodes"]] == [
        (node["name"], "ready/active") for node in summary["nodes"]
    ]

    again = cli(up.home, "cluster", "up", "--nodes", "1", "--name", up.name, "--no-load")
    assert again.returncode == 2
    assert "exists already" in again.stderr


def test_six_creates_spread_over_the_nodes_and_work_on_each(up: Up) -> None:
    """Through the SDK: six creates (three at a time, on both servers), each sandbox's node
    named by `get --json` as `cluster status` names it; then on one sandbox per node:
    execute, upload through one server, download through the other, read it from code."""
    sdks = [up.sdk(0), up.sdk(1)]
    try:
        with ThreadPoolExecutor(3) as pool:
            made = list(
                pool.map(lambda i: sdks[i % 2].containers.create(name=f"six-{i}"), range(6))
            )
        assert not mounts_under(up.folder)  # no channel staging folder outlives a create
        names = {row["name"] for row in status(up)["nodes"]}
        for box in made:
            up.boxes[box.id] = node_of(up, box.id)
        assert set(up.boxes.values()) <= names
        assert len(set(up.boxes.values())) >= 2, up.boxes  # Swarm spread them
        for box in up.boxes:  # state the later tests look for
            result = sdks[0].post(
                f"/containers/{box}/execute",
                body={"code": "import socket; marker = socket.gethostname(); print(6 * 7)"},
                cast_to=dict,
            )
            assert result["stdout"] == "42\n", result
        per_node = {node: box for box, node in up.boxes.items()}
        for node, box in per_node.items():
            payload = f"{node} {box}\n".encode() * 1000
            sent = sdks[0].containers.files.create(box, file=("data.txt", payload))
            back = sdks[1].containers.files.content.retrieve(sent.id, container_id=box).read()
            assert back == payload
            read = sdks[1].post(
                f"/containers/{box}/execute",
                body={"code": f"print(len(open({sent.path!r}, 'rb').read()), bool(marker))"},
                cast_to=dict,
            )
            assert read["stdout"] == f"{len(payload)} True\n", read  # state kept across servers
        listed = cli(up.home, "list", "--json", env=up.summary["env"])
        assert listed.returncode == 0, listed.stderr
        assert {c["id"] for c in json.loads(listed.stdout)["data"]} == set(up.boxes)
        counts = {row["name"]: row["sandboxes"] for row in status(up)["nodes"]}
        for node in names:
            assert counts[node] == list(up.boxes.values()).count(node), counts
    finally:
        for sdk in sdks:
            sdk.close()


def test_servers_on_other_state_folders_serve_every_sandbox(
    up: Up, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel channel's keys come from the store, not a state folder: Clients on two new
    homes and the servers (on the cluster's home) each run code in the others' sandboxes."""
    for variable, value in up.summary["env"].items():
        monkeypatch.setenv(variable, value)
    first = Client(home=tmp_path / "a", extra_labels={CLUSTER: up.name})
    second = Client(home=tmp_path / "b", extra_labels={CLUSTER: up.name})
    sdk = up.sdk(1)
    try:
        box = first.containers.create(name="made-elsewhere")
        assert first.containers.execute(box.id, "x = 6 * 7").status == "ok"
        assert second.containers.execute(box.id, "print(x)").stdout == "42\n"
        result = sdk.post(f"/containers/{box.id}/execute", body={"code": "print(x)"}, cast_to=dict)
        assert result["stdout"] == "42\n"
        served = next(iter(up.boxes))  # made by a server
        assert second.containers.execute(served, "print(bool(marker))").stdout == "True\n"
        for home in (tmp_path / "a", tmp_path / "b", up.folder / "home"):
            assert not (home / kernel_tcp.MASTER_KEY_FILE).exists()  # only in the store
        second.containers.delete(box.id)
    finally:
        sdk.close()
        first.close()
        second.close()


def test_a_stopped_worker_ends_its_sandboxes_while_creates_continue(
    up: Up, engine: docker.DockerClient
) -> None:
    """Stop a worker node's container: its sandboxes turn `terminated` with the reason
    within 60 s; creates made meanwhile succeed on the surviving nodes; the other sandboxes
    keep their kernels' state."""
    manager = up.summary["nodes"][0]["name"]
    workers = [n for n in set(up.boxes.values()) if n != manager]
    assert workers, f"nothing was placed on a worker: {up.boxes}"
    lost = workers[0]
    doomed = [box for box, node in up.boxes.items() if node == lost]
    survivors = [box for box, node in up.boxes.items() if node != lost]
    sdk = up.sdk(0)
    made: list[tuple[str, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_creating() -> None:
        creator = up.sdk(1)
        try:
            while not stop.is_set() and len(made) < 4:
                began = time.monotonic()
                box = creator.containers.create(name=f"during-{len(made)}")
                made.append((box.id, round(time.monotonic() - began, 1)))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            creator.close()

    try:
        engine.containers.get(lost).stop(timeout=5)
        stopped = time.monotonic()
        creating = threading.Thread(target=keep_creating)
        creating.start()
        ended = False
        while not ended and time.monotonic() - stopped < NOTICED_WITHIN:
            ended = all(sdk.containers.retrieve(b).status == "terminated" for b in doomed)
            time.sleep(0.5)
        noticed = round(time.monotonic() - stopped, 1)
        creating.join(timeout=300)
        stop.set()
        assert ended, f"the sandboxes on the stopped node {lost} were not terminated in 60 s"
        assert not errors, errors
        assert len(made) == 4
        for box in doomed:
            shown = cli(up.home, "get", box, "--json", env=up.summary["env"])
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["reason"].startswith(f"its node {lost} is ")
        for box, _ in made:
            assert node_of(up, box) != lost
        for box in survivors:
            result = sdk.post(
                f"/containers/{box}/execute", body={"code": "print(bool(marker))"}, cast_to=dict
            )
            assert (box, result["stdout"]) == (box, "True\n")
            assert sdk.containers.retrieve(box).status == "ready"
        rows = {row["name"]: row for row in status(up)["nodes"]}
        assert rows[lost]["state"] != "running"
        with TIMINGS.open("a") as log:
            record = {"node stop to terminated s": noticed, "creates meanwhile s": made}
            log.write(json.dumps(record) + "\n")
    finally:
        stop.set()
        sdk.close()


def test_down_leaves_nothing(up: Up) -> None:
    pids = [server["pid"] for server in up.summary["servers"]]
    postgres = _postgres_pid(up.folder)
    for log in (up.folder / "servers").glob("*.log"):
        shutil.copy(log, up.home / log.name)  # kept for a failure's post-mortem
    up.down = cli(up.home, "cluster", "down", "--name", up.name)
    assert up.down.returncode == 0, up.down.stderr
    assert "API server" in up.down.stdout
    assert "removed network" in up.down.stdout
    assert labelled_objects(f"{CLUSTER}={up.name}") == {}
    assert not mounts_under(up.home)
    assert not up.folder.exists()
    assert not [pid for pid in [*pids, postgres] if _running(pid)]
    digest = hashlib.sha256(str(up.folder.resolve()).encode()).hexdigest()[:12]
    assert not list(Path(tempfile.gettempdir()).glob(f"jsbx-pg-{digest}-*"))  # mkdtemp's suffix


def _postgres_pid(folder: Path) -> int:
    root = Path(json.loads((folder / "postgres.json").read_text())["root"])
    return int((root / "data" / "postmaster.pid").read_text().split()[0])


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie awaiting its reaper has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
