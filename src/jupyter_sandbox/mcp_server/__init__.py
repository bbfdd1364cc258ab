"""`jupyter-sandbox mcp`: the sandboxes as Model Context Protocol tools, on the official `mcp`
SDK (`MCPServer`), over stdio (default) or streamable HTTP.

Tools: `create_sandbox`, `execute_code` (outputs as text, images as MCP image content, an
exception as a tool error carrying its traceback), `run_shell`, `upload_file`, `list_files`,
`download_file`, `delete_sandbox`. Sandboxes made through a session are deleted when the
session ends (stdio: when the client closes the pipe; HTTP: when the server stops, and each
one also has idle expiry) unless created with `keep=True`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal, cast

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent

from jupyter_sandbox._exceptions import APIError, NotFoundError
from jupyter_sandbox._version import __version__
from jupyter_sandbox.client import Client
from jupyter_sandbox.code_interpreter.outputs import to_outputs
from jupyter_sandbox.code_interpreter.shell_commands import run_commands
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container_file import ContainerFile
from jupyter_sandbox.types.execution import Execution

__all__ = ["build_server", "serve"]

logger = logging.getLogger(__name__)

DOWNLOAD_LIMIT = 10 * 2**20
IDLE_MINUTES = 20
INSTRUCTIONS = (
    "Hardened local sandboxes running a Python (Jupyter) kernel. Create one with "
    "create_sandbox, run code with execute_code (state persists between calls), run shell "
    "commands with run_shell; files live in /mnt/data. Sandboxes you create are deleted when "
    "this session ends unless created with keep=true."
)


class Sandboxes:
    """The client, and which sandboxes each session made (to delete when it ends)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._made: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def remember(self, session: str, container_id: str) -> None:
        """`container_id` goes when `session` ends."""
        with self._lock:
            self._made.setdefault(session, set()).add(container_id)

    def forget(self, container_id: str) -> None:
        """It was deleted already."""
        with self._lock:
            for ids in self._made.values():
                ids.discard(container_id)

    def end(self, session: str | None = None) -> list[str]:
        """Delete what `session` (None: every session) made; return the ids deleted."""
        with self._lock:
            sessions = list(self._made) if session is None else [session]
            doomed = [cid for s in sessions for cid in self._made.pop(s, set())]
        for container_id in doomed:
            with contextlib.suppress(NotFoundError):  # expired or deleted meanwhile
                self.client.containers.delete(container_id)
        return doomed


