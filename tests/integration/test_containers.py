"""Sandboxes on the real engine: create, execute, list, delete; state, errors, hardening."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_sandbox import (
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
)
from jupyter_sandbox.types.execution import DisplayDataOutput, ErrorOutput, ExecuteResultOutput

pytestmark = pytest.mark.docker


def docker_inspect(container_id: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker", "inspect", f"jsbx-{container_id}"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def test_create_execute_list_delete(client: Client) -> None:
    container = client.containers.create(name="data-processing", memory_limit="2g")
    assert container.id.startswith("cntr_")
    assert (container.status, container.name, container.memory_limit) == (
        "ready",
        "data-processing",
        "2g",
    )
    assert container.expires_after.minutes == 20
    assert container.network_policy == {"type": "disabled"}

    execution = client.containers.execute(
        container.id, "import numpy as np; print(np.arange(3).sum())", timeout=30
    )
    assert (execution.status, execution.stdout) == ("ok", "3\n")

    client.containers.execute(container.id, "x = 41")
    answer = client.containers.execute(container.id, "x + 1")
    assert isinstance(answer.result, ExecuteResultOutput)
    assert answer.result.data["text/plain"] == "42"

    assert [c.id for c in client.containers.list()] == [container.id]
    assert client.containers.retrieve(container.id).status == "ready"

    deleted = client.containers.delete(container.id)
    assert (deleted.id, deleted.deleted) == (container.id, True)
    with pytest.raises(NotFoundError):
        client.containers.retrieve(container.id)
    assert list(client.containers.list()) == []
    probe = subprocess.run(
        ["docker", "inspect", f"jsbx-{container.id}"], capture_output=True, check=False
    )
    assert probe.returncode != 0


def test_outputs_arrive_in_order_with_rich_data(client: Client) -> None:
    container = client.containers.create(name="outputs")
    try:
        seen: list[str] = []
        code = (
            "import sys, matplotlib.pyplot as plt\n"
            "print('out'); print('err', file=sys.stderr)\n"
            "from IPython.display import HTML, display\n"
            "display(HTML('<b>hi</b>'))\n"
            "plt.plot([1, 3, 2]); plt.show()\n"
            "'last'"
        )
        execution = client.containers.execute(
            container.id, code, on_output=lambda o: seen.append(o.type)
        )
        assert execution.status == "ok", execution.outputs
        kinds = [o.type for o in execution.outputs]
        assert kinds == ["stream", "stream", "display_data", "display_data", "execute_result"]
        assert seen == kinds
        assert (execution.stdout, execution.stderr) == ("out\n", "err\n")
        html, plot = execution.outputs[2], execution.outputs[3]
        assert isinstance(html, DisplayDataOutput)
        assert html.data["text/html"] == "<b>hi</b>"
        assert isinstance(plot, DisplayDataOutput)
        assert plot.data["image/png"].startswith("iVBOR")
        assert execution.execution_count == 1
    finally:
        client.containers.delete(container.id)


def test_error_is_data_with_a_traceback(client: Client) -> None:
    container = client.containers.create(name="errors")
    try:
        execution = client.containers.execute(container.id, "1 / 0")
        assert execution.status == "error"
        assert isinstance(execution.error, ErrorOutput)
        assert execution.error.ename == "ZeroDivisionError"
        plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(execution.error.traceback))
        assert "1 / 0" in plain
        assert (
            client.containers.execute(container.id, "print('still here')").stdout == "still here\n"
        )
    finally:
        client.containers.delete(container.id)


def test_timeout_interrupts_and_keeps_state(client: Client) -> None:
    container = client.containers.create(name="timeout")
    try:
        client.containers.execute(container.id, "kept = 'yes'")
        execution = client.containers.execute(container.id, "while True: pass", timeout=1)
        assert execution.status == "timeout"
        assert "interrupted" in (execution.message or "")
        assert client.containers.execute(container.id, "print(kept)").stdout == "yes\n"
    finally:
        client.containers.delete(container.id)


def test_timeout_ignoring_sigint_restarts_the_kernel(client: Client) -> None:
    container = client.containers.create(name="stubborn")
    try:
        client.containers.execute(container.id, "lost = 1")
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)"
        execution = client.containers.execute(container.id, code, timeout=1)
        assert execution.status == "timeout"
        assert "restarted" in (execution.message or "")
        after = client.containers.execute(container.id, "print('lost' in dir())")
        assert after.stdout == "False\n"
    finally:
        client.containers.delete(container.id)


def test_out_of_memory_is_reported_as_died(client: Client) -> None:
    container = client.containers.create(name="oom", memory_limit="512m")
    try:
        execution = client.containers.execute(
            container.id,
            "blocks = []\nwhile True: blocks.append(bytearray(64 * 2**20))",
            timeout=60,
        )
        assert execution.status == "died", execution
        assert "out of memory" in (execution.message or "")
        assert "512m" in (execution.message or "")
        assert client.containers.execute(container.id, "print(2 + 2)").stdout == "4\n"
    finally:
        client.containers.delete(container.id)


def test_output_is_bounded(home: Path, test_label: str) -> None:
    with Client(
        home=home, extra_labels={"org.jupyter-sandbox.test": test_label}, output_limit_bytes=10_000
    ) as small:
        container = small.containers.create(name="flood")
        try:
            execution = small.containers.execute(container.id, "for i in range(20000): print(i)")
            assert execution.truncated
            assert "[output truncated at 10000 bytes]" in execution.stderr
            assert len(execution.stdout) <= 10_000
        finally:
            small.containers.delete(container.id)


def test_sandbox_is_hardened(client: Client) -> None:
    container = client.containers.create(name="hardened", memory_limit="1g")
    try:
        info = docker_inspect(container.id)
        host = info["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert not host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["ReadonlyRootfs"] is True
        assert host["Privileged"] is False
        assert host["Memory"] == host["MemorySwap"] == 2**30
        assert host["PidsLimit"] == 256
        assert host["NetworkMode"] == "none"
        assert host["LogConfig"] == {
            "Type": "local",
            "Config": {"max-size": "512k", "max-file": "1", "compress": "false"},
        }
        assert host["RestartPolicy"]["Name"] in ("", "no")
        assert host["PortBindings"] in (None, {})
        labels = info["Config"]["Labels"]
        assert labels["org.jupyter-sandbox.managed"] == "true"
        assert labels["org.jupyter-sandbox.container-id"] == container.id
        assert info["Config"]["User"] == "1000:1000"

        probe = client.containers.execute(
            container.id,
            "import os\n"
            "lines = open('/proc/self/status').read().splitlines()\n"
            "status = dict(l.split(':\\t', 1) for l in lines if ':\\t' in l)\n"
            "fields = ('CapEff', 'NoNewPrivs', 'Seccomp')\n"
            "print(os.getuid(), *(status[f].strip() for f in fields))\n"
            "print(sorted(os.listdir('/sys/class/net')))\n"
            "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n",
        )
        assert probe.stdout.splitlines() == ["1000 0000000000000000 1 2", "['lo']", "30"]
    finally:
        client.containers.delete(container.id)


def test_hmac_key_is_not_visible_on_the_host(client: Client) -> None:
    container = client.containers.create(name="secret")
    try:
        key = client._store.get(container.id).kernel_key  # type: ignore[union-attr]
        assert key not in json.dumps(docker_inspect(container.id))
        assert (
            key
            not in subprocess.run(
                ["ps", "auxww"], capture_output=True, text=True, check=True
            ).stdout
        )
    finally:
        client.containers.delete(container.id)


def test_unknown_ids_and_bad_input(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.containers.retrieve("cntr_doesnotexist")
    assert caught.value.param == "container_id"
    with pytest.raises(NotFoundError):
        client.containers.execute("cntr_doesnotexist", "1")
    with pytest.raises(NotFoundError):
        client.containers.delete("cntr_doesnotexist")
    with pytest.raises(BadRequestError) as bad:
        client.containers.create(name="x", memory_limit="3g")
    assert bad.value.param == "memory_limit"
    with pytest.raises(BadRequestError) as bad:
        client.containers.create(name="x", lifetime_seconds=90_000)
    assert bad.value.param == "lifetime_seconds"
    assert list(client.containers.list()) == []


def test_missing_image_says_how_to_build_it(home: Path, test_label: str) -> None:
    with Client(
        home=home,
        extra_labels={"org.jupyter-sandbox.test": test_label},
        image="jupyter-sandbox-kernel:missing",
    ) as c:
        with pytest.raises(NotFoundError, match="jupyter-sandbox image build"):
            c.containers.create(name="no-image")
        [record] = c._store.all()
        assert record.status == "failed"
        assert record.deleted  # like the hosted API: the caller got an error, nothing to list
        assert list(c.containers.list()) == []
    from tests.conftest import labelled_objects

    assert labelled_objects(f"org.jupyter-sandbox.test={test_label}") == {}


def test_reconcile_hides_failed_records_an_older_version_left_visible(client: Client) -> None:
    container = client.containers.create(name="soon-failed")
    client.containers.delete(container.id)
    client._store.update(container.id, status="failed", deleted=False)  # as before issue 17
    assert [c.id for c in client.containers.list()] == [container.id]
    assert container.id in client.reconcile().marked
    assert list(client.containers.list()) == []
    record = client._store.get(container.id)
    assert record is not None
    assert (record.status, record.deleted) == ("failed", True)


def test_list_pages_in_both_orders(client: Client) -> None:
    ids = [client.containers.create(name=f"page-{i}").id for i in range(3)]
    try:
        first = client.containers.list(limit=2, order="asc")
        assert [c.id for c in first.data] == ids[:2]
        assert first.has_more
        assert [c.id for c in first] == ids
        assert [c.id for c in client.containers.list(limit=1)] == ids[::-1]
        assert [c.id for c in client.containers.list(name="page-1")] == [ids[1]]
    finally:
        for container_id in ids:
            client.containers.delete(container_id)


def test_executing_in_a_deleted_or_expired_container_fails_clearly(client: Client) -> None:
    container = client.containers.create(name="short")
    client._store.update(container.id, last_active_at=0.0)
    assert container.id in client._expiry.sweep(force=True)
    assert client.containers.retrieve(container.id).status == "expired"
    with pytest.raises(ConflictError, match="expired"):
        client.containers.execute(container.id, "1")


def test_a_kernel_that_dies_while_starting_fails_at_once_with_its_log(
    make_client: Callable[..., Client],
) -> None:
    patient = make_client(start_timeout=300)
    container = patient.containers.create(name="breaks-its-kernel")
    try:
        # An IPython startup file that ends every new kernel before it can answer.
        patient.containers.execute(
            container.id,
            "import pathlib\n"
            "p = pathlib.Path('/tmp/.ipython/profile_default/startup')\n"
            "p.mkdir(parents=True, exist_ok=True)\n"
            "(p / '00-exit.py').write_text("
            "'import os\\nos._exit(3)\\n')",
        )
        started = time.monotonic()
        with pytest.raises(InternalServerError, match="exited while starting") as failure:
            patient.containers.restart(container.id)
        waited = time.monotonic() - started
        log = str(failure.value).partition("its log:")[2]
        assert "sandbox-init: kernel started" in log
        assert "sandbox-init: kernel exited with status 3" in log
        assert waited < 60, f"waited {waited:.0f} s of the 300 s start timeout"
    finally:
        patient.containers.delete(container.id)
