"""Short execs the host runs in a sandbox (`find` for a listing, `stat`, `rm`, `mv`, `cat` of
the cgroup's OOM counter on a remote engine) have outputs that sandbox code can write into and
hold open (`/proc/<pid>/fd/1`, same user): the host reads a bounded amount within one deadline
for the whole read, whatever the sandbox does."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.backends import engine_files
from jupyter_sandbox.backends.exec_output import run_exec
from jupyter_sandbox.settings import Settings
from tests.adversarial.conftest import run
from tests.conftest import TEST_LABEL, remove_labelled

pytestmark = pytest.mark.docker

HOLDER = r'''
import os, subprocess, sys
code = """
import os, time
me, held, end, last = os.getpid(), {}, time.monotonic() + 900, 0.0
while time.monotonic() < end:
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == me or p in held:
            continue
        try:
            argv = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\\0')
            if argv[:2] == [b'head', b'-c']:
                held[p] = open('/proc/%s/fd/1' % p, 'wb', buffering=0)
                os.kill(int(p), 19)  # SIGSTOP: it never exits, so the engine keeps its stream
        except OSError:
            pass
    if time.monotonic() - last > 1:  # a byte a second: no receive ever times out
        last = time.monotonic()
        for f in held.values():
            try:
                f.write(b'x')
            except OSError:
                pass
    time.sleep(0.0005)
"""
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# A tree big enough that `find | head | head` runs long enough to be caught.
for d in range(40):
    os.makedirs(f"/workspace/t/{d}", exist_ok=True)
    for f in range(500):
        open(f"/workspace/t/{d}/{f}", "w").close()
print("holding")
'''
"""Starts a daemon that stops the listing's `head -c` (so it never exits and the engine never
ends its stream) and writes a byte a second into its stdout (the exec stream to the host)."""


@pytest.fixture
def remote(home: Path, test_label: str) -> Iterator[tuple[Client, str]]:
    """A sandbox as on a remote engine: volumes, files through the archive and exec APIs."""
    client = Client(home=home, engine_location="remote", extra_labels={TEST_LABEL: test_label})
    try:
        container_id = client.containers.create(name="exec-output").id
        yield client, container_id
        client.containers.delete(container_id)
    finally:
        client.close()
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def test_a_listing_held_open_by_the_sandbox_ends_at_the_deadline(
    remote: tuple[Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, container_id = remote
    monkeypatch.setattr(engine_files, "EXEC_TIMEOUT", 8.0)
    assert run(client, container_id, HOLDER, timeout=120).strip() == "holding"
    outcome: list[object] = []

    def listing() -> None:
        try:
            outcome.append(client.containers.files.list(container_id, limit=5))
        except Exception as exc:  # reported below
            outcome.append(exc)

    caught, seen = False, []
    for _ in range(5):  # the daemon must win a race against a short `head`
        started = time.monotonic()
        worker = threading.Thread(target=listing, daemon=True)
        worker.start()
        worker.join(8.0 + 60)
        assert not worker.is_alive(), "the listing never returned: the host waits on the sandbox"
        elapsed = time.monotonic() - started
        page = outcome.pop()
        assert not isinstance(page, Exception), page
        truncated = getattr(page, "truncated", None)
        seen.append((round(elapsed, 1), truncated))
        if truncated is not None and "cut" in str(truncated):
            caught = True
            assert elapsed < 8.0 + 30, elapsed
            break
    assert caught, f"the daemon never held a listing open (the probe did not run): {seen}"
    # The host is fine and the sandbox still answers.
    assert run(client, container_id, "print(6 * 7)").strip() == "42"


@pytest.fixture
def plain_container(test_label: str) -> Iterator[tuple[docker.APIClient, str]]:
    api = docker.APIClient()
    made = api.create_container(
        Settings().image,
        ["600"],
        entrypoint=["sleep"],
        user="1000:1000",
        labels={TEST_LABEL: test_label},
        host_config=api.create_host_config(
            network_mode="none", cap_drop=["ALL"], runtime=os.environ.get("JUPYTER_SANDBOX_RUNTIME")
        ),
    )
    try:
        api.start(made["Id"])
        yield api, made["Id"]
    finally:
        api.remove_container(made["Id"], force=True)
        api.close()


def test_exec_output_is_bounded_in_bytes_and_time(
    plain_container: tuple[docker.APIClient, str],
) -> None:
    """The primitive every host-side exec reads through (`cat` of the OOM counter included):
    a trickle is cut at the deadline for the whole read, a flood at the byte cap, and
    neither has an exit code; a quick command gives its output and code."""
    api, container = plain_container
    started = time.monotonic()
    trickle = run_exec(
        api,
        container,
        ["sh", "-c", "while :; do printf x; sleep 1; done"],
        limit=4096,
        timeout=4,
    )
    assert time.monotonic() - started < 4 + 5
    assert (trickle.complete, trickle.code) == (False, None)
    assert 1 <= len(trickle.stdout) <= 6
    flood = run_exec(
        api, container, ["head", "-c", "50000000", "/dev/zero"], limit=65536, timeout=30
    )
    assert (flood.complete, flood.code, len(flood.stdout)) == (False, None, 65536)
    quick = run_exec(
        api, container, ["sh", "-c", "printf out; printf err >&2; exit 3"], limit=64, timeout=30
    )
    assert (quick.complete, quick.code, quick.stdout, quick.stderr) == (True, 3, b"out", b"err")
