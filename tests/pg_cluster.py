"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, `initdb` and `pg_ctl` in
a temporary folder, listening on a free loopback port, run as an unprivileged user (PostgreSQL
refuses root), no system service. Password authentication, as in production."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from uuid import uuid4

import psycopg

USER = "jsbx"


def server_bin() -> Path | None:
    """The folder with `initdb` and `pg_ctl` (Debian: /usr/lib/postgresql/N/bin), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """One cluster; `database()` gives each test a fresh database."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="jsbx-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.root, 65534, 65534)  # nobody:nogroup
            self._as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            os.chown(pwfile, 65534, 65534)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_user, str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            cwd=self.root,
            timeout=120,
        )

    def _ctl(self, action: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", "-m", "fast",
            "-l", str(self.root / "log"), "-o", options,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")

    def stop(self) -> None:
        """Stop the server (fast: clients are disconnected)."""
        self._ctl("stop")

    def restart(self) -> None:
        """Stop and start: every open connection is dropped."""
        self._ctl("restart")

    def url(self, dbname: str = "postgres") -> str:
        """A connection URL, password included."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
