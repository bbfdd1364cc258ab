"""The kernel provisioner under a real jupyter_client KernelManager and a real Jupyter Server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen
from uuid import uuid4

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from jupyter_sandbox import Client
from jupyter_sandbox.jupyter.kernelspec import kernel_json
from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled, wait_until
from tests.integration.jupyter_harness import jupyter_process

pytestmark = pytest.mark.docker

MEMORY_PROBE = (
    "import os\n"
    "p = '/sys/fs/cgroup/memory.max'\n"
    "q = '/sys/fs/cgroup/memory/memory.limit_in_bytes'\n"
    "print(os.getuid(), open(p if os.path.exists(p) else q).read().strip())"
)


@pytest.fixture
def kernels_dir(tmp_path: Path, home: Path, test_label: str) -> Iterator[Path]:
    """A kernelspec folder with a labelled 512m sandbox kernel; fails the test on leaks."""
    folder = tmp_path / "jupyter" / "kernels" / "sbx"
    folder.mkdir(parents=True)
    spec = kernel_json(
        display_name="Sandbox (test)",
        memory="512m",
        home=str(home),
        extra_labels={TEST_LABEL: test_label},
    )
    (folder / "kernel.json").write_text(json.dumps(spec))
    yield folder.parent
    leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
    with Client(home=home) as client:
        live = [c.id for c in client.containers.list()]
    assert not leaked, f"leaked Docker objects: {leaked}"
    assert not live, f"sandboxes left in the store: {live}"


def run(kc: Any, code: str, timeout: float = 30) -> tuple[str, dict[str, Any]]:
    """Execute and return (stdout, reply content)."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return "".join(out), reply["content"]


def test_kernel_manager_lifecycle(kernels_dir: Path, home: Path, test_label: str) -> None:
    km = KernelManager(
        kernel_name="sbx", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    )
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        container_id = km.provisioner.container_id
        with Client(home=home) as client:
            listed = client.containers.retrieve(container_id)
        assert (listed.status, listed.memory_limit) == ("ready", "512m")
        assert labelled_objects(f"{TEST_LABEL}={test_label}")["container"]

        stdout, _ = run(kc, MEMORY_PROBE)
        assert stdout == f"1000 {512 * 2**20}\n"
        run(kc, "open('/mnt/data/kept.txt', 'w').write('kept'); x = 1")

        kc.execute("print('looping', flush=True)\nwhile True: pass")
        while not (lambda m: m["msg_type"] == "stream")(kc.get_iopub_msg(timeout=10)):
            pass
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=10)
        assert reply["content"]["ename"] == "KeyboardInterrupt"

        km.restart_kernel()
        kc.wait_for_ready(timeout=30)
        stdout, _ = run(kc, "print(open('/mnt/data/kept.txt').read(), 'x' in globals())")
        assert stdout == "kept False\n"
        assert km.provisioner.container_id == container_id
        assert km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert not km.is_alive()
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")
    with Client(home=home) as client:
        assert list(client.containers.list()) == []


def test_kernel_death_is_seen_and_restart_gives_a_fresh_kernel(kernels_dir: Path) -> None:
    km = KernelManager(
        kernel_name="sbx", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    )
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        kc.execute("import os; os._exit(3)")
        wait_until(lambda: not km.is_alive(), 10)
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=30)
        assert km.is_alive()
        stdout, _ = run(kc, "print('back')")
        assert stdout == "back\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_provisioner_info_lets_another_manager_take_over(kernels_dir: Path) -> None:
    import asyncio

    from jupyter_sandbox.jupyter.provisioner import SandboxProvisioner

    km = KernelManager(
        kernel_name="sbx", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    )
    km.start_kernel()
    try:
        info = asyncio.run(km.provisioner.get_provisioner_info())
        assert info["container_id"] == km.provisioner.container_id
        other = SandboxProvisioner(kernel_id=info["kernel_id"], kernel_spec=km.kernel_spec)
        asyncio.run(other.load_provisioner_info(json.loads(json.dumps(info, default=bytes.decode))))
        assert asyncio.run(other.poll()) is None
        asyncio.run(other.send_signal(signal.SIGINT))
        assert asyncio.run(other.poll()) is None
    finally:
        km.shutdown_kernel()


# -- a real Jupyter Server ------------------------------------------------------------------


