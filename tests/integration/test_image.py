"""The kernel image, run hardened as the runtime runs it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import KernelConnectionInfo

from jupyter_sandbox.backends import images

pytestmark = pytest.mark.docker

LABELS = {"org.jupyter-sandbox.test": "image"}
TMPFS_1000 = "uid=1000,gid=1000,mode=0755"


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> str:
    """The kernel image, built unless already up to date (a cold build takes minutes)."""
    status = images.build_image(docker_client)
    assert status.exists
    assert status.up_to_date
    return status.tag


def run(
    client: docker.DockerClient,
    image: str,
    command: Sequence[str],
    *,
    entrypoint: Sequence[str] | None = None,
    tmpfs: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
) -> str:
    """Run a hardened container to completion; return its output, fail on a non-zero exit."""
    container = client.containers.create(
        image,
        list(command),
        entrypoint=list(entrypoint) if entrypoint is not None else None,
        tmpfs={"/tmp": "", **(tmpfs or {})},
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        labels=LABELS,
        environment=environment or {},
        volumes=volumes or {},
    )
    try:
        container.start()
        result = container.wait(timeout=60)
        output = container.logs().decode()
        assert result["StatusCode"] == 0, output
        return str(output)
    finally:
        container.remove(force=True)


def test_image_is_labelled_with_the_recipe(docker_client: docker.DockerClient, image: str) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    assert config["Labels"]["org.jupyter-sandbox.recipe-hash"] == images.recipe_hash()
    assert config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/mnt/data"
    assert config["Entrypoint"] == ["/usr/local/bin/sandbox-init"]


def test_rebuild_is_a_no_op(docker_client: docker.DockerClient, image: str) -> None:
    before = docker_client.images.get(image).id
    started = time.monotonic()
    status = images.build_image(docker_client, tag=image)
    assert time.monotonic() - started < 5
    assert docker_client.images.get(image).id == before
    assert status.up_to_date


def test_python_stack_imports(docker_client: docker.DockerClient, image: str) -> None:
    code = (
        "import numpy, pandas, matplotlib, ipykernel, scipy;"
        "print(matplotlib.get_backend(), ipykernel.__version__)"
    )
    output = run(docker_client, image, ["-c", code], entrypoint=["python3"])
    assert output.split()[0] == "agg"


def test_runs_as_uid_1000(docker_client: docker.DockerClient, image: str) -> None:
    assert run(docker_client, image, ["-u"], entrypoint=["id"]).strip() == "1000"
    assert run(docker_client, image, ["-un"], entrypoint=["id"]).strip() == "sandbox"


def test_the_supervisor_is_pid_1_and_the_deadline_stops_the_container(
    docker_client: docker.DockerClient, image: str
) -> None:
    probe = "import sys; sys.stdout.write(open('/proc/1/cmdline').read().replace(chr(0), ' '))"
    started = time.monotonic()
    output = run(
        docker_client,
        image,
        ["--connection-file", "/run/kernel/c.json", "--deadline", str(time.time() + 2)],
        environment={"SANDBOX_KERNEL_CMD": json.dumps(["python3", "-c", probe])},
    )
    assert "/usr/bin/python3 -IS /usr/local/bin/sandbox-init --connection-file" in output
    assert "deadline reached" in output
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("mount", ["tmpfs", "volume"])
def test_data_folders_are_writable_by_1000(
    docker_client: docker.DockerClient, image: str, mount: str
) -> None:
    script = "touch /mnt/data/a /workspace/b && stat -c %u /mnt/data/a /workspace/b"
    if mount == "tmpfs":
        tmpfs = {"/mnt/data": TMPFS_1000, "/workspace": TMPFS_1000}
        output = run(docker_client, image, ["-c", script], entrypoint=["sh"], tmpfs=tmpfs)
        assert output.split() == ["1000", "1000"]
        return
    volumes = [docker_client.volumes.create(f"jsb-test-{uuid4().hex[:10]}", labels=LABELS)]
    volumes.append(docker_client.volumes.create(f"jsb-test-{uuid4().hex[:10]}", labels=LABELS))
    try:
        binds = {volumes[0].name: {"bind": "/mnt/data"}, volumes[1].name: {"bind": "/workspace"}}
        output = run(docker_client, image, ["-c", script], entrypoint=["sh"], volumes=binds)
        assert output.split() == ["1000", "1000"]
    finally:
        for volume in volumes:
            volume.remove(force=True)


def test_root_filesystem_is_read_only(docker_client: docker.DockerClient, image: str) -> None:
    output = run(docker_client, image, ["-c", "touch /usr/x 2>&1; echo $?"], entrypoint=["sh"])
    assert "Read-only file system" in output


@pytest.fixture
def kernel(
    docker_client: docker.DockerClient, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BlockingKernelClient, Container]]:
    """A kernel in a hardened container, reached over ipc sockets in a shared folder."""
    folder = Path(tmp_path_factory.mktemp("k", numbered=True))
    folder.chmod(0o777)  # the kernel runs as 1000 and binds its sockets here
    key = uuid4().hex
    ports = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
    info: dict[str, Any] = {
        **ports,
        "transport": "ipc",
        "signature_scheme": "hmac-sha256",
        "key": key,
        "kernel_name": "",
    }
    (folder / "connection.json").write_text(json.dumps({**info, "ip": "/run/kernel/k"}))
    (folder / "connection.json").chmod(0o644)
    container = docker_client.containers.run(
        image,
        ["--connection-file", "/run/kernel/connection.json", "--deadline", str(time.time() + 120)],
        detach=True,
        tmpfs={"/tmp": "", "/mnt/data": TMPFS_1000, "/workspace": TMPFS_1000},
        volumes={str(folder): {"bind": "/run/kernel"}},
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        labels=LABELS,
    )
    client = BlockingKernelClient()
    client.load_connection_info(cast(KernelConnectionInfo, dict(info, ip=str(folder / "k"))))
    try:
        # jupyter_client calls a kernel dead when neither shell nor heartbeat answers within
        # a second, which a busy machine's kernel start can exceed: wait for its sockets first.
        end = time.monotonic() + 60
        while not all((folder / f"k-{port}").exists() for port in ports.values()):
            assert time.monotonic() < end, "the kernel never bound its sockets"
            time.sleep(0.05)
        client.start_channels()
        client.wait_for_ready(timeout=60)
        yield client, container
    finally:
        client.stop_channels()
        container.remove(force=True)


def execute(client: BlockingKernelClient, code: str) -> list[dict[str, Any]]:
    """Run `code`; return its iopub outputs (no status or execute_input), reply consumed."""
    msg_id = client.execute(code)
    messages: list[dict[str, Any]] = []
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "status":
            if message["content"]["execution_state"] == "idle":
                break
        elif message["msg_type"] != "execute_input":
            messages.append(message)
    while client.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass
    return messages


def test_kernel_answers(kernel: tuple[BlockingKernelClient, Container]) -> None:
    client, _ = kernel
    [result] = execute(client, "1 + 1")
    assert result["content"]["data"]["text/plain"] == "2"


def test_plt_show_displays_a_png(kernel: tuple[BlockingKernelClient, Container]) -> None:
    client, _ = kernel
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 3, 2])\n"
        "plt.savefig('/mnt/data/plot.png')\n"
        "plt.show()\n"
    )
    messages = execute(client, code)
    kinds = [m["msg_type"] for m in messages]
    assert "error" not in kinds, messages
    displays = [m for m in messages if m["msg_type"] == "display_data"]
    assert "image/png" in displays[0]["content"]["data"]
    [saved] = execute(client, "import os; os.path.getsize('/mnt/data/plot.png') > 1000")
    assert saved["content"]["data"]["text/plain"] == "True"


def test_sigint_interrupts_and_sigusr1_restarts(
    kernel: tuple[BlockingKernelClient, Container],
) -> None:
    client, container = kernel
    execute(client, "x = 41")
    msg_id = client.execute("import time; time.sleep(60)")
    while client.get_iopub_msg(timeout=10)["msg_type"] != "execute_input":
        pass
    container.kill(signal="SIGINT")
    reply = client.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "KeyboardInterrupt"

    # The supervisor logs each kernel start: follow the log instead of sleeping. (The CLI,
    # because docker-py's log stream leaves its socket to the garbage collector.)
    with subprocess.Popen(
        ["docker", "logs", "--follow", str(container.id)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as logs:
        sockets = [Path(f"{client.ip}-{port}") for port in range(1, 6)]
        before = {path: os.lstat(path).st_ctime_ns for path in sockets}
        container.kill(signal="SIGUSR1")
        starts = 0
        for line in logs.stderr or ():
            starts += "kernel started" in line
            if starts == 2:
                break
        logs.terminate()
    # jupyter_client calls a kernel dead when its heartbeat misses a second, which the new
    # kernel's start (ipykernel 7 imports more) can exceed here: wait for its new sockets.
    end = time.monotonic() + 60
    while any(os.lstat(path).st_ctime_ns == before[path] for path in before):
        assert time.monotonic() < end, "the new kernel never bound its sockets"
        time.sleep(0.05)
    client.wait_for_ready(timeout=30)  # iopub must resubscribe to the new kernel
    [result] = execute(client, "'x' in globals()")
    assert result["content"]["data"]["text/plain"] == "False"
