"""Host resources that sandbox code controls, and what it can make the operator's tools print:
descriptor exhaustion by a wide or deep tree, upload leftovers, invalid timeouts, hostile names.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_sandbox import APIError, BadRequestError
from jupyter_sandbox.backends import host_files
from jupyter_sandbox.backends.disk import SandboxStorage
from jupyter_sandbox.backends.host_scan import scan_roots
from tests.adversarial.conftest import Sandboxes, run
from tests.conftest import wait_until

RUNC_ONLY = (
    "host file descriptors, threads and memory of the host process, the same under every runtime"
)
pytestmark = pytest.mark.docker

SCRIPT = Path(sys.executable).with_name("jupyter-sandbox")

# 3,000 sibling folders with a file each, and a 200-level tree with a file per level.
_WIDE_AND_DEEP = """
import os
for i in range(3000):
    os.mkdir(f"/mnt/data/d{i}")
    open(f"/mnt/data/d{i}/f", "w").close()
path = "/workspace"
for level in range(200):
    path += "/n"
    os.mkdir(path)
    open(f"{path}/f{level}", "w").close()
print("made")
"""
_EXPECTED_FILES = 3000 + 200

# The listing, in a child limited to 1,024 descriptors: a sampler thread reads /proc/self/fd
# during the walk, a neighbour thread (another tenant in `serve`) keeps opening files.
_LISTER = r"""
import json, os, resource, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
from jupyter_sandbox import Client
client = Client(home=sys.argv[1])
container_id = sys.argv[2]
client.containers.retrieve(container_id)
baseline = len(os.listdir("/proc/self/fd"))
done = threading.Event()
peak = [0]
errors = []
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))
def neighbour():
    while not done.is_set():
        try:
            with open("/proc/self/status"):
                pass
        except OSError as exc:
            errors.append(exc.errno)
threads = [threading.Thread(target=sample), threading.Thread(target=neighbour)]
for thread in threads:
    thread.start()
page = client.containers.files.list(container_id, limit=100)
paths = [f.path for f in page]
done.set()
for thread in threads:
    thread.join()
client.close()
print(json.dumps({"paths": paths, "truncated": page.truncated, "baseline": baseline,
                  "peak": peak[0], "errors": errors}))