@pytest.fixture
def jupyter_server(kernels_dir: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A Jupyter Server on a free loopback port that sees the test kernelspec."""
    with jupyter_process(
        "jupyter_server",
        jupyter_path=kernels_dir.parent,
        root=tmp_path,
        log_path=tmp_path / "server.log",
        extra=[],
    ) as (base, token):
        yield base, token


def _api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = Request(
        f"{base}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urlopen(request, timeout=60) as response:
        text = response.read()
    return json.loads(text) if text else None


class _Channels:
    """The kernel's channels over Jupyter Server's websocket (v1 JSON protocol)."""

    def __init__(self, base: str, token: str, kernel_id: str) -> None:
        import websocket

        url = base.replace("http", "ws") + f"/api/kernels/{kernel_id}/channels?token={token}"
        self.ws = websocket.create_connection(url, timeout=30)
        self.session = uuid4().hex

    def execute(self, code: str, timeout: float = 60) -> tuple[str, dict[str, Any]]:
        msg_id = self.send_only(code)
        stdout: list[str] = []
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while (reply is None or not idle) and time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
        assert reply is not None, f"no reply to {code!r}"
        return "".join(stdout), reply

    def send_only(self, code: str) -> str:
        """Send an execute_request; return its msg_id."""
        msg_id = uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": self.session,
            "version": "5.3",
            "date": "",
        }
        content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        self.ws.send(json.dumps({**message, "channel": "shell"}))
        return msg_id

    def wait_for(self, msg_type: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg["msg_type"] == msg_type:
                return msg["content"]  # type: ignore[no-any-return]
        raise AssertionError(f"no {msg_type}")

    def wait_ready(self, timeout: float = 30) -> None:
        """Ask kernel_info until its iopub status arrives, as JupyterLab does after a restart.

        The server's own sockets reconnect to the new kernel's ipc paths on ZeroMQ's timer,
        so output published in the first ~100 ms after a restart can miss them.
        """
        from websocket import WebSocketTimeoutException

        deadline = time.monotonic() + timeout
        pending: set[str] = set()
        while time.monotonic() < deadline:
            msg_id = uuid4().hex
            pending.add(msg_id)
            header = {
                "msg_id": msg_id,
                "msg_type": "kernel_info_request",
                "username": "test",
                "session": self.session,
                "version": "5.3",
                "date": "",
            }
            message = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
            self.ws.send(json.dumps({**message, "channel": "shell"}))
            self.ws.settimeout(0.5)
            try:
                while True:
                    msg = json.loads(self.ws.recv())
                    parent = msg.get("parent_header", {}).get("msg_id")
                    if msg.get("channel") == "iopub" and parent in pending:
                        return
            except WebSocketTimeoutException:
                continue
            finally:
                self.ws.settimeout(30)
        raise AssertionError("the kernel did not answer on iopub after the restart")

    def close(self) -> None:
        self.ws.close()


def test_jupyter_server_rest_and_websocket(
    jupyter_server: tuple[str, str], home: Path, test_label: str
) -> None:
    base, token = jupyter_server
    specs = _api(base, token, "GET", "/api/kernelspecs")
    assert specs["kernelspecs"]["sbx"]["spec"]["display_name"] == "Sandbox (test)"

    kernel = _api(base, token, "POST", "/api/kernels", {"name": "sbx"})
    channels = _Channels(base, token, kernel["id"])
    try:
        stdout, reply = channels.execute(MEMORY_PROBE)
        assert reply["status"] == "ok"
        assert stdout == f"1000 {512 * 2**20}\n"
        with Client(home=home) as client:
            (container,) = list(client.containers.list())
        assert container.memory_limit == "512m"
        inspect = subprocess.run(
            ["docker", "inspect", "-f", "{{.HostConfig.Memory}}", f"jsbx-{container.id}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert inspect.stdout.strip() == str(512 * 2**20)

        channels.execute("open('/mnt/data/kept.txt', 'w').write('kept')")
        channels.send_only("print('looping', flush=True)\nwhile True: pass")
        channels.wait_for("stream")
        _api(base, token, "POST", f"/api/kernels/{kernel['id']}/interrupt")
        assert channels.wait_for("execute_reply")["ename"] == "KeyboardInterrupt"

        _api(base, token, "POST", f"/api/kernels/{kernel['id']}/restart")
        channels.wait_ready()
        stdout, _ = channels.execute("print(open('/mnt/data/kept.txt').read())")
        assert stdout == "kept\n"
    finally:
        channels.close()
        _api(base, token, "DELETE", f"/api/kernels/{kernel['id']}")
    assert _api(base, token, "GET", "/api/kernels") == []
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")
