"""Start a real Jupyter server (jupyter_server or jupyterlab) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen
from uuid import uuid4


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def jupyter_process(
    module: str, *, jupyter_path: Path, root: Path, log_path: Path, extra: list[str]
) -> Iterator[tuple[str, str]]:
    """Run `python -m <module>` until it answers `/api/status`; yield (base URL, token)."""
    port, token = free_port(), uuid4().hex
    env = dict(os.environ, JUPYTER_PATH=str(jupyter_path), JUPYTER_RUNTIME_DIR=str(log_path.parent))
    log = log_path.open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root}",
            *extra,
            "--allow-root",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError as exc:
                if isinstance(exc, HTTPError):
                    exc.close()
                if server.poll() is not None or time.monotonic() > deadline:
                    text = log_path.read_text()
                    raise RuntimeError(f"{module} did not start:\n{text}") from None
                time.sleep(0.2)
        yield base, token
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
