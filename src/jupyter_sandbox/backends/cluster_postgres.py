"""The local cluster's shared store: a private PostgreSQL from the host's Debian
`postgresql-15` server binaries (`initdb`, `pg_ctl`), no system service, listening on one
loopback port with password (SCRAM) authentication.

The password is written once, to `<cluster folder>/pgpass` (0600, libpq's password-file
format; the store URL names that file as `passfile` and carries no password), and never
reaches a command line. The data folder is `<cluster folder>/postgres` for an ordinary user.
PostgreSQL refuses to run as root, so as root it runs as `nobody` with its data folder in the
temporary folder (nobody cannot enter root's 0700 folders); `postgres.json` records where.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox.backends.cluster_certs import write_private
from jupyter_sandbox.backends.cluster_errors import ClusterError

__all__ = ["ClusterPostgres", "PostgresState", "server_bin"]

USER = "jsbx"
DATABASE = "postgres"
_NOBODY = 65534
_TIMEOUT = 120


def server_bin() -> Path | None:
    """The folder with `initdb` and `pg_ctl` (Debian: /usr/lib/postgresql/N/bin), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass(frozen=True)
class PostgresState:
    """What `cluster status` shows of the database."""

    url: str
    """The store URL, without a password."""
    pid: int | None
    alive: bool


class ClusterPostgres:
    """The PostgreSQL of the cluster whose folder is `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._record = folder / "postgres.json"
        self.pgpass = folder / "pgpass"

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _root(self) -> Path:
        if self._record.exists():
            return Path(json.loads(self._record.read_text())["root"])
        if self._as_root:
            tag = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:12]
            return Path(tempfile.gettempdir()) / f"jsbx-pg-{tag}"
        return self.folder / "postgres"

    @property
    def port(self) -> int | None:
        """The loopback port, once started."""
        if not self._record.exists():
            return None
        return int(json.loads(self._record.read_text())["port"])

    def url(self) -> str:
        """The store URL (`store_url`): no password; libpq reads it from the file the URL's
        `passfile` names."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}?passfile={self.pgpass}"

    def env(self) -> dict[str, str]:
        """The variables that point `serve` and `Client()` at this database."""
        return {"JUPYTER_SANDBOX_STORE_URL": self.url()}

    def start(self) -> None:
        """Initialise the database (first time) and start the server; returns once it accepts
        connections.

        Raises:
            ClusterError: the server binaries are missing, or initdb or pg_ctl failed.
        """
        bin_dir = server_bin()
        if bin_dir is None:
            raise ClusterError(
                "cluster up needs Debian's PostgreSQL server for its shared store: "
                "apt-get install postgresql-15 (no service needs to run)"
            )
        root = self._root()
        if not self._record.exists():
            port = _free_port()
            password = secrets.token_urlsafe(24)
            root.mkdir(mode=0o700, parents=True, exist_ok=False)
            if self._as_root:
                os.chown(root, _NOBODY, _NOBODY)
            write_private(self.pgpass, f"127.0.0.1:{port}:*:{USER}:{password}\n".encode())
            write_private(self._record, json.dumps({"root": str(root), "port": port}).encode())
            initial = root / "pw"
            initial.write_text(password + "\n")  # read by initdb, then removed
            os.chmod(initial, 0o600)
            if self._as_root:
                os.chown(initial, _NOBODY, _NOBODY)
            try:
                self._run(bin_dir, "initdb", "-D", str(root / "data"), "-U", USER,
                          "--pwfile", str(initial), "--auth=scram-sha-256", "--encoding=UTF8",
                          "--locale=C.UTF-8")  # fmt: skip
            finally:
                initial.unlink(missing_ok=True)
        self._ctl(bin_dir, "start")

    def stop(self) -> bool:
        """Stop the server (fast: clients are disconnected); False if it was not running."""
        bin_dir = server_bin()
        if bin_dir is None or not self._record.exists() or self._pid() is None:
            return False
        self._ctl(bin_dir, "stop")
        return True

    def restart(self) -> None:
        """Stop and start: every open connection is dropped."""
        bin_dir = server_bin()
        if bin_dir is None:
            raise ClusterError("no PostgreSQL server binaries (postgresql-15)")
        self._ctl(bin_dir, "restart")

    def remove(self) -> list[str]:
        """Stop the server and delete its data and files; what was removed."""
        removed = []
        if self.stop():
            removed.append(f"postgres on 127.0.0.1:{self.port}")
        root = self._root()
        if root.exists():
            shutil.rmtree(root)
            removed.append(f"folder {root}")
        for path in (self._record, self.pgpass):
            path.unlink(missing_ok=True)
        return removed

    def state(self) -> PostgresState | None:
        """The database's URL and process, or None if the cluster has none."""
        if not self._record.exists():
            return None
        pid = self._pid()
        return PostgresState(url=self.url(), pid=pid, alive=pid is not None)

    def _pid(self) -> int | None:
        """The postmaster's pid if it runs."""
        try:
            pid = int((self._root() / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def _ctl(self, bin_dir: Path, action: str) -> None:
        root = self._root()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k '' -c max_connections=200"
        self._run(bin_dir, "pg_ctl", action, "-D", str(root / "data"), "-w", "-t", "60",
                  "-m", "fast", "-l", str(root / "log"), "-o", options)  # fmt: skip

    def _run(self, bin_dir: Path, tool: str, *args: str) -> None:
        as_user = (
            ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
            if self._as_root
            else []
        )
        try:
            subprocess.run(
                [*as_user, str(bin_dir / tool), *args],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
                cwd=self._root(),
                timeout=_TIMEOUT,
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"PostgreSQL {tool} {args[0]} failed: {exc.stderr.strip()}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"PostgreSQL {tool} did not finish in {_TIMEOUT} s") from exc


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
