"""gVisor (runsc) sandboxes and the encrypted tcp kernel channel, end to end on the engine.

runsc sandboxes talk to the host over tcp + CurveZMQ inside their own network namespace; the
same channel is also tested under runc (`kernel_channel="tcp"`), where it is optional.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.utils.z85
from jupyter_client.session import Session

from jupyter_sandbox import BadRequestError, Client
from jupyter_sandbox.backends import kernel_tcp
from jupyter_sandbox.backends.base import KernelEndpoint
from jupyter_sandbox.backends.store import ContainerRecord
from jupyter_sandbox.core.pool import POOL_PROJECT
from tests.adversarial.conftest import runsc_missing
from tests.integration.test_network import PRELUDE, prepare, run
from tests.integration.test_network_lab import Lab, lab

__all__ = ["lab"]  # a fixture, re-exported for pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def gvisor(make_client: Callable[..., Client]) -> Client:
    """A client whose sandboxes run under runsc (skipped, or failed when Docker tests are
    required, if the engine lacks it)."""
    reason = runsc_missing()
    if reason is not None:
        if os.environ.get("JUPYTER_SANDBOX_REQUIRE_DOCKER") == "1":
            pytest.fail(f"gVisor tests are required but cannot run: {reason}")
        pytest.skip(reason)
    return make_client(runtime="runsc")


def channel_of(client: Client, record: ContainerRecord) -> KernelEndpoint:
    """How the host reaches the sandbox's kernel (the backend decided when it was made)."""
    return client._backend.kernel_endpoint(record.socket_dir, record.kernel_key)


def test_a_runsc_sandbox_runs_in_gvisor_with_only_lo(gvisor: Client) -> None:
    container = gvisor.containers.create(name="gvisor")
    record = gvisor._store.get(container.id)
    assert record is not None
    assert channel_of(gvisor, record).transport == "tcp"
    inspect = subprocess.run(
        ["docker", "inspect", "-f", "{{.HostConfig.Runtime}}", f"jsbx-{container.id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert inspect.stdout.strip() == "runsc"
    probe = gvisor.containers.execute(
        container.id,
        "import os, subprocess, numpy as np\n"
        "dmesg = subprocess.run(['dmesg'], capture_output=True, text=True).stdout\n"
        "print(os.uname().release, 'gVisor' in dmesg, sorted(os.listdir('/sys/class/net')),"
        " int(np.arange(4).sum()))",
        timeout=60,
    )
    assert probe.status == "ok", probe.outputs
    release, in_gvisor, interfaces, total = probe.stdout.split(" ", 3)
    assert in_gvisor == "True", probe.stdout  # gVisor's dmesg: "Starting gVisor..."
    assert release.startswith("4.4.0"), release  # the kernel version gVisor reports
    assert interfaces == "['lo']", interfaces
    assert total.strip() == "6"
    gvisor.containers.delete(container.id)


def test_files_outputs_restart_and_interrupt_under_gvisor(gvisor: Client) -> None:
    container = gvisor.containers.create(name="files")
    gvisor.containers.files.create(container.id, file=b"a,b\n1,2\n", path="/mnt/data/in.csv")
    out = gvisor.containers.execute(
        container.id,
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/in.csv'); df.to_csv('/mnt/data/out.csv')\n"
        "for i in range(50): print(i)\n"
        "df.a.sum()",
    )
    assert out.stdout == "".join(f"{i}\n" for i in range(50))
    assert out.result is not None
    assert out.result.data["text/plain"] == "1"
    listed = {f.path for f in gvisor.containers.files.list(container.id)}
    assert "/mnt/data/out.csv" in listed
    started = time.monotonic()
    slow = gvisor.containers.execute(container.id, "import time; time.sleep(30)", timeout=2)
    assert slow.status == "timeout"
    assert time.monotonic() - started < 20
    assert gvisor.containers.execute(container.id, "print('alive')").stdout == "alive\n"
    gvisor.containers.restart(container.id)
    after = gvisor.containers.execute(container.id, "print('x' in dir(), 1 + 1)")
    assert after.stdout == "False 2\n"
    gvisor.containers.delete(container.id)


def test_the_tcp_channel_under_runc_reconnects_after_a_host_restart(
    make_client: Callable[..., Client],
) -> None:
    first = make_client(kernel_channel="tcp")
    container = first.containers.create(name="tcp")
    first.containers.execute(container.id, "x = 41")
    first.close()
    second = make_client(kernel_channel="tcp")
    again = second.containers.execute(container.id, "print(x + 1)")
    assert again.stdout == "42\n"
    big = second.containers.execute(container.id, "print('x' * 10_000_000)")
    assert big.status in ("ok", "error")  # capped, not a lost connection
    assert second.containers.execute(container.id, "print('still')").stdout == "still\n"
    second.containers.delete(container.id)


def _kernel_info_reply(netns: str, server_public: bytes, key: str, client: bytes | None) -> bool:
    """Whether a shell socket from inside the sandbox's namespace gets a kernel_info reply,
    as a Curve client with the key pair `client` (None: plain, no Curve)."""
    context = kernel_tcp.netns_context(netns)
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if client is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, client)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, zmq.curve_public(client))
    sock.connect(f"tcp://127.0.0.1:{kernel_tcp.TCP_PORTS['shell']}")
    session = Session(key=key.encode(), signature_scheme="hmac-sha256")
    try:
        session.send(sock, session.msg("kernel_info_request", {}))
        return bool(sock.poll(3000))
    finally:
        sock.close(linger=0)
        context.term()


