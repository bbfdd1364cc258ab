"""A `Client` pointed at a second Docker engine (a Docker-in-Docker node, over mutual TLS, and
over ssh): the kernel channel through exec tunnels, files through the archive API, nothing
left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import docker
import pytest

from jupyter_sandbox import APIConnectionError, Client, NotFoundError
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.cluster_ssh import ClusterSsh
from jupyter_sandbox.backends.kernel_tunnel import TunnelKernelConnection
from tests.adversarial.test_kernel_tunnel import FLOOD, KILL
from tests.conftest import TEST_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(900)]

INLINE_SKILL = {
    "type": "inline",
    "source": {"files": [{"path": "helper.py", "content": "def up(s): return s.upper()"}]},
}
STUBBORN = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"


@pytest.fixture
def node(one_node: LocalCluster) -> Iterator[docker.DockerClient]:
    client = one_node.client_for(one_node.nodes()[0].address)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def remote_env(one_node: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """DOCKER_HOST=tcp://node:2376 with the cluster's TLS env, as an operator sets it."""
    env = one_node.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def on_node(node: docker.DockerClient, label: str) -> dict[str, list[str]]:
    selector = {"label": label}
    return {
        kind: names
        for kind, names in {
            "container": [c.name for c in node.containers.list(all=True, filters=selector)],
            "volume": [v.name for v in node.volumes.list(filters=selector)],
            "network": [n.name for n in node.networks.list(filters=selector)],
        }.items()
        if names
    }


@pytest.fixture
def remote(
    remote_env: dict[str, str], node: docker.DockerClient, tmp_path: Path
) -> Iterator[Client]:
    run = f"r{uuid4().hex[:8]}"
    client = Client(home=tmp_path / "home", extra_labels={TEST_LABEL: run})
    try:
        yield client
    finally:
        client.close()
        leaked = on_node(node, f"{TEST_LABEL}={run}")
        for name in leaked.get("container", []):
            node.api.remove_container(name, force=True, v=True)
        assert not leaked, f"left on the node: {leaked}"


def test_the_client_runs_sandboxes_on_the_remote_engine(
    remote: Client, node: docker.DockerClient, engine: docker.DockerClient
) -> None:
    assert remote._backend.is_remote
    assert remote._backend.engine.api.base_url.startswith("https://")
    box = remote.containers.create(name="remote", skills=[INLINE_SKILL])
    docker_name = f"jsbx-{box.id}"
    assert node.containers.get(docker_name).status == "running"
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(docker_name)  # not on this machine's engine
    assert {m["Type"] for m in node.api.inspect_container(docker_name)["Mounts"]} == {"volume"}

    assert remote.containers.execute(box.id, code="from helper import up; x = 6 * 7").status == "ok"
    assert remote.containers.execute(box.id, code="print(up('skill'))").stdout == "SKILL\n"
    assert remote.containers.execute(box.id, code="print(x)").outputs[0].text == "42\n"
    payload = os.urandom(3 * 2**20)
    made = remote.containers.files.create(box.id, file=("blob.bin", payload))
    assert made.path == "/mnt/data/blob.bin"
    assert remote.containers.files.content.retrieve(made.id, container_id=box.id).read() == payload
    written = remote.containers.execute(
        box.id, code="open('/mnt/data/out.txt', 'w').write('from the node\\n')"
    )
    assert written.status == "ok"
    listed = {f.path: f for f in remote.containers.files.list(box.id)}
    out = listed["/mnt/data/out.txt"]
    content = remote.containers.files.content.retrieve(out.id, container_id=box.id).read()
    assert content == b"from the node\n"

    slow = remote.containers.execute(box.id, code=STUBBORN, timeout=2)
    assert slow.status == "timeout"
    assert "restarted" in (slow.message or "")
    fresh = remote.containers.execute(box.id, code="print('x' in dir(), 1 + 1)")
    assert fresh.outputs[0].text == "False 2\n"

    session = remote._kernels._sessions[box.id]
    assert isinstance(session.connection, TunnelKernelConnection)
    tunnel = session.connection.tunnel
    remote.containers.delete(box.id)
    assert tunnel.live_links == 0
    assert not tunnel.folder.exists()
    deadline = time.monotonic() + 30
    while node.api.containers(all=True, filters={"name": docker_name}):
        assert time.monotonic() < deadline, "the sandbox is still on the node"
        time.sleep(0.1)
    assert not [v for v in node.volumes.list() if v.name.startswith(docker_name)]


def test_a_hostile_sandbox_breaks_only_its_own_tunnel(remote: Client) -> None:
    box = remote.containers.create(name="hostile")
    other = remote.containers.create(name="bystander")
    for code in (KILL, FLOOD):
        remote.containers.execute(box.id, code=code, timeout=60)
        again = remote.containers.execute(box.id, code="print(6 * 7)", timeout=60)
        assert again.outputs[0].text == "42\n", again
        bystander = remote.containers.execute(other.id, code="print('fine')")
        assert bystander.outputs[0].text == "fine\n"
    remote.containers.delete(box.id)
    remote.containers.delete(other.id)


