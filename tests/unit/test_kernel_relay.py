"""The kernel relay between a real (local) ipykernel and a real jupyter_client, without Docker.

The kernel here plays the sandbox: the code it runs publishes script, forges iopub messages
with the kernel's own key and sends junk, and the client (the Jupyter server's side) must
receive only the filtered, relay-signed messages.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from jupyter_sandbox.backends.kernel import KernelConnection
from jupyter_sandbox.jupyter.kernel_relay import KernelRelay


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelManager]:
    """A local ipykernel on ipc sockets in a private folder (it stands in for the sandbox)."""
    folder = tmp_path / "k"
    folder.mkdir(mode=0o700)
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(folder / "k"))
    km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


@pytest.fixture
def relay(kernel: KernelManager) -> Iterator[KernelRelay]:
    checker = kernel.client()
    checker.start_channels()
    checker.wait_for_ready(timeout=60)  # the kernel's sockets exist
    checker.stop_channels()
    relay = KernelRelay(os.geteuid(), max_message=2**20)
    relay.connect_kernel(kernel.get_connection_info())
    try:
        yield relay
    finally:
        relay.close()
    assert not relay.folder.exists()


def client(relay: KernelRelay) -> BlockingKernelClient:
    """A client of the relay, as the Jupyter server makes one."""
    info = relay.connection_info()
    kc = BlockingKernelClient()
    kc.load_connection_info({**info, "key": info["key"].encode()})
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return kc


def run(kc: BlockingKernelClient, code: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Execute; return (iopub messages of this run, execute_reply)."""
    seen: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=30, output_hook=seen.append)
    return seen, reply


ATTACK = """
from IPython.display import display, HTML, Javascript, Markdown
display(Javascript("window.__pwned = 1"))
display(HTML("<b>bold</b><img src=x onerror='window.__pwned=1'><script>window.__pwned=1</script>"))
display(Markdown("**md** <img src=x onerror=alert(1)>"))
display({"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "w"},
        raw=True)
k = get_ipython().kernel
k.session.send(k.iopub_socket, "display_data",
               {"data": {"text/html": "<script>alert(1)</script>forged"}, "metadata": {}},
               parent=k.get_parent())
k.session.send(k.iopub_socket, "comm_open",
               {"comm_id": "c", "target_name": "evil", "data": {}}, parent=k.get_parent())
k.session.send(k.iopub_socket, "made_up_type", {"x": 1}, parent=k.get_parent())
k.iopub_socket.send_multipart([b"<IDS|MSG>", b"bad-signature", b"{}", b"{}", b"{}", b"{}"])
print("done")
"""


def test_outputs_reach_the_client_filtered_and_resigned(relay: KernelRelay) -> None:
    kc = client(relay)
    try:
        seen, reply = run(kc, ATTACK)
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok"
    types = [m["msg_type"] for m in seen]
    assert "comm_open" not in types
    assert "made_up_type" not in types
    displays = [m["content"] for m in seen if m["msg_type"] == "display_data"]
    bundles = [d["data"] for d in displays]
    assert all("application/javascript" not in b for b in bundles)
    assert all("application/vnd.jupyter.widget-view+json" not in b for b in bundles)
    html = [b["text/html"] for b in bundles if "text/html" in b]
    assert "<b>bold</b><img>" in html
    assert "forged" in html  # the forged display arrives, cleaned
    assert all("script" not in h and "onerror" not in h for h in html)
    assert any("<strong>md</strong>" in h for h in html)
    assert [m["content"]["text"] for m in seen if m["msg_type"] == "stream"] == ["done\n"]
    assert relay.dropped >= 3  # comm_open, made_up_type, the badly signed one


def test_the_client_key_is_not_the_kernels(relay: KernelRelay, kernel: KernelManager) -> None:
    # The sandbox knows its kernel key; it must not be able to sign for the server's side.
    assert kernel.session.key != relay.key.encode()
    kc = client(relay)
    kc.session.key = kernel.session.key  # a client holding only the kernel's key
    try:
        kc.kernel_info()
        with pytest.raises(queue.Empty):
            kc.get_shell_msg(timeout=2)
    finally:
        kc.stop_channels()


def test_shell_replies_carry_only_safe_bundles(relay: KernelRelay) -> None:
    kc = client(relay)
    try:
        run(kc, "class X:\n    '''<img src=x onerror=alert(1)>doc'''\n")
        msg_id = kc.inspect("X", 1, detail_level=0)
        reply = kc.get_shell_msg(timeout=10)
        assert reply["parent_header"]["msg_id"] == msg_id
        info = kc.kernel_info(reply=True)
    finally:
        kc.stop_channels()
    data = reply["content"]["data"]
    assert set(data) <= {"text/plain", "text/html"}
    assert "onerror" not in data.get("text/html", "")
    assert all(link["url"].startswith("http") for link in info["content"]["help_links"])


def test_restart_reconnects_to_the_new_kernel(relay: KernelRelay, kernel: KernelManager) -> None:
    kc = client(relay)
    try:
        run(kc, "x = 1")
        kernel.restart_kernel(now=True)
        checker = kernel.client()
        checker.start_channels()
        checker.wait_for_ready(timeout=60)
        checker.stop_channels()
        relay.connect_kernel(kernel.get_connection_info())
        kc.wait_for_ready(timeout=60)
        seen, reply = run(kc, "print('x' in globals())")
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok"
    assert [m["content"]["text"] for m in seen if m["msg_type"] == "stream"] == ["False\n"]


