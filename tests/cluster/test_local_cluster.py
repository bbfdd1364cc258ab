"""A local Swarm of Docker-in-Docker nodes: `cluster up/status/down`, TLS, a remote engine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from uuid import uuid4

import docker
import docker.errors
import openai
import pytest
import requests

from jupyter_sandbox.backends.cluster_errors import ClusterError
from jupyter_sandbox.backends.cluster_nodes import CLUSTER, ENGINE_PORT, LocalCluster
from tests.cluster.conftest import SCRIPT
from tests.conftest import IMAGE, labelled_objects, mounts_under

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "JUPYTER_SANDBOX_HOME": str(home)},
        timeout=600,
    )


def test_cluster_up_with_the_docker_backend_ends_its_sandboxes_at_down(
    engine: docker.DockerClient, node_image: str, tmp_path: Path
) -> None:
    """`--backend docker`: the servers' sandboxes run on this host's engine, holding host
    storage (a mounted disk image, a socket folder) that `down` must tear down through the
    store. (The Swarm default, with three nodes, the SDK and a lost node:
    test_cluster_e2e.py.)"""
    name = f"t{uuid4().hex[:8]}"
    folder = tmp_path / "clusters" / name
    pids: list[int] = []
    try:
        up = cli(tmp_path, "cluster", "up", "--nodes", "1", "--name", name, "--no-load",
                 "--backend", "docker", "--json")  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert "==> starting PostgreSQL" in up.stderr  # progress on the long steps
        summary = json.loads(up.stdout)
        env = summary["env"]
        assert env["JUPYTER_SANDBOX_BACKEND"] == "docker"
        assert "DOCKER_HOST" not in env  # the docker backend's servers use this engine
        pids = [server["pid"] for server in summary["servers"]]
        sdk = openai.OpenAI(base_url=summary["base_url"], api_key=summary["api_key"])
        try:
            box = sdk.containers.create(name="on-this-engine")
            result = sdk.post(
                f"/containers/{box.id}/execute", body={"code": "print(6 * 7)"}, cast_to=dict
            )
            assert result["stdout"] == "42\n"
        finally:
            sdk.close()
        listed = cli_env(tmp_path, env, "list", "--json")  # the CLI with the printed env
        assert listed.returncode == 0, listed.stderr
        assert [c["id"] for c in json.loads(listed.stdout)["data"]] == [box.id]
        assert labelled_objects(f"{CLUSTER}={name}").get("container")
    finally:
        down = cli(tmp_path, "cluster", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert "API server" in down.stdout
    assert labelled_objects(f"{CLUSTER}={name}") == {}  # the sandbox container too
    assert f"sandbox {box.id}" in down.stdout  # ended, its storage torn down
    assert not mounts_under(tmp_path)
    assert not folder.exists()
    assert not [pid for pid in pids if _running(pid)]
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    assert not list(Path(tempfile.gettempdir()).glob(f"jsbx-pg-{digest}-*"))


def test_cluster_up_refuses_a_backend_it_does_not_have(tmp_path: Path) -> None:
    up = cli(tmp_path, "cluster", "up", "--nodes", "1", "--name", "nobackend",
             "--backend", "nonesuch")  # fmt: skip
    assert up.returncode == 2
    assert "backend 'nonesuch' is not available" in up.stderr
    assert labelled_objects(f"{CLUSTER}=nobackend") == {}


def cli_env(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SANDBOX_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, "JUPYTER_SANDBOX_HOME": str(home), **env},
        timeout=300,
    )


def test_node_engine_refuses_clients_without_the_cluster_certificate(
    one_node: LocalCluster, tmp_path: Path
) -> None:
    address = one_node.nodes()[0].address
    with pytest.raises(requests.exceptions.SSLError):
        # the node's certificate is from the cluster's CA, unknown to the default trust store
        requests.get(f"https://{address}:{ENGINE_PORT}/_ping", timeout=10)
    ca = str(one_node.client_cert_path / "ca.pem")
    with pytest.raises(requests.exceptions.SSLError):
        # the client presents no certificate: --tlsverify refuses the handshake
        requests.get(f"https://{address}:{ENGINE_PORT}/_ping", timeout=10, verify=ca)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{address}:2375/_ping", timeout=10)  # no plain-text listener


def test_a_kernel_container_runs_on_the_remote_engine(
    one_node: LocalCluster, engine: docker.DockerClient
) -> None:
    """What an operator does with the printed `env`: the docker CLI, over TLS, on the node."""
    code = (
        "import ipykernel, numpy, socket; "
        "print(socket.gethostname(), ipykernel.__version__, int(numpy.arange(5).sum()))"
    )
    run = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--label",
            f"{CLUSTER}=proof",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "none",
            "--memory",
            "512m",
            "--entrypoint",
            "python3",
            IMAGE,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **one_node.env()},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    hostname, _, rest = run.stdout.strip().partition(" ")
    assert rest.endswith(" 10")
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(hostname)  # it ran on the node, not on this engine
    node = one_node.client_for(one_node.nodes()[0].address)
    try:
        assert node.info()["Name"] == one_node.nodes()[0].name
        assert node.images.get(IMAGE).id == engine.images.get(IMAGE).id  # same bytes
    finally:
        node.close()


@pytest.mark.parametrize("broken", ["image", "storage driver"])
def test_a_node_that_cannot_start_fails_up_and_leaves_nothing(
    engine: docker.DockerClient, node_image: str, tmp_path: Path, broken: str
) -> None:
    name = f"t{uuid4().hex[:8]}"
    if broken == "image":  # not a node image: no place for the certificates
        cluster, image, reason = LocalCluster(engine, name, home=tmp_path), IMAGE, "jsbx-node"
    else:  # dockerd exits at once; its own log line is the reason
        cluster = LocalCluster(engine, name, home=tmp_path, storage_driver="bogus")  # type: ignore[arg-type]
        image, reason = node_image, "bogus"
    with pytest.raises(ClusterError) as caught:
        cluster.up(1, image)
    assert reason in caught.value.message
    if broken == "storage driver":
        assert "did not start its engine" in caught.value.message
    assert labelled_objects(f"{CLUSTER}={name}") == {}
    assert not (tmp_path / "clusters" / name).exists()


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie awaiting its reaper has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