def test_a_remote_engine_without_the_kernel_image_says_how_to_load_it(
    remote_env: dict[str, str], tmp_path: Path
) -> None:
    client = Client(home=tmp_path / "home", image="jupyter-sandbox-kernel:not-loaded")
    try:
        with pytest.raises(NotFoundError) as caught:
            client.containers.create(name="no-image")
    finally:
        client.close()
    assert caught.value.param == "image"
    assert "docker save jupyter-sandbox-kernel:not-loaded | docker load" in caught.value.message
    assert remote_env["DOCKER_HOST"].removeprefix("tcp://").split(":")[0] in caught.value.message


@pytest.fixture
def ssh_dir(one_node: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DOCKER_HOST=ssh://root@node, and a HOME whose ~/.ssh holds the cluster's config and
    known_hosts (all docker-py's ssh transport reads); no TLS settings."""
    dot_ssh = tmp_path / "user" / ".ssh"
    dot_ssh.mkdir(parents=True, mode=0o700)
    shutil.copy(one_node.ssh.config, dot_ssh / "config")
    shutil.copy(one_node.ssh.known_hosts, dot_ssh / "known_hosts")
    monkeypatch.setenv("HOME", str(dot_ssh.parent))
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    monkeypatch.setenv("DOCKER_HOST", one_node.ssh.docker_host(one_node.nodes()[0].address))
    return dot_ssh


def test_an_ssh_engine_runs_create_execute_files_and_delete(
    ssh_dir: Path, node: docker.DockerClient, tmp_path: Path
) -> None:
    run = f"r{uuid4().hex[:8]}"
    client = Client(home=tmp_path / "home", extra_labels={TEST_LABEL: run})
    try:
        assert client._backend.is_remote
        assert client._backend.engine.api.base_url == "http+docker://ssh"
        box = client.containers.create(name="over-ssh", skills=[INLINE_SKILL])
        assert node.containers.get(f"jsbx-{box.id}").status == "running"
        ran = client.containers.execute(box.id, code="from helper import up; print(up('ssh'))")
        assert ran.stdout == "SSH\n"
        payload = os.urandom(2**20)
        made = client.containers.files.create(box.id, file=("blob.bin", payload))
        content = client.containers.files.content.retrieve(made.id, container_id=box.id)
        assert content.read() == payload
        client.containers.execute(box.id, code="open('/mnt/data/out.txt', 'w').write('back')")
        listed = {f.path: f for f in client.containers.files.list(box.id)}
        back = listed["/mnt/data/out.txt"]
        assert client.containers.files.content.retrieve(back.id, container_id=box.id).read() == (
            b"back"
        )
        session = client._kernels._sessions[box.id]
        assert isinstance(session.connection, TunnelKernelConnection)
        client.containers.delete(box.id)
        assert session.connection.tunnel.live_links == 0
    finally:
        client.close()
        leaked = on_node(node, f"{TEST_LABEL}={run}")
        for name in leaked.get("container", []):
            node.api.remove_container(name, force=True, v=True)
    assert not leaked, f"left on the node: {leaked}"


def connect_fails(home: Path) -> APIConnectionError:
    with pytest.raises(APIConnectionError) as caught:
        Client(home=home).close()
    return caught.value


def test_ssh_admits_only_the_clusters_key_to_a_known_host(
    ssh_dir: Path, one_node: LocalCluster, engine: docker.DockerClient, tmp_path: Path
) -> None:
    address = one_node.nodes()[0].address
    stranger = ClusterSsh(tmp_path / "stranger")
    stranger.node_files(address)  # a client key and a host key the node never saw
    shutil.copy(stranger.config, ssh_dir / "config")
    refused = connect_fails(tmp_path / "home")
    assert "AuthenticationException" in refused.message

    shutil.copy(one_node.ssh.config, ssh_dir / "config")
    shutil.copy(stranger.known_hosts, ssh_dir / "known_hosts")  # another key for this host
    assert "BadHostKeyException" in connect_fails(tmp_path / "home").message
    (ssh_dir / "known_hosts").write_text("")
    assert "not found in known_hosts" in connect_fails(tmp_path / "home").message

    no_password = subprocess.run(
        ["ssh", "-F", str(one_node.ssh.config), "-o", "BatchMode=yes", "-o",
         "PubkeyAuthentication=no", address, "true"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert no_password.returncode == 255
    assert "Permission denied (publickey)" in no_password.stderr  # the only method offered
    cli = subprocess.run(
        ["ssh", "-F", str(one_node.ssh.config), address, "docker info --format {{.Name}}"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert cli.stdout.strip() == one_node.nodes()[0].name, cli.stderr

    assert oct(one_node.ssh.identity.stat().st_mode & 0o777) == "0o600"
    on_node_files = engine.containers.get(one_node.nodes()[0].name).exec_run(
        ["stat", "-c", "%a %U %n", "/etc/jsbx-node/ssh/ssh_host_ed25519_key",
         "/etc/jsbx-node/ssh/authorized_keys"]
    )  # fmt: skip
    modes = on_node_files.output.decode().split("\n")
    assert [line.split()[:2] for line in modes if line] == [["600", "root"], ["600", "root"]]