def test_a_planted_path_is_refused(tmp_path: Path) -> None:
    relay = KernelRelay(os.geteuid())
    try:
        (tmp_path / "k-1").write_text("not a socket")
        with pytest.raises(RuntimeError, match="not a socket"):
            relay.connect_kernel({"ip": str(tmp_path / "k"), "key": "x"})
        with pytest.raises(FileNotFoundError):
            relay.connect_kernel({"ip": str(tmp_path / "missing"), "key": "x"})
        assert relay.is_alive
    finally:
        relay.close()
    assert not relay.is_alive


def test_a_forged_message_nested_too_deeply_is_dropped_and_the_relay_lives(
    relay: KernelRelay,
) -> None:
    """The kernel can sign content nested past the JSON parser's recursion limit; the relay
    drops it (RecursionError is no reason to stop) and keeps serving the kernel."""
    kc = client(relay)
    try:
        code = (
            "import json\n"
            "k = get_ipython().kernel; s = k.session\n"
            "parts = [json.dumps(s.msg_header('stream'), default=str).encode(),\n"
            "         json.dumps(k.get_parent()['header'], default=str).encode(), b'{}',\n"
            "         b'[' * 100000 + b']' * 100000]\n"
            "k.iopub_socket.send_multipart([b'<IDS|MSG>', s.sign(parts), *parts])\n"
            "print('still here')\n"
        )
        outputs, reply = run(kc, code)
        assert reply["content"]["status"] == "ok"
        texts = [str(o["content"].get("text", "")) for o in outputs]
        assert any("still here" in t for t in texts), outputs
        assert relay.dropped >= 1
        outputs, reply = run(kc, "print(6 * 7)")
        assert any("42" in str(o["content"].get("text", "")) for o in outputs), outputs
    finally:
        kc.stop_channels()


# -- through a dialer (the backend's connection object), as the provisioner dials -----------


def dialer(kernel: KernelManager) -> KernelConnection:
    """The backend's ipc connection object for the local kernel (never connected itself)."""
    info = kernel.get_connection_info()
    assert Path(info["ip"]).name == "k"
    return KernelConnection(Path(info["ip"]).parent, info["key"].decode(), os.geteuid())


@pytest.fixture
def dialled(kernel: KernelManager) -> Iterator[tuple[KernelRelay, KernelConnection]]:
    checker = kernel.client()
    checker.start_channels()
    checker.wait_for_ready(timeout=60)
    checker.stop_channels()
    relay = KernelRelay(os.geteuid(), max_message=2**20)
    connection = dialer(kernel)
    try:
        relay.connect_kernel(connection)
        yield relay, connection
    finally:
        relay.close()


def test_a_dialled_kernel_is_filtered_the_same(
    dialled: tuple[KernelRelay, KernelConnection], kernel: KernelManager
) -> None:
    relay, _ = dialled
    assert relay.heartbeat(5.0)
    kc = client(relay)
    try:
        seen, reply = run(kc, ATTACK)
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok"
    types = {m["msg_type"] for m in seen}
    assert types <= {"status", "execute_input", "display_data", "stream"}, types
    html = [m["content"]["data"].get("text/html") for m in seen if m["msg_type"] == "display_data"]
    assert "<b>bold</b><img>" in html
    assert all("script" not in h and "onerror" not in h for h in html if h)
    assert relay.dropped >= 3
    assert kernel.session.key != relay.key.encode()


def test_the_relay_owns_the_dialer_and_redials_a_restarted_kernel(
    dialled: tuple[KernelRelay, KernelConnection], kernel: KernelManager
) -> None:
    relay, _ = dialled
    kc = client(relay)
    try:
        run(kc, "x = 1")
        kernel.restart_kernel(now=True)
        checker = kernel.client()
        checker.start_channels()
        checker.wait_for_ready(timeout=60)
        checker.stop_channels()
        second = dialer(kernel)
        relay.connect_kernel(second)
        kc.wait_for_ready(timeout=60)
        seen, _ = run(kc, "print('x' in globals())")
    finally:
        kc.stop_channels()
    assert [m["content"]["text"] for m in seen if m["msg_type"] == "stream"] == ["False\n"]
    assert relay.heartbeat(5.0)
    relay.close()
    assert not relay.heartbeat(0.1)  # the relay closed its dialer with it


def test_a_dialer_refuses_a_planted_path(tmp_path: Path) -> None:
    from jupyter_sandbox._exceptions import APITimeoutError, InternalServerError

    relay = KernelRelay(os.geteuid())
    try:
        (tmp_path / "k-1").write_text("not a socket")
        with pytest.raises(InternalServerError, match="not a socket owned by the sandbox"):
            relay.connect_kernel(KernelConnection(tmp_path, "x", os.geteuid()))
        missing = tmp_path / "missing"
        missing.mkdir()
        with pytest.raises(APITimeoutError):
            relay.connect_kernel(KernelConnection(missing, "x", os.geteuid()))
        assert relay.is_alive
        assert not relay.heartbeat(0.1)
    finally:
        relay.close()
