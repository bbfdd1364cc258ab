"""Cluster fixtures: Docker-in-Docker nodes on the engine, labelled per run and swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import docker
import pytest

from jupyter_sandbox.backends.cluster_images import NullLoadProgress, copy_images
from jupyter_sandbox.backends.cluster_nodes import CLUSTER, LocalCluster
from jupyter_sandbox.backends.node_image import build_node_image
from tests.conftest import IMAGE, SESSION_RUN, TEST_LABEL, remove_labelled

SCRIPT = Path(sys.executable).with_name("jupyter-sandbox")
TIMINGS = Path("/tmp/jsbx-cluster-timings.jsonl")
"""Each fixture's step timings, one JSON line per cluster (docs/scale-out.md quotes them)."""


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=600)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def node_image(engine: docker.DockerClient) -> str:
    """The node image, built offline if missing (minutes the first time)."""
    return build_node_image(engine)


def start_cluster(
    engine: docker.DockerClient, home: Path, node_image: str, nodes: int, *, load: bool
) -> Iterator[LocalCluster]:
    """A cluster labelled for this run; on exit, `down` must leave nothing behind."""
    run = f"{SESSION_RUN}-{uuid4().hex[:6]}"
    label = f"{TEST_LABEL}={run}"
    cluster = LocalCluster(engine, f"t{uuid4().hex[:8]}", home=home, extra_labels={TEST_LABEL: run})
    try:
        members = cluster.up(nodes, node_image)
        if load:
            clients = {node.name: cluster.client_for(node.address) for node in members}
            cluster.timings.steps.update(copy_images(engine, [IMAGE], clients, NullLoadProgress()))
        with TIMINGS.open("a") as log:
            log.write(json.dumps({"nodes": nodes, **cluster.timings.steps}) + "\n")
        yield cluster
    finally:
        cluster.down()
        leaked = remove_labelled(label)
        assert not leaked, f"cluster down left behind: {leaked}"


@pytest.fixture(scope="module")
def one_node(
    engine: docker.DockerClient, node_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """One node made by `jupyter-sandbox cluster up` (so the images are loaded by the CLI)."""
    home = tmp_path_factory.mktemp("home")
    name = f"t{uuid4().hex[:8]}"
    cluster = LocalCluster(engine, name, home=home)
    try:
        up = subprocess.run(
            [str(SCRIPT), "cluster", "up", "--nodes", "1", "--name", name, "--json"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "JUPYTER_SANDBOX_HOME": str(home)},
            timeout=600,
        )
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["nodes"][0]["name"] == cluster.nodes()[0].name
        timings = up.stderr.rpartition("timings: ")[2].strip()
        with TIMINGS.open("a") as log:
            log.write(json.dumps({"nodes": 1, "cli": timings}) + "\n")
        yield cluster
    finally:
        down = subprocess.run(  # the CLI's down: its API server and PostgreSQL too
            [str(SCRIPT), "cluster", "down", "--name", name],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "JUPYTER_SANDBOX_HOME": str(home)},
            timeout=600,
        )
        assert down.returncode == 0, down.stderr
        leaked = remove_labelled(f"{CLUSTER}={name}")
        assert not leaked, f"cluster down left behind: {leaked}"


@pytest.fixture(scope="module")
def two_nodes(
    engine: docker.DockerClient, node_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A manager and a worker in one Swarm, the kernel image loaded into both."""
    yield from start_cluster(engine, tmp_path_factory.mktemp("home"), node_image, 2, load=True)
