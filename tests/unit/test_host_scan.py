"""The host-side walk of a sandbox's folders: bounded descriptors, caps, truncation reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.host_scan import WINDOW, scan_roots, sweep_uploads

# Run in a child with RLIMIT_NOFILE=1024: one thread samples /proc/self/fd during the walk,
# another (a neighbour: another tenant's request in `serve`) keeps opening files.
_CHILD = r"""
import json, os, resource, sys, threading
from pathlib import Path
from jupyter_sandbox.backends.host_scan import scan_roots

resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
roots = {"/mnt/data": Path(sys.argv[1]), "/workspace": Path(sys.argv[2])}
baseline = len(os.listdir("/proc/self/fd"))
done = threading.Event()
peak = [0]
neighbour_errors = []

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))

def neighbour():
    while not done.is_set():
        try:
            with open(sys.argv[1] + "/../probe", "w"):
                pass
        except OSError as exc:
            neighbour_errors.append(exc.errno)

threads = [threading.Thread(target=sample), threading.Thread(target=neighbour)]
for thread in threads:
    thread.start()
scan = scan_roots(roots)
done.set()
for thread in threads:
    thread.join()
print(json.dumps({
    "paths": sorted(f.path for f in scan.files),
    "truncated": scan.truncated,
    "baseline": baseline,
    "peak": peak[0],
    "neighbour_errors": neighbour_errors,
}))
"""


def _tree(tmp_path: Path, *, siblings: int, depth: int) -> tuple[Path, Path, set[str]]:
    data, workspace = tmp_path / "data", tmp_path / "workspace"
    expected: set[str] = set()
    for index in range(siblings):
        folder = data / f"d{index}"
        folder.mkdir(parents=True)
        (folder / "f").write_bytes(b"x")
        expected.add(f"/mnt/data/d{index}/f")
    deep = workspace
    for level in range(depth):
        deep = deep / "n"
        deep.mkdir(parents=True)
        (deep / f"f{level}").write_bytes(b"y")
    expected |= {f"/workspace{'/n' * (level + 1)}/f{level}" for level in range(depth)}
    (data / "top.txt").write_bytes(b"z")
    expected.add("/mnt/data/top.txt")
    return data, workspace, expected


def test_wide_and_deep_trees_list_every_file_with_bounded_descriptors(tmp_path: Path) -> None:
    # 3,000 sibling folders and a 300-level tree (its paths near the 1,024-byte limit).
    data, workspace, expected = _tree(tmp_path, siblings=3000, depth=300)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), str(workspace)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(child.stdout)
    assert seen["truncated"] is None
    assert set(seen["paths"]) == expected  # 3,301 files, none missing
    assert seen["neighbour_errors"] == []  # no EMFILE next door
    # The walk's own descriptors: at most WINDOW folders plus one being read (and the
    # sampler's own listdir and the neighbour's file, both counted in the peak).
    assert seen["peak"] - seen["baseline"] <= WINDOW + 3, seen


def test_folders_count_toward_the_cap_and_truncation_is_reported(tmp_path: Path) -> None:
    data, workspace, _ = _tree(tmp_path, siblings=50, depth=0)
    roots = {"/mnt/data": data, "/workspace": workspace}
    full = scan_roots(roots)
    assert full.truncated is None
    assert len(full.files) == 51
    # 50 folders + 51 files = 101 entries: a cap of 60 stops the walk and says so.
    capped = scan_roots(roots, max_entries=60)
    assert capped.truncated == "more than 60 files and folders"
    assert len(capped.files) < 60
    by_bytes = scan_roots(roots, max_path_bytes=200)
    assert by_bytes.truncated == "more than 200 bytes of paths"


def test_a_folder_swapped_for_a_link_mid_walk_is_never_followed(tmp_path: Path) -> None:
    data, workspace = tmp_path / "data", tmp_path / "workspace"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    deep = data
    for _ in range(2 * WINDOW):  # deep enough that ancestors are closed and reopened
        deep = deep / "a"
    deep.mkdir(parents=True)
    (deep / "f").write_text("ok")
    (data / "link").symlink_to(outside)
    scan = scan_roots({"/mnt/data": data, "/workspace": workspace})
    assert [f.path for f in scan.files] == ["/mnt/data" + "/a" * (2 * WINDOW) + "/f"]


def test_upload_temporaries_are_removed_on_failure_and_swept_when_stale(tmp_path: Path) -> None:
    data, workspace, uploads = tmp_path / "data", tmp_path / "workspace", tmp_path / "uploads"
    data.mkdir()
    workspace.mkdir()
    host = HostFiles({"/mnt/data": data, "/workspace": workspace}, uploads=uploads)

    class Interrupted:
        def __init__(self, error: BaseException) -> None:
            self.error, self.sent = error, False

        def read(self, size: int = -1) -> bytes:
            if self.sent:
                raise self.error
            self.sent = True
            return b"x" * 1000

    for error in (KeyboardInterrupt(), RuntimeError("the client went away")):
        with pytest.raises(type(error)):
            host.write("/mnt/data/big", Interrupted(error), limit=10**6, size=None)  # type: ignore[arg-type]
        assert os.listdir(uploads) == []
        assert not (data / "big").exists()
    # A leftover of a killed process: swept once stale, a fresh one (in flight) kept.
    stale, fresh = uploads / ".jsbx-upload-old", uploads / ".jsbx-upload-new"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert sweep_uploads(uploads, older_than=600) == [".jsbx-upload-old"]
    assert sorted(os.listdir(uploads)) == [".jsbx-upload-new"]
    assert host.sweep_uploads(older_than=0) == [".jsbx-upload-new"]


def test_find_output_is_parsed_within_the_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_sandbox.backends import engine_files

    out = b"d\t0\t0\t/mnt/data/a\0f\t3\t1.5\t/mnt/data/a/x\0f\t1\t1\t/mnt/data/bad\x01\0"
    scan = engine_files.parse_find(out)
    assert [(f.path, f.bytes) for f in scan.files] == [("/mnt/data/a/x", 3)]
    assert scan.truncated is None
    # A record cut by `head -c`: the byte cap was reached.
    cut = engine_files.parse_find(out + b"f\t1\t1\t/mnt/da")
    assert cut.truncated is not None
    assert "bytes of paths" in cut.truncated
    # The folder counts: with a cap of one entry, the file after it is not reached.
    monkeypatch.setattr(engine_files, "MAX_SCAN_ENTRIES", 1)
    capped = engine_files.parse_find(out)
    assert capped.files == []
    assert capped.truncated == "more than 1 files and folders"


@pytest.mark.parametrize(
    ("size", "mtime"),
    [(b"-5", b"1"), (b"5", b"nan"), (b"5", b"inf"), (b"5", b"1e308"), (b"9" * 5000, b"1"),
     (b"5", b"-1"), (b"+5", b"1"), (b"", b"1"), (b"5", b"1_0"), (b"\xd9\xa5", b"1")],
)  # fmt: skip
def test_find_records_with_nonsense_numbers_are_skipped(size: bytes, mtime: bytes) -> None:
    """Sandbox code can write into `find`'s output (its stdout, same user): a record whose
    size or time is not what `find -printf` prints is skipped, never a ValueError, NaN or a
    negative size in the listing."""
    from jupyter_sandbox.backends import engine_files

    out = b"f\t%s\t%s\t/mnt/data/forged\0f\t3\t1.5\t/mnt/data/real\0" % (size, mtime)
    scan = engine_files.parse_find(out)
    assert [(f.path, f.bytes, f.mtime) for f in scan.files] == [("/mnt/data/real", 3, 1.5)]
