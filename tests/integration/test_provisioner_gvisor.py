"""Jupyter kernels in gVisor: a `kernelspec install --runtime runsc` kernelspec under a real
jupyter_client KernelManager and a real Jupyter Server.

The relay dials the sandbox's encrypted tcp channel (CurveZMQ inside the sandbox's own network
namespace); the manager and the server see only the relay's ipc sockets and key. Hostile
output under gVisor is tests/adversarial/test_output_script.py (run under both runtimes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from jupyter_sandbox import BadRequestError, Client
from jupyter_sandbox.jupyter.kernelspec import install
from tests.adversarial.conftest import runsc_missing
from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled, wait_until
from tests.integration.jupyter_harness import jupyter_process
from tests.integration.test_provisioner import _api, _Channels, run

pytestmark = pytest.mark.docker

GVISOR_PROBE = (
    "import os, subprocess\n"
    "dmesg = subprocess.run(['dmesg'], capture_output=True, text=True).stdout\n"
    "net = sorted(os.listdir('/sys/class/net'))\n"
    "print(os.getuid(), os.uname().release, 'gVisor' in dmesg, net)"
)


@pytest.fixture
def kernels_dir(tmp_path: Path, home: Path, test_label: str) -> Iterator[Path]:
    """A runsc sandbox kernelspec written by `install` (which asks the engine for runsc);
    fails the test on leaks."""
    reason = runsc_missing()
    if reason is not None:
        if os.environ.get("JUPYTER_SANDBOX_REQUIRE_DOCKER") == "1":
            pytest.fail(f"gVisor tests are required but cannot run: {reason}")
        pytest.skip(reason)
    folder = install(
        name="sbx-gvisor",
        display_name="Sandbox (gVisor test)",
        memory="512m",
        runtime="runsc",
        prefix=str(tmp_path / "prefix"),
        config={"home": str(home), "extra_labels": {TEST_LABEL: test_label}},
    )
    yield folder.parent
    leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
    with Client(home=home) as client:
        live = [c.id for c in client.containers.list()]
    assert not leaked, f"leaked Docker objects: {leaked}"
    assert not live, f"sandboxes left in the store: {live}"


def manager(kernels_dir: Path) -> KernelManager:
    return KernelManager(
        kernel_name="sbx-gvisor",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
    )


def test_the_kernelspec_names_the_runtime_for_the_provisioner(kernels_dir: Path) -> None:
    spec = json.loads((kernels_dir / "sbx-gvisor" / "kernel.json").read_text())
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "jupyter-sandbox"
    assert provisioner["config"]["runtime"] == "runsc"


def test_a_runsc_kernel_runs_interrupts_restarts_and_dies_visibly(
    kernels_dir: Path, home: Path, test_label: str
) -> None:
    km = manager(kernels_dir)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        container_id = km.provisioner.container_id
        runtime = subprocess.run(
            ["docker", "inspect", "-f", "{{.HostConfig.Runtime}}", f"jsbx-{container_id}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert runtime.stdout.strip() == "runsc"
        stdout, _ = run(kc, GVISOR_PROBE, timeout=60)
        uid, release, in_gvisor, interfaces = stdout.split(" ", 3)
        assert (uid, in_gvisor, interfaces) == ("1000", "True", "['lo']\n"), stdout
        assert release.startswith("4.4.0"), release  # the kernel version gVisor reports

        # The manager holds the relay's ipc sockets and key: no tcp address, no Curve key.
        info = km.get_connection_info()
        assert info["transport"] == "ipc"
        assert not any(name.startswith("curve") for name in info)
        with Client(home=home) as client:
            record = client._store.get(container_id)
            assert record is not None
            endpoint = client._backend.kernel_endpoint(record.socket_dir, record.kernel_key)
            with pytest.raises(BadRequestError, match="kernelspec install --runtime runsc") as err:
                client.containers.connection_info(container_id)
        assert err.value.param == "kernel_channel"
        assert endpoint.transport == "tcp"
        assert endpoint.curve_secret_key is not None
        assert endpoint.curve_secret_key not in json.dumps(info, default=str)
        assert km.session.key != endpoint.key.encode()

        run(kc, "open('/mnt/data/kept.txt', 'w').write('kept'); x = 1")
        kc.execute("print('looping', flush=True)\nwhile True: pass")
        while kc.get_iopub_msg(timeout=30)["msg_type"] != "stream":
            pass
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["ename"] == "KeyboardInterrupt"

        km.restart_kernel()
        kc.wait_for_ready(timeout=60)
        stdout, _ = run(kc, "print(open('/mnt/data/kept.txt').read(), 'x' in globals())")
        assert stdout == "kept False\n"
        assert km.provisioner.container_id == container_id

        kc.execute("import os; os._exit(3)")
        wait_until(lambda: not km.is_alive(), 30, what="the dead kernel to be seen")
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=60)
        stdout, _ = run(kc, "print('back')")
        assert stdout == "back\n"
        assert km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert not km.is_alive()
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")


def test_another_manager_takes_over_a_runsc_kernel(kernels_dir: Path) -> None:
    from jupyter_sandbox.jupyter.provisioner import SandboxProvisioner

    km = manager(kernels_dir)
    km.start_kernel()
    other: SandboxProvisioner | None = None
    try:
        info = asyncio.run(km.provisioner.get_provisioner_info())
        assert info["runtime"] == "runsc"
        other = SandboxProvisioner(kernel_id=info["kernel_id"], kernel_spec=km.kernel_spec)
        asyncio.run(other.load_provisioner_info(json.loads(json.dumps(info, default=bytes.decode))))
        assert asyncio.run(other.poll()) is None  # its own relay's heartbeat, over tcp
        asyncio.run(other.send_signal(signal.SIGINT))
        assert asyncio.run(other.poll()) is None
    finally:
        if other is not None:
            # Let go of the taken-over kernel without deleting it (the first manager does).
            assert other._relay is not None
            other._relay.close()
            if other._client is not None:
                other._client.close()
        km.shutdown_kernel()


@pytest.fixture
def jupyter_server(kernels_dir: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A Jupyter Server on a free loopback port that sees the runsc kernelspec."""
    with jupyter_process(
        "jupyter_server",
        jupyter_path=kernels_dir.parent,
        root=tmp_path,
        log_path=tmp_path / "server.log",
        extra=[],
    ) as (base, token):
        yield base, token