"""


@pytest.mark.parametrize("mechanism", ["auto", "volume"])
def test_a_wide_and_deep_tree_is_listed_with_bounded_descriptors(
    sandboxes: Sandboxes, mechanism: str
) -> None:
    # auto: loop mode as root (the host walks the image); volume: `find` in the sandbox.
    client = sandboxes.client(disk_mechanism=mechanism)
    container_id = client.containers.create(name="wide").id
    assert run(client, container_id, _WIDE_AND_DEEP, timeout=300).strip() == "made"
    child = subprocess.run(
        [sys.executable, "-c", _LISTER, str(sandboxes.home), container_id],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    assert seen["truncated"] is None
    assert len(set(seen["paths"])) == _EXPECTED_FILES  # before: 2,039 of 3,003 were missing
    assert "/workspace" + "/n" * 200 + "/f199" in seen["paths"]
    assert seen["errors"] == []  # no EMFILE next door
    assert seen["peak"] - seen["baseline"] <= 24, seen  # before: 2,891 descriptors


def test_a_listing_over_the_cap_says_truncated_and_forgets_nothing(
    sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="cap").id
    files = client.containers.files
    kept = files.create(container_id, file=("kept.txt", b"mine"), path="/workspace/kept.txt")
    run(
        client,
        container_id,
        "import os\nfor i in range(600): os.mkdir(f'/mnt/data/d{i}')\n"
        "for i in range(100): open(f'/mnt/data/d{i}/f', 'w').close()",
    )
    assert files.list(container_id).truncated is None
    # Folders count: 600 folders alone exceed a cap of 500.
    monkeypatch.setattr(host_files, "scan_roots", functools.partial(scan_roots, max_entries=500))
    page = files.list(container_id, limit=100)
    assert page.truncated == "more than 500 files and folders"
    assert kept.id in {f.id for f in page}  # unseen files are not forgotten


def test_interrupted_uploads_leave_nothing(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="uploads").id
    storage = SandboxStorage(client.settings.home / "sandboxes" / container_id, True)
    if storage.host_dirs() is None or not os.path.ismount(storage.mount):
        pytest.skip("needs the loop-mounted disk (root)")

    class Stream:
        name = "big.bin"

        def __init__(self, error: BaseException) -> None:
            self.error, self.calls = error, 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 3:
                raise self.error
            return b"x" * 2**20

    # Ctrl-C passes through; any other failure of the caller's stream is an API error chained
    # to it (the client's one error boundary).
    with pytest.raises(KeyboardInterrupt):
        client.containers.files.create(
            container_id,
            file=Stream(KeyboardInterrupt()),  # type: ignore[arg-type]  # a duck-typed stream
        )
    assert os.listdir(storage.uploads) == []
    gone = RuntimeError("the caller went away")
    with pytest.raises(APIError) as raised:
        client.containers.files.create(container_id, file=Stream(gone))  # type: ignore[arg-type]
    assert raised.value.__cause__ is gone
    assert os.listdir(storage.uploads) == []
    listing = run(client, container_id, "import os; print(sorted(os.listdir('/mnt/data')))")
    assert listing.strip() == "[]"

    # A process killed mid-upload: its temporary file is never in the sandbox's view, and
    # reconcile removes it once stale (its clock moved back an hour: we do not wait 10 min).
    code = (
        "import sys, time\nfrom jupyter_sandbox import Client\n"
        "class Slow:\n    name = 'slow.bin'\n"
        "    def read(self, size=-1):\n        time.sleep(0.2)\n        return b'y' * 65536\n"
        f"Client(home={str(sandboxes.home)!r}).containers.files.create({container_id!r}, "
        "file=Slow())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    wait_until(lambda: storage.uploads.is_dir() and os.listdir(storage.uploads), 60)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (left,) = os.listdir(storage.uploads)
    seen = run(client, container_id, "import os; print(sorted(os.listdir('/mnt/data')))")
    assert seen.strip() == "[]"
    assert client.reconcile().uploads == []  # fresh: could be an upload in flight
    old = time.time() - 3600
    os.utime(storage.uploads / left, (old, old))
    assert client.reconcile().uploads == [f"{container_id}/{left}"]
    assert os.listdir(storage.uploads) == []


def test_interrupted_uploads_leave_nothing_in_volume_mode(sandboxes: Sandboxes) -> None:
    # The engine extracts an archive as it arrives: before, a cut upload left a partial file.
    client = sandboxes.client(disk_mechanism="volume")
    container_id = client.containers.create(name="volume-uploads").id

    class Cut(io.BytesIO):
        name = "sized.bin"
        reads = 0

        def read(self, size: int | None = -1) -> bytes:
            self.reads += 1
            if self.reads > 3:
                raise KeyboardInterrupt
            return super().read(size)

    with pytest.raises(KeyboardInterrupt):
        client.containers.files.create(container_id, file=Cut(b"z" * 8 * 2**20))
    listing = "import os; print(sorted(os.listdir('/mnt/data')))"
    assert run(client, container_id, listing).strip() == "[]"
    # A killed uploader's leftover (made here by hand, an hour old) goes with the next listing.
    run(
        client,
        container_id,
        "import os, time\nfor name in ('.jsbx-upload-old', '.jsbx-upload-new'):\n"
        "    open('/mnt/data/' + name, 'w').close()\n"
        "os.utime('/mnt/data/.jsbx-upload-old', (time.time() - 3600,) * 2)",
    )
    assert list(client.containers.files.list(container_id)) == []
    assert run(client, container_id, listing).strip() == "['.jsbx-upload-new']"
    made = client.containers.files.create(container_id, file=("ok.txt", b"fine"))
    assert client.containers.files.content.retrieve(container_id, made.id).read() == b"fine"


def test_an_http_upload_cut_mid_stream_leaves_nothing(tmp_path: Path, test_label: str) -> None:
    from tests.integration.server_harness import serving

    with serving(tmp_path / "home", test_label) as server:
        sdk = server.sdk()
        container_id = sdk.containers.create(name="cut").id
        storage = SandboxStorage(tmp_path / "home" / "sandboxes" / container_id, True)
        boundary = "jsbxboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        for _ in range(3):  # the client goes away after 4 MiB of a promised 64 MiB
            with socket.create_connection(("127.0.0.1", server.port)) as raw:
                raw.sendall(
                    (
                        f"POST /v1/containers/{container_id}/files HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{server.port}\r\n"
                        f"Authorization: {server.headers()['Authorization']}\r\n"
                        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                        f"Content-Length: {64 * 2**20}\r\n\r\n"
                    ).encode()
                    + head
                )
                for _ in range(4):
                    raw.sendall(b"x" * 2**20)
        time.sleep(2)
        assert list(sdk.containers.files.list(container_id)) == []  # the server still answers
        uploads = os.listdir(storage.uploads) if storage.uploads.is_dir() else []
        assert uploads == []
        made = sdk.containers.files.create(container_id, file=("ok.txt", b"fine"))
        assert made.path == "/mnt/data/ok.txt"


BAD_TIMEOUTS = [math.nan, math.inf, -math.inf, -1, 0, True, 10**400, 86401, "5"]


def test_invalid_timeouts_are_refused_and_the_kernel_stays_usable(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="timeouts").id
    for value in BAD_TIMEOUTS:
        with pytest.raises(BadRequestError) as caught:
            client.containers.execute(container_id, "while True: pass", timeout=value)  # type: ignore[arg-type]
        assert caught.value.param == "timeout", value
    assert run(client, container_id, "print(6 * 7)", timeout=30).strip() == "42"
    for raw in ("nan", "inf", "-1", "1e400"):
        cli = subprocess.run(
            [
                str(SCRIPT),
                "--home",
                str(sandboxes.home),
                "exec",
                container_id,
                "1",
                "--timeout",
                raw,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert cli.returncode == 2, (raw, cli.stderr)
        assert "--timeout" in cli.stderr


# Names sandbox code can choose: rich markup, escape sequences, BEL, C1 CSI, a bidi override.
HOSTILE_NAMES = [
    "[/]",
    "[link=https://x]y[/link]",
    "[bold red]z",
    "\x1b]8;;http://x\x1b\\",
    "\x1b[2J",
    "\x07",
    "\x9b2J",
    "a\u202etxt.exe",
]
HOSTILE_TEXT = (
    "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ \x1b[2J \x07 \x1b]52;c;aGk=\x07 "
    "\x1b]0;title\x07 \x9b31m \x08\x08 [red]x[/] [/]"
)
RAW_CONTROLS = ["\x1b", "\x07", "\x9b", "\x08", "\u202e"]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def test_hostile_names_and_outputs_print_literally_in_the_cli(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="[/][link=https://x]y").id
    made = (
        f"import os\nfor name in {HOSTILE_NAMES!r}:\n"
        "    path = os.path.normpath('/mnt/data/' + name)\n"
        "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "    open(path, 'w').close()"
    )
    run(client, container_id, made)

    listed = _cli(sandboxes.home, "files", container_id)
    assert listed.returncode == 0, listed.stderr  # before: rich MarkupError
    for control in RAW_CONTROLS:
        assert control not in listed.stdout + listed.stderr, repr(control)
    # `/` in a name makes folders: `/mnt/data/[/]` is the file `]` in the folder `[`.
    for literal in ("/mnt/data/[/]", "/mnt/data/[link=https:/x]y[/link]", "[bold red]z"):
        assert literal in listed.stdout
    assert "/mnt/data/\\x9b2J" in listed.stdout  # shown escaped
    assert "a\\u202etxt.exe" in listed.stdout
    # Names with C0 controls are not addressable through the API: never listed at all.
    assert "8;;http://x" not in listed.stdout

    for command in (["list"], ["get", container_id]):
        shown = _cli(sandboxes.home, *command)
        assert shown.returncode == 0, shown.stderr
        assert "[/][link=https://x]y" in shown.stdout

    printed = _cli(sandboxes.home, "exec", container_id, f"print({HOSTILE_TEXT!r})")
    assert printed.returncode == 0, printed.stderr
    for control in RAW_CONTROLS:
        assert control not in printed.stdout, repr(control)
    assert "\\x1b]52;c;aGk=\\x07" in printed.stdout
    assert "[red]x[/] [/]" in printed.stdout

    failed = _cli(sandboxes.home, "exec", container_id, f"raise ValueError({HOSTILE_TEXT!r})")
    assert failed.returncode == 1
    for control in RAW_CONTROLS:
        assert control not in failed.stdout + failed.stderr, repr(control)
    assert "ValueError" in failed.stderr
    assert "\\x1b]8;;http://evil" in failed.stderr
