"""`jupyter-sandbox serve`: the OpenAI-compatible HTTP server (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection

from jupyter_sandbox.server.app import create_app
from jupyter_sandbox.server.auth import KeyRing
from jupyter_sandbox.settings import Settings

__all__ = ["KeyRing", "create_app", "default_allowed_hosts", "serve"]


def default_allowed_hosts(host: str) -> Collection[str] | None:
    """The Host names a server bound to `host` accepts: loopback names for a loopback bind
    (against DNS rebinding), any for another address (put a proxy with its own checks there)."""
    if host == "localhost":
        return {"localhost", "127.0.0.1", "::1"}
    try:
        if ipaddress.ip_address(host).is_loopback:
            return {"localhost", "127.0.0.1", "::1"}
    except ValueError:
        pass
    return None


def serve(
    settings: Settings,
    keys: KeyRing,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allowed_hosts: Collection[str] | None = None,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(
        settings,
        keys,
        allowed_hosts=allowed_hosts if allowed_hosts is not None else default_allowed_hosts(host),
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # the app logs each request with its id, never its headers
        server_header=False,
        proxy_headers=False,
    )
