"""`jupyter-sandbox serve`: the OpenAI-compatible HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jupyter_sandbox.cli._common import _console, _errors, _fail, _settings, app, shown

__all__ = ["serve"]


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; loopback unless behind a proxy.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            dir_okay=False,
            help="File of API keys, one `[project:]key` or `[project:]sha256:HEX` a line "
            "(also read: JUPYTER_SANDBOX_API_KEYS).",
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Accept this Host header name (repeatable; '*' for any). Default: the "
            "loopback names when bound to loopback, any otherwise.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    pool_size: Annotated[
        int | None,
        typer.Option(
            "--pool-size",
            min=0,
            max=100,
            help="Warm pool: sandboxes of the default configuration kept started, so such a "
            "create is a claim (also JUPYTER_SANDBOX_POOL_SIZE; default 0, off).",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible HTTP API (use the openai SDK with base_url=.../v1)."""
    from jupyter_sandbox.server import KeyRing
    from jupyter_sandbox.server import serve as run_server

    with _errors():
        settings = _settings(ctx)
        if pool_size is not None:
            settings = settings.model_copy(update={"pool_size": pool_size})
    try:
        keys = KeyRing.from_environment(api_key_file)
    except (OSError, ValueError) as exc:
        _fail(
            f"no usable API keys ({exc}); give --api-key-file or set JUPYTER_SANDBOX_API_KEYS",
            2,
        )
    allowed = None
    if allow_host:
        from jupyter_sandbox.server import default_allowed_hosts

        allowed = {*(default_allowed_hosts(host) or set()), *allow_host}
    _console(stderr=True).print(
        shown(
            f"serving {len(keys)} key(s) for project(s) {', '.join(keys.projects)} on "
            f"http://{host}:{port}/v1"
        ),
        soft_wrap=True,
    )
    with _errors():
        run_server(settings, keys, host=host, port=port, allowed_hosts=allowed, log_level=log_level)
