"""The local cluster's shared store: a private PostgreSQL from the host's Debian
`postgresql-15` server binaries (`initdb`, `pg_ctl`), no system service, listening on one
loopback port with password (SCRAM) authentication.

The password is written once, to `<cluster folder>/pgpass` (0600, libpq's password-file
format; the store URL names that file as `passfile` and carries no password), and never
reaches a command line. The data folder is `<cluster folder>/postgres` for an ordinary user.
PostgreSQL refuses to run as root, so as root it runs as the `postgres` system account (made by
Debian's postgresql-common; never `nobody`, which other services share and which would then
own the database and its kernel keys), with its data folder a fresh random one in the
temporary folder (that account cannot enter root's 0700 folders); `postgres.json` records
where. Root writes nothing by path in a folder that account owns: the initial password file is
made before the folder is handed over, and removed through the folder's descriptor.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox.backends.cluster_certs import write_private
from jupyter_sandbox.backends.cluster_errors import ClusterError

__all__ = ["ClusterPostgres", "PostgresState", "server_bin"]

USER = "jsbx"
DATABASE = "postgres"
SERVICE_ACCOUNT = "postgres"
"""Who the server runs as when `cluster up` runs as root."""
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
        return self.folder / "postgres"

    def _new_root(self) -> Path:
        """A new data folder, 0700, ours: as root, a fresh random name in the temporary
        folder (never one another local user could guess and make first)."""
        if self._as_root:
            tag = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:12]
            return Path(tempfile.mkdtemp(prefix=f"jsbx-pg-{tag}-"))
        root = self.folder / "postgres"
        root.mkdir(mode=0o700, parents=True, exist_ok=False)
        return root

    @property
    def _account(self) -> tuple[int, int]:
        """The uid and gid the server runs as, when we are root."""
        try:
            entry = pwd.getpwnam(SERVICE_ACCOUNT)
        except KeyError:
            raise ClusterError(
                f"as root, cluster up runs PostgreSQL as the {SERVICE_ACCOUNT!r} system account, "
                "which this host lacks: apt-get install postgresql-15 makes it"
            ) from None
        if entry.pw_uid == 0:
            raise ClusterError(f"the {SERVICE_ACCOUNT!r} account is root's uid: refused")
        return entry.pw_uid, entry.pw_gid

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
        account = self._account if self._as_root else None
        if not self._record.exists():
            port = _free_port()
            password = secrets.token_urlsafe(24)
            root = self._new_root()
            folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                # The password file first, while the folder is still ours alone ...
                initial = os.open(
                    "pw",
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o600,
                    dir_fd=folder,
                )
                with os.fdopen(initial, "w") as file:
                    file.write(password + "\n")  # read by initdb, then removed
                    if account is not None:
                        os.fchown(file.fileno(), *account)
                # ... then the folder goes to the service account: nothing by path after.
                if account is not None:
                    os.fchown(folder, *account)
                write_private(self.pgpass, f"127.0.0.1:{port}:*:{USER}:{password}\n".encode())
                write_private(self._record, json.dumps({"root": str(root), "port": port}).encode())
                try:
                    self._run(bin_dir, "initdb", "-D", str(root / "data"), "-U", USER,
                              "--pwfile", str(root / "pw"), "--auth=scram-sha-256",
                              "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink("pw", dir_fd=folder)  # whatever is there now: never followed
            finally:
                os.close(folder)
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
        root = self._root() if self._record.exists() else None
        if root is not None and root.is_symlink():  # the service account swapped it: not ours
            root.unlink()
        elif root is not None and root.exists():
            shutil.rmtree(root)  # never follows a link inside
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
        path = self._root() / "data" / "postmaster.pid"
        try:
            # The server's account writes this file: no link, no FIFO, a few bytes only.
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    return None
                pid = int(os.read(descriptor, 64).split()[0])
            finally:
                os.close(descriptor)
            if pid <= 0:
                return None
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
        as_user = []
        if self._as_root:
            uid, gid = self._account
            as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
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