def test_only_the_hosts_client_key_is_admitted(make_client: Callable[..., Client]) -> None:
    client = make_client(kernel_channel="tcp")
    container = client.containers.create(name="zap")
    record = client._store.get(container.id)
    assert record is not None
    info = json.loads((Path(record.socket_dir) / "connection.json").read_text())
    keys = kernel_tcp.sandbox_keys(kernel_tcp.master_key(client.settings.home), container.id)
    assert info["curve_publickey"] == keys.server_public.decode()
    assert keys.client_secret.decode() not in json.dumps(info)
    netns = client._backend.runtime.kernel_netns(container.id)
    server = keys.server_public
    stranger = zmq.utils.z85.encode(secrets.token_bytes(32))
    assert _kernel_info_reply(netns, server, record.kernel_key, keys.client_secret)
    assert not _kernel_info_reply(netns, server, record.kernel_key, stranger)
    assert not _kernel_info_reply(netns, server, record.kernel_key, None)
    client.containers.delete(container.id)


def test_an_unknown_runtime_is_a_bad_request(make_client: Callable[..., Client]) -> None:
    client = make_client(runtime="kata-nonexistent")
    with pytest.raises(BadRequestError) as caught:
        client.containers.create(name="bad")
    assert caught.value.param == "runtime"
    assert client.containers.list().data == []


def test_out_of_memory_under_gvisor_is_reported_and_ends_the_sandbox(gvisor: Client) -> None:
    container = gvisor.containers.create(name="oom", memory_limit="512m")
    bomb = gvisor.containers.execute(container.id, "x = bytearray(2 * 1024**3)", timeout=60)
    assert bomb.status == "died"
    assert bomb.message is not None
    assert "ran out of memory (memory_limit 512m" in bomb.message
    # gVisor's kernel is one host process: the host's OOM killer ends the whole sandbox.
    assert gvisor.containers.retrieve(container.id).status == "terminated"
    gvisor.containers.delete(container.id)


def test_an_allowlist_sandbox_under_gvisor_reaches_only_its_list(
    gvisor: Client, make_client: Callable[..., Client], lab: Lab
) -> None:
    client = make_client(runtime="runsc", **lab.settings)
    container = client.containers.create(
        name="gvisor-allowlist",
        network_policy={"type": "allowlist", "allowed_domains": ["allowed.test"]},
    )
    prepare(client, container.id, lab)
    result = run(
        client,
        container.id,
        PRELUDE
        + f"""
print(json.dumps({{
    "allowed": fetch("http://allowed.test/")[0],
    "allowed_tls": fetch("https://allowed.test/")[0],
    "other": fetch("http://other.test/")[0],
    "direct": tcp("{lab.upstream_ip}", 80)[0],
}}))""",
    )
    assert result["allowed"] == 200
    assert result["allowed_tls"] == 200
    assert result["other"] == 403
    assert result["direct"] != "open"
    client.containers.delete(container.id)


def test_the_warm_pool_serves_gvisor_sandboxes(
    gvisor: Client, make_client: Callable[..., Client]
) -> None:
    pooled = make_client(runtime="runsc", pool_size=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [
        r for r in pooled._store.all(statuses=("ready",)) if r.project == POOL_PROJECT
    ]:
        time.sleep(0.2)
    started = time.monotonic()
    container = pooled.containers.create(name="claimed")
    out = pooled.containers.execute(container.id, "print(1)")
    assert out.stdout == "1\n"
    assert time.monotonic() - started < 5  # claimed warm, not booted (a cold start is ~3 s+)
    record = pooled._store.get(container.id)
    assert record is not None
    assert channel_of(pooled, record).transport == "tcp"
    pooled.containers.delete(container.id)


def test_the_cli_takes_the_runtime_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "jupyter-sandbox"
    result = subprocess.run(
        [str(cli), "--home", str(tmp_path), "--runtime", "kata", "create", "--name", "x"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Invalid runtime: 'kata'" in result.stderr


def test_a_kernel_that_exits_under_tcp_is_reported_and_replaced(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(kernel_channel="tcp")
    container = client.containers.create(name="exit")
    started = time.monotonic()
    gone = client.containers.execute(container.id, "import os; os._exit(3)", timeout=60)
    assert gone.status == "died"
    assert client.containers.execute(container.id, "print('new')").stdout == "new\n"
    assert time.monotonic() - started < 30  # no wait for a drop the dead kernel cannot send
    client.containers.delete(container.id)
