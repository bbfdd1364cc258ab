"""The cluster's PostgreSQL, run by root, against another local user: the server's own account.

As root, `cluster up` hands the data folder to PostgreSQL's account. Whoever runs as that
account (the server, or anything sharing the uid) controls the folder from then on: it can
swap any name in it for a link or a FIFO. Root must write nothing there by path, and read
only what cannot block or lead elsewhere."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_sandbox.backends import cluster_postgres
from jupyter_sandbox.backends.cluster_errors import ClusterError
from jupyter_sandbox.backends.cluster_postgres import ClusterPostgres, server_bin

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.geteuid() != 0, reason="root hands the folder to another account"),
    pytest.mark.skipif(server_bin() is None, reason="needs Debian's postgresql-15"),
]


def as_account(script: str) -> None:
    """Run `script` as the account PostgreSQL runs under (the other local user)."""
    import pwd

    account = pwd.getpwnam(cluster_postgres.SERVICE_ACCOUNT)
    subprocess.run(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
         "sh", "-c", script],
        check=True,
        timeout=30,
    )  # fmt: skip


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A root-owned file the attacker wants overwritten and given to itself."""
    path = Path("/etc") / f"jsbx-redteam-canary-{os.getpid()}"
    path.write_text("root's\n")
    os.chmod(path, 0o644)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[ClusterPostgres]:
    folder = tmp_path / "cluster"
    folder.mkdir(mode=0o700)
    db = ClusterPostgres(folder)
    yield db
    db.remove()


def test_a_link_planted_once_the_folder_is_handed_over_is_never_followed(
    postgres: ClusterPostgres, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment root gives the data folder away, the account swaps the password file for a
    link to a root-owned file: root neither writes the password through it nor chowns it."""
    planted: list[str] = []
    real_chown, real_fchown = os.chown, os.fchown

    def attack(folder: str) -> None:
        as_account(f"rm -f {folder}/pw; ln -s {canary} {folder}/pw")
        planted.append(folder)

    def chown(path: object, uid: int, gid: int, *args: object, **kwargs: object) -> None:
        real_chown(path, uid, gid, *args, **kwargs)  # type: ignore[arg-type]
        if uid != 0 and Path(str(path)).name.startswith("jsbx-pg-") and not planted:
            attack(str(path))

    def fchown(fd: int, uid: int, gid: int) -> None:
        real_fchown(fd, uid, gid)
        if uid != 0 and stat.S_ISDIR(os.fstat(fd).st_mode) and not planted:
            attack(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "chown", chown)
    monkeypatch.setattr(os, "fchown", fchown)
    try:
        postgres.start()  # initdb may fail on the swapped file: a ClusterError, nothing more
    except ClusterError:
        pass
    finally:
        monkeypatch.undo()
    assert planted, "the folder was never handed over (the probe did not run)"
    info = canary.stat()
    assert canary.read_text() == "root's\n"
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)
    assert not Path(planted[0], "pw").exists()  # the link is gone, its target stays


def test_the_folder_is_a_fresh_random_one_and_the_account_is_not_nobody(
    postgres: ClusterPostgres,
) -> None:
    postgres.start()
    record = json.loads((postgres.folder / "postgres.json").read_text())
    root = Path(record["root"])
    digest_prefix = root.name.rsplit("-", 1)[0]
    assert digest_prefix.startswith("jsbx-pg-")
    assert root.name != digest_prefix
    owner = root.stat().st_uid
    assert owner not in (0, 65534)
    state = postgres.state()
    assert state is not None
    assert state.alive


def test_a_fifo_for_the_pid_file_does_not_hang_status_or_down(postgres: ClusterPostgres) -> None:
    """The account replaces postmaster.pid with a FIFO: status and down as root go on."""
    postgres.start()
    root = Path(json.loads((postgres.folder / "postgres.json").read_text())["root"])
    pid_file = root / "data" / "postmaster.pid"
    as_account(f"mv {pid_file} {pid_file}.real; mkfifo {pid_file}")
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(postgres.state()), daemon=True)
    try:
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "root blocked on a FIFO the server's account made"
        assert result == [postgres.state()]  # the server is not taken for running
    finally:
        as_account(f"rm -f {pid_file}; mv {pid_file}.real {pid_file}")
    state = postgres.state()
    assert state is not None
    assert state.alive  # the real file again
