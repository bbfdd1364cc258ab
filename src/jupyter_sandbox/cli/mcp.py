"""`jupyter-sandbox mcp`: the sandboxes as Model Context Protocol tools."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from jupyter_sandbox.cli._common import _errors, _fail, _settings, app

__all__ = ["mcp"]


@app.command()
def mcp(
    ctx: typer.Context,
    http: Annotated[
        bool, typer.Option("--http", help="Streamable HTTP on --host/--port (path /mcp).")
    ] = False,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to bind with --http.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port with --http.")] = 8765,
) -> None:
    """Run an MCP server (stdio by default) with tools to create sandboxes, run code and shell
    commands, move files, and delete; a session's sandboxes go when it ends."""
    import ipaddress

    from jupyter_sandbox.mcp_server import serve

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if http and not loopback:
        # Fail closed: MCP over HTTP has no authentication here, and its tools run code.
        _fail(
            f"--host {host} is not a loopback address: the MCP HTTP transport has no "
            "authentication; bind to 127.0.0.1 and put an authenticating proxy in front",
            2,
        )

    # stdout is the protocol channel on stdio: every log line goes to stderr
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    with _errors():
        serve(_settings(ctx), http=http, host=host, port=port)