def test_jupyter_server_runs_a_gvisor_kernel(
    jupyter_server: tuple[str, str], home: Path, test_label: str
) -> None:
    base, token = jupyter_server
    specs = _api(base, token, "GET", "/api/kernelspecs")
    assert specs["kernelspecs"]["sbx-gvisor"]["spec"]["display_name"] == "Sandbox (gVisor test)"

    kernel = _api(base, token, "POST", "/api/kernels", {"name": "sbx-gvisor"})
    channels = _Channels(base, token, kernel["id"])
    try:
        stdout, reply = channels.execute(GVISOR_PROBE, timeout=90)
        assert reply["status"] == "ok"
        assert " True ['lo']" in stdout, stdout

        channels.execute("open('/mnt/data/kept.txt', 'w').write('kept')")
        channels.send_only("print('looping', flush=True)\nwhile True: pass")
        channels.wait_for("stream")
        _api(base, token, "POST", f"/api/kernels/{kernel['id']}/interrupt")
        assert channels.wait_for("execute_reply")["ename"] == "KeyboardInterrupt"

        _api(base, token, "POST", f"/api/kernels/{kernel['id']}/restart")
        channels.wait_ready(timeout=60)
        stdout, _ = channels.execute("print(open('/mnt/data/kept.txt').read())")
        assert stdout == "kept\n"
    finally:
        channels.close()
        _api(base, token, "DELETE", f"/api/kernels/{kernel['id']}")
    assert _api(base, token, "GET", "/api/kernels") == []
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")


def test_install_refuses_a_runtime_the_engine_lacks(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="'no-such-runtime' is not a runtime") as caught:
        install(name="sbx-nope", runtime="no-such-runtime", prefix=str(tmp_path))
    assert caught.value.param == "runtime"
    assert not (tmp_path / "share/jupyter/kernels/sbx-nope").exists()