def _session(ctx: Context) -> str:
    """The connection's key: one stdio client, or one HTTP session."""
    return str(id(ctx.request_context.session))


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking Client call in a worker thread; our errors become tool errors."""
    try:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))
    except APIError as exc:
        raise ToolError(exc.message) from exc


def build_server(settings: Settings | None = None) -> MCPServer[Sandboxes]:
    """The MCP server; its lifespan owns one `Client` and deletes the session's sandboxes."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Sandboxes]) -> AsyncIterator[Sandboxes]:
        client = await anyio.to_thread.run_sync(partial(Client, settings=settings))
        sandboxes = Sandboxes(client)
        try:
            yield sandboxes
        finally:
            with anyio.CancelScope(shield=True):
                deleted = await anyio.to_thread.run_sync(sandboxes.end)
                if deleted:
                    logger.info("deleted %d sandbox(es) of ended sessions", len(deleted))
                await anyio.to_thread.run_sync(client.close)

    server: MCPServer[Sandboxes] = MCPServer(
        "jupyter-sandbox", instructions=INSTRUCTIONS, version=__version__, lifespan=lifespan
    )

    def state(ctx: Context) -> Sandboxes:
        return cast(Sandboxes, ctx.request_context.lifespan_context)

    @server.tool()
    async def create_sandbox(
        ctx: Context,
        name: str = "mcp",
        memory_limit: Literal["512m", "1g", "2g", "4g"] = "1g",
        allowed_domains: list[str] | None = None,
        keep: bool = False,
    ) -> dict[str, Any]:
        """Start a sandbox (a Python kernel in a hardened container) and return its id.

        allowed_domains: hosts it may reach over HTTP(S) (default: no network at all).
        keep: keep it after this session ends (it still expires when idle for 20 minutes).
        """
        sandboxes = state(ctx)
        policy = (
            {"type": "allowlist", "allowed_domains": allowed_domains} if allowed_domains else None
        )
        container = await _call(
            sandboxes.client.containers.create,
            name=name,
            memory_limit=memory_limit,
            network_policy=policy,
            expires_after={"anchor": "last_active_at", "minutes": IDLE_MINUTES},
        )
        if not keep:
            sandboxes.remember(_session(ctx), container.id)
        return {"id": container.id, "status": container.status, "kept": keep}

    @server.tool()
    async def execute_code(
        ctx: Context, sandbox_id: str, code: str, timeout: float = 120.0
    ) -> CallToolResult:
        """Run Python code in the sandbox's kernel (variables persist between calls). Printed
        output and the last value come back as text, plots as images; an exception is an
        error result with its traceback."""
        execution = await _call(
            state(ctx).client.containers.execute, sandbox_id, code, timeout=timeout
        )
        return CallToolResult(
            content=list(_execution_content(execution)), is_error=execution.status != "ok"
        )

    @server.tool()
    async def run_shell(
        ctx: Context, sandbox_id: str, command: str, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Run a shell command (sh -c) in the sandbox, in /mnt/data; returns stdout, stderr
        and the exit code (null if it timed out)."""
        (result,) = await _call(
            run_commands,
            state(ctx).client,
            sandbox_id,
            [command],
            timeout_ms=int(timeout * 1000),
        )
        code = getattr(result.outcome, "exit_code", None)
        return {"stdout": result.stdout, "stderr": result.stderr, "exit_code": code}

    @server.tool()
    async def upload_file(
        ctx: Context,
        sandbox_id: str,
        path: str,
        text: str | None = None,
        base64_content: str | None = None,
    ) -> dict[str, Any]:
        """Write a file into the sandbox at `path` (under /mnt/data or /workspace), from
        `text` or from `base64_content`."""
        data = _upload_bytes(text, base64_content)
        name = path.rsplit("/", 1)[-1] or "file"
        created = await _call(
            state(ctx).client.containers.files.create, sandbox_id, file=(name, data), path=path
        )
        return {"id": created.id, "path": created.path, "bytes": created.bytes}

    @server.tool()
    async def list_files(ctx: Context, sandbox_id: str) -> list[dict[str, Any]]:
        """The sandbox's files (under /mnt/data and /workspace), with sizes."""
        files = await _call(_list, state(ctx).client, sandbox_id)
        return [{"id": f.id, "path": f.path, "bytes": f.bytes} for f in files]

    @server.tool()
    async def download_file(
        ctx: Context, sandbox_id: str, path: str
    ) -> list[TextContent | ImageContent]:
        """Read a file of the sandbox: text as text, images as images, else base64."""
        data, mime = await _call(_read, state(ctx).client, sandbox_id, path)
        return [_file_content(data, mime)]

    @server.tool()
    async def delete_sandbox(ctx: Context, sandbox_id: str) -> str:
        """Stop and remove a sandbox with its files."""
        sandboxes = state(ctx)
        await _call(sandboxes.client.containers.delete, sandbox_id)
        sandboxes.forget(sandbox_id)
        return f"deleted {sandbox_id}"

    return server


def _execution_content(execution: Execution) -> list[TextContent | ImageContent]:
    """An execution's outputs as MCP content: logs as text, images as images."""
    content: list[TextContent | ImageContent] = []
    for output in to_outputs(execution):
        if output.type == "logs":
            content.append(TextContent(type="text", text=output.logs))
        else:
            mime, _, data = output.url.removeprefix("data:").partition(";base64,")
            content.append(ImageContent(type="image", data=data, mime_type=mime))
    return content or [TextContent(type="text", text="(no output)")]


def _upload_bytes(text: str | None, base64_content: str | None) -> bytes:
    """The bytes `upload_file` was given: exactly one of text or base64."""
    if (text is None) == (base64_content is None):
        raise ToolError("give exactly one of text or base64_content")
    try:
        return text.encode() if text is not None else base64.b64decode(base64_content or "")
    except ValueError as exc:
        raise ToolError(f"base64_content is not base64: {exc}") from exc


def _file_content(data: bytes, mime: str) -> TextContent | ImageContent:
    """A downloaded file as MCP content: an image, text, or else base64 text."""
    if mime.startswith("image/"):
        encoded = base64.b64encode(data).decode()
        return ImageContent(type="image", data=encoded, mime_type=mime)
    try:
        return TextContent(type="text", text=data.decode())
    except UnicodeDecodeError:
        encoded = base64.b64encode(data).decode()
        return TextContent(type="text", text=f"base64:{encoded}")


_IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                   ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip


def _list(client: Client, sandbox_id: str) -> list[ContainerFile]:
    """Every file of the sandbox (all pages)."""
    return list(client.containers.files.list(sandbox_id, limit=100))


def _read(client: Client, sandbox_id: str, path: str) -> tuple[bytes, str]:
    """A container file's bytes (at most DOWNLOAD_LIMIT) and its guessed type."""
    files = client.containers.files.list(sandbox_id, limit=100)  # pages on as it iterates
    found = next((f for f in files if f.path == path), None)
    if found is None:
        raise NotFoundError(f"No file {path!r} in {sandbox_id}", param="path")
    if found.bytes > DOWNLOAD_LIMIT:
        raise APIError(f"{path} is {found.bytes} bytes; the limit here is {DOWNLOAD_LIMIT}")
    content = client.containers.files.content.retrieve(found.id, container_id=sandbox_id)
    try:
        data = content.read(DOWNLOAD_LIMIT + 1)
    finally:
        content.close()
    if len(data) > DOWNLOAD_LIMIT:  # it grew since it was listed
        raise APIError(f"{path} is over {DOWNLOAD_LIMIT} bytes, the limit here")
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return data, _IMAGE_SUFFIXES.get(suffix, "application/octet-stream")


def serve(
    settings: Settings | None = None,
    *,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Run until the client leaves (stdio) or until interrupted (HTTP)."""
    server = build_server(settings)
    if http:
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
