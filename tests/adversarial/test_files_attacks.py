"""The files API under attack: traversal, links planted and swapped by sandbox code while the
host reads and writes (a race repeated hundreds of times), archive bombs, oversized uploads."""

from __future__ import annotations

import hashlib
import io
import stat
import time
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError, NotFoundError, RequestTooLargeError
from tests.adversarial.conftest import (
    Sandboxes,
    is_gvisor,
    peak_rss_bytes,
    reset_peak_rss,
    run,
)

pytestmark = pytest.mark.docker

MiB = 2**20
HOST_FILES = ["/etc/passwd", "/etc/shadow", "/etc/hostname"]


def checksums(paths: list[Path]) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "absent"
        for p in paths
    }


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host folder holding a secret file: what an escape would read or overwrite."""
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "secret").write_bytes(b"HOST SECRET 5b0c")
    return folder


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/mnt/data/../../etc/passwd",
        "/mnt/data/./../../etc/shadow",
        "/etc/passwd",
        "/proc/self/environ",
        "/mnt/datax/evil",
        "/mnt/data/x\x00/../../etc/passwd",
        "/mnt/data/" + "a" * 4096,
        "/mnt/data/" + "/".join(["d"] * 600),
        "\\mnt\\data\\..\\..\\etc\\passwd",
        "/mnt/data",
    ],
    ids=lambda p: repr(p)[:40],
)
def test_traversal_uploads_are_refused(sandboxes: Sandboxes, canary: Path, path: str) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="paths").id
    watched = [Path(p) for p in HOST_FILES] + [canary / "secret"]
    before = checksums(watched)
    with pytest.raises(BadRequestError) as caught:
        client.containers.files.create(container_id, file=("x", b"pwned"), path=path)
    assert caught.value.param == "path"
    assert checksums(watched) == before
    assert run(client, container_id, "import os; print(os.listdir('/mnt/data'))") == "[]\n"


PLANT = """
import os
os.remove('/mnt/data/{name}')
os.symlink({target!r}, '/mnt/data/{name}')
"""


@pytest.mark.parametrize("target", ["/etc/shadow", "/proc/self/environ", "/proc/1/environ", "HOST"])
def test_download_through_a_planted_link_is_refused(
    sandboxes: Sandboxes, canary: Path, target: str
) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="links").id
    recorded = client.containers.files.create(container_id, file=("f", b"SAFE"), path="/mnt/data/f")
    target = str(canary / "secret") if target == "HOST" else target
    run(client, container_id, PLANT.format(name="f", target=target))
    with pytest.raises((BadRequestError, NotFoundError)):
        client.containers.files.content.retrieve(container_id, recorded.id).read()
    with pytest.raises(BadRequestError):
        client.containers.files.create(container_id, file=("f", b"PWNED"), path="/mnt/data/f")
    assert (canary / "secret").read_bytes() == b"HOST SECRET 5b0c"
    assert [f.path for f in client.containers.files.list(container_id)] == []  # links aren't files


# Swap a file and a folder for links to the host canary, atomically (renameat2 EXCHANGE),
# as fast as possible, until killed.
SWAPPER = r"""
import ctypes, os, subprocess, sys
os.makedirs('/mnt/data/dir', exist_ok=True)
open('/mnt/data/dir/f', 'w').write('SAFE')
open('/mnt/data/up', 'w').write('SAFE')
links = [('/mnt/data/.alt', sys.argv[1] + '/secret'), ('/mnt/data/.altdir', sys.argv[1]),
         ('/mnt/data/.altup', sys.argv[1] + '/secret')]
for alt, target in links:
    if not os.path.lexists(alt):
        os.symlink(target, alt)
libc = ctypes.CDLL(None, use_errno=True)
def exchange(a, b):
    libc.renameat2(-100, a.encode(), -100, b.encode(), 2)
open('/tmp/swapper-ready', 'w').close()
while True:
    exchange('/mnt/data/.alt', '/mnt/data/race')
    exchange('/mnt/data/.altdir', '/mnt/data/dir')
    exchange('/mnt/data/.altup', '/mnt/data/up')
"""
START_SWAPPER = """
import subprocess, sys, time, os
subprocess.Popen([sys.executable, '-c', {code!r}, {canary!r}], start_new_session=True)
while not os.path.exists('/tmp/swapper-ready'):
    time.sleep(0.01)
