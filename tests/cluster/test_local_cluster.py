"""A local Swarm of Docker-in-Docker nodes: `cluster up/status/down`, TLS, a remote engine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from uuid import uuid4

import docker
import docker.errors
import pytest
import requests

from jupyter_sandbox.backends.cluster_errors import ClusterError
from jupyter_sandbox.backends.cluster_nodes import CLUSTER, ENGINE_PORT, LocalCluster
from tests.cluster.conftest import SCRIPT
from tests.conftest import IMAGE, labelled_objects

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


def test_cluster_up_status_down_leaves_nothing(
    engine: docker.DockerClient, node_image: str, tmp_path: Path
) -> None:
    name = f"t{uuid4().hex[:8]}"
    try:
        up = cli(tmp_path, "cluster", "up", "--nodes", "2", "--name", name, "--no-load", "--json")
        assert up.returncode == 0, up.stderr
        summary = json.loads(up.stdout)
        assert set(summary) >= {"base_url", "api_key", "nodes", "env"}
        assert summary["base_url"] is None
        assert "not set yet" in summary["pending"]
        assert [node["role"] for node in summary["nodes"]] == ["manager", "worker"]
        env = summary["env"]
        assert env["DOCKER_HOST"] == summary["nodes"][0]["docker_host"]
        assert env["DOCKER_TLS_VERIFY"] == "1"
        cert_path = Path(env["DOCKER_CERT_PATH"])
        assert cert_path.is_relative_to(tmp_path)
        assert {p.name: p.stat().st_mode & 0o777 for p in cert_path.iterdir()} == {
            "ca.pem": 0o600,
            "cert.pem": 0o600,
            "key.pem": 0o600,
        }

        status = cli(tmp_path, "cluster", "status", "--name", name, "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert [(row["role"], row["state"], row["swarm"]) for row in rows] == [
            ("manager", "running", "ready/active"),
            ("worker", "running", "ready/active"),
        ]
        assert [row["sandboxes"] for row in rows] == [0, 0]

        again = cli(tmp_path, "cluster", "up", "--nodes", "1", "--name", name, "--no-load")
        assert again.returncode == 2
        assert "exists already" in again.stderr
    finally:
        down = cli(tmp_path, "cluster", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert "removed network" in down.stdout
    assert labelled_objects(f"{CLUSTER}={name}") == {}
    assert not (tmp_path / "clusters" / name).exists()


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
