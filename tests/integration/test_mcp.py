"""`jupyter-sandbox mcp` as a real subprocess, driven over stdio by the `mcp` SDK's own client."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

from jupyter_sandbox import Client as SandboxClient
from jupyter_sandbox.settings import Settings
from tests.conftest import TEST_LABEL, remove_labelled, wait_until
from tests.integration.server_harness import free_port, server_env

pytestmark = pytest.mark.docker

TOOLS = {"create_sandbox", "execute_code", "run_shell", "upload_file", "list_files",
         "download_file", "delete_sandbox"}  # fmt: skip
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _live(home: Path) -> list[str]:
    with SandboxClient(home=home) as client:
        return [c.id for c in client.containers.list(limit=100)]


def test_stdio_session(tmp_path: Path, test_label: str) -> None:
    home = tmp_path / "home"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "from jupyter_sandbox.cli import main; main()", "mcp"],
        env=server_env(home, test_label),
    )
    seen: dict[str, Any] = {}

    async def session() -> None:
        async with Client(params) as client:
            tools = await client.list_tools()
            seen["tools"] = {tool.name for tool in tools.tools}
            made = await client.call_tool("create_sandbox", {"name": "mcp-test"})
            sandbox = made.structured_content["id"]  # type: ignore[index]
            kept = await client.call_tool("create_sandbox", {"name": "kept", "keep": True})
            seen["kept"] = kept.structured_content["id"]  # type: ignore[index]

            answer = await client.call_tool(
                "execute_code", {"sandbox_id": sandbox, "code": "print(6*7)"}
            )
            seen["answer"] = (answer.is_error, _text(answer))

            shown = await client.call_tool(
                "execute_code",
                {"sandbox_id": sandbox, "code": "from IPython.display import Image, display\n"
                 f"import base64\ndisplay(Image(data=base64.b64decode('{PIXEL}')))"},
            )  # fmt: skip
            seen["image"] = [(b.type, getattr(b, "mime_type", None)) for b in shown.content]

            failing = await client.call_tool(
                "execute_code", {"sandbox_id": sandbox, "code": "x = 1\n1 / 0"}
            )
            seen["error"] = (failing.is_error, _text(failing))

            shell = await client.call_tool(
                "run_shell", {"sandbox_id": sandbox, "command": "echo hi; exit 4"}
            )
            seen["shell"] = shell.structured_content

            await client.call_tool(
                "upload_file",
                {"sandbox_id": sandbox, "path": "/mnt/data/in.txt", "text": "hello file"},
            )
            await client.call_tool(
                "upload_file",
                {"sandbox_id": sandbox, "path": "/mnt/data/p.png", "base64_content": PIXEL},
            )
            listed = await client.call_tool("list_files", {"sandbox_id": sandbox})
            seen["files"] = sorted(f["path"] for f in listed.structured_content["result"])  # type: ignore[index]
            text = await client.call_tool(
                "download_file", {"sandbox_id": sandbox, "path": "/mnt/data/in.txt"}
            )
            seen["download"] = _text(text)
            picture = await client.call_tool(
                "download_file", {"sandbox_id": sandbox, "path": "/mnt/data/p.png"}
            )
            seen["picture"] = picture.content[0]
            missing = await client.call_tool(
                "execute_code", {"sandbox_id": "cntr_nope", "code": "1"}
            )
            seen["missing"] = (missing.is_error, _text(missing))
            seen["live_during"] = await anyio.to_thread.run_sync(_live, home)

    try:
        anyio.run(session)
        assert seen["tools"] == TOOLS
        assert seen["answer"] == (False, "42\n")
        assert seen["image"] == [("image", "image/png")]
        is_error, traceback = seen["error"]
        assert is_error
        assert "ZeroDivisionError" in traceback
        assert "1 / 0" in traceback
        assert seen["shell"] == {"stdout": "hi\n", "stderr": "", "exit_code": 4}
        assert seen["files"] == ["/mnt/data/in.txt", "/mnt/data/p.png"]
        assert seen["download"] == "hello file"
        assert seen["picture"].type == "image"
        assert base64.b64decode(seen["picture"].data) == base64.b64decode(PIXEL)
        assert seen["missing"][0]
        assert "cntr_nope" in seen["missing"][1]
        assert len(seen["live_during"]) == 2
        # the session ended: its sandbox is gone, the kept one stays
        assert _live(home) == [seen["kept"]]
    finally:
        with SandboxClient(home=home) as client:
            for container in client.containers.list(limit=100):
                client.containers.delete(container.id)
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        shutil.rmtree(Settings(home=home).sockets_root, ignore_errors=True)
        assert not leaked, leaked


def test_streamable_http(tmp_path: Path, test_label: str) -> None:
    home = tmp_path / "home"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from jupyter_sandbox.cli import main; main()",
         "mcp", "--http", "--port", str(port)],
        env=server_env(home, test_label), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: dict[str, Any] = {}

    async def session() -> None:
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            seen["tools"] = {tool.name for tool in (await client.list_tools()).tools}
            made = await client.call_tool("create_sandbox", {})
            sandbox = made.structured_content["id"]  # type: ignore[index]
            answer = await client.call_tool(
                "execute_code", {"sandbox_id": sandbox, "code": "print(6*7)"}
            )
            seen["answer"] = _text(answer)

    try:

        def accepts() -> bool:  # the port accepts once uvicorn is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                return False
            return True

        wait_until(accepts, 60, interval=0.2, what="mcp --http to start")
        anyio.run(session)
        assert seen == {"tools": TOOLS, "answer": "42\n"}
        assert len(_live(home)) == 1
        process.send_signal(signal.SIGTERM)  # the server stops: its sessions' sandboxes go
        process.wait(60)
        assert _live(home) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
        with SandboxClient(home=home) as client:
            for container in client.containers.list(limit=100):
                client.containers.delete(container.id)
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        shutil.rmtree(Settings(home=home).sockets_root, ignore_errors=True)
        assert not leaked, leaked