"""


def test_symlink_swap_race_never_reaches_the_host(sandboxes: Sandboxes, canary: Path) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="race").id
    race = client.containers.files.create(container_id, file=("r", b"SAFE"), path="/mnt/data/race")
    nested = client.containers.files.create(
        container_id, file=("f", b"SAFE"), path="/mnt/data/dir/f"
    )
    before = sorted(p.name for p in canary.iterdir())
    run(client, container_id, START_SWAPPER.format(code=SWAPPER, canary=str(canary)))
    outcomes: dict[str, int] = {}
    attempts = 300 if is_gvisor() else 600  # the swapper runs slower under gVisor
    deadline = time.monotonic() + 60
    for attempt in range(attempts):
        for name, recorded in (("file", race), ("folder", nested)):
            try:
                data = client.containers.files.content.retrieve(container_id, recorded.id).read()
                outcome = f"{name}: {data.decode(errors='replace')}"
            except (BadRequestError, NotFoundError) as exc:
                outcome = f"{name}: {type(exc).__name__}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for path in ("/mnt/data/up", f"/mnt/data/dir/up-{attempt % 5}"):
            try:
                client.containers.files.create(container_id, file=("u", b"PWNED"), path=path)
                outcomes["upload ok"] = outcomes.get("upload ok", 0) + 1
            except (BadRequestError, NotFoundError):
                outcomes["upload refused"] = outcomes.get("upload refused", 0) + 1
        assert time.monotonic() < deadline
    assert (canary / "secret").read_bytes() == b"HOST SECRET 5b0c"
    assert sorted(p.name for p in canary.iterdir()) == before
    assert not [o for o in outcomes if "HOST SECRET" in o], outcomes
    downloads = sum(n for o, n in outcomes.items() if not o.startswith("upload"))
    assert downloads >= attempts * 5 // 3
    # The race really ran: for both, the swapped-in link and the real file were seen.
    for name in ("file", "folder"):
        assert outcomes.get(f"{name}: SAFE", 0) > 0, outcomes
        assert outcomes.get(f"{name}: SAFE", 0) < 2 * attempts, outcomes


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return _with(info, target)


def _device(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFCHR | 0o666) << 16
    info.create_system = 3
    return info


def _with(info: zipfile.ZipInfo, _: str) -> zipfile.ZipInfo:
    return info


SKILL_MD = b"---\nname: evil\ndescription: d\n---\n"


def _zero_stream_zip(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("evil/SKILL.md", SKILL_MD)
        with archive.open("evil/zeros.bin", "w", force_zip64=True) as member:
            block = bytes(MiB)
            for _ in range(size // MiB):
                member.write(block)
    return buffer.getvalue()


BAD_ARCHIVES = {
    "dotdot": [("evil/SKILL.md", SKILL_MD), ("evil/../../../etc/cron.d/x", b"* * * * * root x")],
    "absolute": [("evil/SKILL.md", SKILL_MD), ("/etc/cron.d/x", b"x")],
    "symlink": [("evil/SKILL.md", SKILL_MD), (_link("evil/link", "/etc/shadow"), b"/etc/shadow")],
    "device": [("evil/SKILL.md", SKILL_MD), (_device("evil/null"), b"")],
    "backslash": [("evil/SKILL.md", SKILL_MD), ("evil\\..\\..\\x", b"x")],
    "many-entries": [("evil/SKILL.md", SKILL_MD)] + [(f"evil/{i}", b"") for i in range(1100)],
}


@pytest.mark.parametrize("kind", sorted(BAD_ARCHIVES))
def test_bad_skill_archives_are_rejected(sandboxes: Sandboxes, kind: str) -> None:
    client = sandboxes.client()
    blobs = client.settings.home / "blobs"
    with pytest.raises(BadRequestError):
        client.skills.create(files=("evil.zip", _zip(BAD_ARCHIVES[kind])))  # type: ignore[arg-type]
    assert not [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else True
    assert list(client.skills.list()) == []


def test_zip_bomb_is_rejected_with_bounded_memory(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    bomb = _zero_stream_zip(400 * MiB)  # ~400 KiB on the wire, 1000:1
    assert len(bomb) < 2 * MiB
    reset_peak_rss()
    before = peak_rss_bytes()
    started = time.monotonic()
    with pytest.raises(BadRequestError, match="size limit"):
        client.skills.create(files=("bomb.zip", bomb))
    # Bounded by the unpacked-size cap (read once, joined once), whatever the archive claims.
    assert peak_rss_bytes() - before < 2 * client.settings.skill_size_limit + 30 * MiB
    assert time.monotonic() - started < 10


class _Endless(io.RawIOBase):
    """An unseekable stream of zeros of unknown length, as a socket upload would be."""

    def __init__(self, size: int) -> None:
        self._left = size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._left)
        buffer[:count] = bytes(count)
        self._left -= count
        self.consumed += count
        return count


@pytest.mark.parametrize("where", ["files", "container-files"])
def test_oversized_upload_is_refused_while_streaming(sandboxes: Sandboxes, where: str) -> None:
    limit = 32 * MiB
    client = sandboxes.client(file_size_limit=limit)
    source = _Endless(400 * MiB)
    stream = io.BufferedReader(source)
    reset_peak_rss()
    before = peak_rss_bytes()
    upload: Callable[..., object]
    if where == "files":
        upload = partial(client.files.create, purpose="user_data")
    else:
        container_id = client.containers.create(name="big").id
        upload = partial(client.containers.files.create, container_id, path="/mnt/data/big")
    with pytest.raises(RequestTooLargeError):
        upload(file=stream)
    assert source.consumed <= limit + 16 * MiB  # stopped early, not read to the end
    assert peak_rss_bytes() - before < 100 * MiB
    blobs = client.settings.home / "blobs"
    assert not [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else True
    if where == "container-files":
        assert run(client, container_id, "import os; print(os.listdir('/mnt/data'))") == "[]\n"


def test_files_api_needs_a_client_of_the_same_project(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="tenant").id
    recorded = client.containers.files.create(container_id, file=("f", b"mine"), path="/mnt/data/f")
    other = client.for_project("other-tenant")
    with pytest.raises(NotFoundError):
        other.containers.files.content.retrieve(container_id, recorded.id)
    with pytest.raises(NotFoundError):
        other.containers.files.create(container_id, file=("f", b"x"), path="/mnt/data/g")
