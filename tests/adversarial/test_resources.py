"""Resource bombs, runaway code and survivors: each is contained, reported, and the sandbox
(or the next one) works afterwards. Checked from the host: cgroup files, wall clock, RSS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from jupyter_sandbox import Client, ConflictError, InternalServerError
from tests.adversarial.conftest import (
    Sandboxes,
    cgroup_file,
    is_gvisor,
    oom_kills,
    peak_rss_bytes,
    pids_current,
    reset_peak_rss,
    run,
    run_json,
)
from tests.conftest import TEST_LABEL, labelled_objects

pytestmark = pytest.mark.docker

MiB = 2**20


def processes(client: Client, container_id: str) -> list[str]:
    """Command lines of every process in the sandbox but the probe's own kernel threads."""
    found = run_json(
        client,
        container_id,
        "import json, os\n"
        "print(json.dumps([open(f'/proc/{p}/cmdline', 'rb').read()[:60].decode('utf8', 'replace')"
        " for p in os.listdir('/proc') if p.isdigit()]))",
    )
    assert isinstance(found, list)
    return found


@pytest.fixture
def sandbox(sandboxes: Sandboxes) -> tuple[Client, str]:
    client = sandboxes.client()
    return client, client.containers.create(name="bomb").id


def _running(container_id: str) -> bool:
    probe = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", f"jsbx-{container_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() == "true"


def ended_or_works(client: Client, container_id: str) -> None:
    """gVisor's containment of a bomb: the sandbox still works, or it ended (its user-space
    kernel, one host process, was stopped by a host limit) and says so."""
    try:
        assert run(client, container_id, "print(6 * 7)") == "42\n"
    except (ConflictError, InternalServerError):
        assert client.containers.retrieve(container_id).status == "terminated"


def test_fork_bomb_hits_the_pids_limit_and_restart_recovers(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    limit = client.settings.pids_limit
    run(client, container_id, "1")
    baseline = pids_current(container_id)
    code = (
        "import errno, os, time\nforked, error = 0, None\n"
        "while forked < 5000:\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError as e:\n        error = errno.errorcode[e.errno]; break\n"
        "    if pid == 0:\n        time.sleep(600); os._exit(0)\n"
        "    forked += 1\n"
        "print(error, forked)"
    )
    if is_gvisor():  # gVisor's tasks are not host tasks: the pids limit bounds its threads
        with contextlib.suppress(ConflictError, InternalServerError):
            client.containers.execute(container_id, code, timeout=120)
        if _running(container_id):
            assert pids_current(container_id) <= limit
        ended_or_works(client, container_id)
        return
    error, forked = run(client, container_id, code).split()
    assert error == "EAGAIN"
    assert int(forked) < limit
    assert pids_current(container_id) <= limit
    client.containers.restart(container_id)
    assert run(client, container_id, "print(6 * 7)") == "42\n"
    assert pids_current(container_id) <= baseline + 2


def test_thread_bomb_hits_the_pids_limit(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    code = (
        "import threading, time\nstarted, error = 0, None\n"
        "while started < 5000:\n"
        "    try:\n        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "    except RuntimeError as e:\n        error = str(e); break\n"
        "    started += 1\n"
        "print(started, error)"
    )
    if is_gvisor():  # the pids limit does not bound gVisor's threads; memory and CPU do
        with contextlib.suppress(ConflictError, InternalServerError):
            client.containers.execute(container_id, code, timeout=120)
        ended_or_works(client, container_id)
        return
    out = run(client, container_id, code)
    assert "can't start new thread" in out
    assert pids_current(container_id) <= client.settings.pids_limit
    client.containers.restart(container_id)
    assert run(client, container_id, "print(1)") == "1\n"


@pytest.mark.parametrize(
    "bomb",
    [
        "chunks = []\nwhile True:\n    chunks.append(bytearray(b'x' * (64 * 2**20)))",
        "import numpy as np\nchunks = []\nwhile True:\n    chunks.append(np.ones(2**23))",
    ],
    ids=["bytearray", "numpy"],
)
def test_memory_bomb_dies_of_oom_quickly(sandboxes: Sandboxes, bomb: str) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="oom", memory_limit="512m").id
    before = oom_kills(container_id)
    started = time.monotonic()
    execution = client.containers.execute(container_id, bomb, timeout=60)
    elapsed = time.monotonic() - started
    assert execution.status == "died", (execution.status, execution.message)
    assert "out of memory" in (execution.message or "")
    assert elapsed < 60  # ended by the OOM killer, not by the run's timeout
    if is_gvisor():  # the host's OOM killer ends gVisor's kernel, so the whole sandbox
        assert "the sandbox ended with it" in (execution.message or "")
        assert client.containers.retrieve(container_id).status == "terminated"
        return
    assert oom_kills(container_id) - before >= 1
    assert run(client, container_id, "print(1)") == "1\n"


def test_an_oom_is_counted_even_after_the_engine_removed_the_sandbox(
    sandboxes: Sandboxes,
) -> None:
    """Under gVisor the OOM killer ends the whole sandbox, and the engine auto-removes it with
    its cgroup, which can happen before the death is noticed (a loaded host): the count the
    kernel's death is judged by must survive that. Under runc only the bomb dies."""
    client = sandboxes.client()
    container_id = client.containers.create(name="oom-gone", memory_limit="512m").id
    backend = client._backend
    assert backend.oom_kills(container_id) == 0
    name = f"jsbx-{container_id}"
    # Detached under gVisor: the engine's exec never returns from a sandbox that ended.
    detach = ["--detach"] if is_gvisor() else []
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(b'x' * (64 * 2**20)))"
    bomb = subprocess.run(
        ["docker", "exec", *detach, name, "python3", "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if not is_gvisor():
        assert bomb.returncode == 137, bomb  # SIGKILL: the OOM killer
        assert backend.oom_kills(container_id) == oom_kills(container_id) >= 1
        return
    assert bomb.returncode == 0, bomb  # started
    with (
        contextlib.closing(docker.from_env()) as engine,
        contextlib.suppress(docker.errors.NotFound),  # NotFound: removed already
    ):
        engine.api.wait(name, condition="removed", timeout=60)
    assert backend.state(container_id) is None  # container and cgroup are gone
    assert backend.oom_kills(container_id) == 1


@pytest.mark.parametrize(
    ("folder", "size_setting"), [("/tmp", "tmp_size"), ("/dev/shm", "shm_size")]
)
def test_tmpfs_fill_stops_at_its_size(
    sandbox: tuple[Client, str], folder: str, size_setting: str
) -> None:
    client, container_id = sandbox
    size = _bytes(getattr(client.settings, size_setting))
    code = (
        "import errno, os\nwritten, error = 0, None\nblock = b'x' * 2**20\n"
        f"with open('{folder}/fill', 'wb', buffering=0) as f:\n"
        "    try:\n        while written < 2**32:\n            written += f.write(block)\n"
        "    except OSError as e:\n        error = errno.errorcode[e.errno]\n"
        f"os.remove('{folder}/fill')\n"
        "print(error, written)"
    )
    error, written = run(client, container_id, code).split()
    assert error == "ENOSPC"
    assert size * 0.9 <= int(written) <= size


def _bytes(size: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)


def test_disk_fill_and_inode_flood_stop_at_the_cap(sandboxes: Sandboxes, tmp_path: Path) -> None:
    cap = 64 * MiB
    client = sandboxes.client(disk_limit=cap)
    container_id = client.containers.create(name="disk").id
    host_before = _used(client.settings.home)
    code = (
        "import errno, json, os\nout = {}\n"
        "os.makedirs('/mnt/data/many', exist_ok=True)\nn = 0\n"
        "try:\n    while n < 10**6:\n        open(f'/mnt/data/many/{n}', 'w').close(); n += 1\n"
        "except OSError as e:\n    out['inodes'] = [errno.errorcode[e.errno], n]\n"
        "for i in range(n): os.remove(f'/mnt/data/many/{i}')\n"
        "written = 0\nblock = b'x' * 2**20\n"
        "try:\n    with open('/workspace/fill', 'wb', buffering=0) as f:\n"
        "        while written < 2**34:\n            written += f.write(block)\n"
        "except OSError as e:\n    out['bytes'] = [errno.errorcode[e.errno], written]\n"
        "print(json.dumps(out))"
    )
    result = run_json(client, container_id, code, timeout=120)
    assert isinstance(result, dict)
    assert result["inodes"][0] == "ENOSPC"
    assert result["bytes"][0] == "ENOSPC"
    assert cap * 0.8 <= result["bytes"][1] <= cap
    assert _used(client.settings.home) - host_before <= cap * 1.02
    client.containers.delete(container_id)
    assert _used(client.settings.home) - host_before <= 4 * MiB


def _used(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@pytest.mark.parametrize(
    ("attack", "memory"),
    [
        pytest.param("for i in range(2 * 10**6):\n    print('x' * 60)", "1g", id="stdout-flood"),
        pytest.param("print('x' * 2**30)", "4g", id="1GB-print", marks=pytest.mark.slow),
        pytest.param(
            "import os\nfrom IPython.display import Image, display\n"
            "display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(200 * 2**20)))",
            "2g",
            id="200MB-png",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "import os\nfrom IPython.display import Image, display\n"
            "for _ in range(5):\n"
            "    display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(7 * 2**20)))",
            "1g",
            id="many-7MB-pngs",
        ),
    ],
)
def test_output_floods_are_truncated_and_host_memory_bounded(
    sandboxes: Sandboxes, attack: str, memory: str
) -> None:
    client = sandboxes.client()
    container_id = client.containers.create(name="flood", memory_limit=memory).id
    reset_peak_rss()
    before = peak_rss_bytes()
    # No run deadline: the promise is truncation and a bounded host, not speed. The flood's
    # pace is the sandbox's (under gVisor ~90 s for stdout-flood on an idle host, with the
    # host process at ~0.5 s CPU), so a deadline fails on a busy host; the test's own pytest
    # timeout still ends a hang.
    execution = client.containers.execute(container_id, attack, timeout=None)
    growth = peak_rss_bytes() - before
    assert execution.status == "ok", (execution.status, execution.message)
    if is_gvisor() and "2**30" in attack:
        # Known gap: over tcp + Curve a single 1 GiB message never reaches the host, so no
        # truncation note is shown, and the next cell's output can be lost while the reopened
        # output socket resubscribes. What must hold: the host stays bounded, the kernel lives.
        assert growth < 100 * MiB, f"host RSS grew by {growth / MiB:.0f} MiB"
        run(client, container_id, "1 + 1")  # status ok: the kernel answers (output may be lost)
        pytest.xfail(
            "a 1 GiB message over the tcp channel is lost without the note, and the next "
            "cell's output may be lost while iopub resubscribes"
        )
    assert execution.truncated
    texts = [o.text for o in execution.outputs if o.type == "stream"]
    assert any("[output truncated" in t or "[output dropped" in t for t in texts)
    kept = sum(len(json.dumps(o.model_dump())) for o in execution.outputs)
    assert kept <= client.settings.output_limit_bytes * 1.4  # base64 and JSON framing
    assert growth < 100 * MiB, f"host RSS grew by {growth / MiB:.0f} MiB"
    assert run(client, container_id, "print('still here')") == "still here\n"


_RAW_STDERR_FLOOD = """
import fcntl, os
captured = {os.readlink('/proc/self/fd/1'), os.readlink('/proc/self/fd/2')}
chunk, written = b'x' * 65535 + b'\\n', 0
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        target = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        continue
    write_only = fcntl.fcntl(fd, fcntl.F_GETFL) & 3 == os.O_WRONLY
    if target.startswith('pipe:') and target not in captured and write_only:
        for _ in range(160):
            written += os.write(fd, chunk)
print(written)
"""


def test_a_flood_on_the_kernels_raw_stdio_keeps_the_docker_log_near_1_mib(
    sandbox: tuple[Client, str],
) -> None:
    """Bypassing ipykernel's capture (its saved stdio fds) reaches the engine's log: capped."""
    client, container_id = sandbox
    written = int(run(client, container_id, _RAW_STDERR_FLOOD, timeout=120))
    # gVisor's /proc does not expose the container's own stdio fds: nothing reaches the log.
    assert is_gvisor() or written >= 2 * 10 * MiB  # the container's stdout and stderr found
    inspect = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}} {{json .HostConfig.LogConfig}}",
         f"jsbx-{container_id}"],
        capture_output=True, text=True, check=True,
    ).stdout.split(" ", 1)  # fmt: skip
    docker_id, log_config = inspect[0], json.loads(inspect[1])
    assert log_config["Type"] == "local"
    assert log_config["Config"]["max-size"] == "512k"
    root = subprocess.run(
        ["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    files = list((Path(root) / "containers" / docker_id / "local-logs").iterdir())
    on_disk = sum(f.stat().st_size for f in files)
    assert 0 < on_disk <= 1.05 * MiB, f"{[f.name for f in files]}: {on_disk / MiB:.1f} MiB"
    assert run(client, container_id, "print('still here')") == "still here\n"


def test_cpu_burn_is_throttled_and_fd_bomb_gets_emfile(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    usage = cgroup_file(container_id, "cpuacct", "cpuacct.usage")
    start_usage, start = int(usage.read_text()), time.monotonic()
    code = (
        "import multiprocessing, time\n"
        "def burn():\n    end = time.monotonic() + 3\n    while time.monotonic() < end: pass\n"
        "workers = [multiprocessing.Process(target=burn) for _ in range(4)]\n"
        "[w.start() for w in workers]; [w.join() for w in workers]\n"
        "import errno, os\nfds, error = [], None\n"
        "try:\n    while len(fds) < 100000:\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n    error = errno.errorcode[e.errno]\n"
        "count = len(fds)\nfor fd in fds: os.close(fd)\n"
        "print(error, count)"
    )
    error, count = run(client, container_id, code).split()
    cpu_seconds = (int(usage.read_text()) - start_usage) / 1e9
    wall = time.monotonic() - start
    assert cpu_seconds <= client.settings.cpus * wall * 1.1
    assert error == "EMFILE"
    assert 4000 <= int(count) < 4096


@pytest.mark.parametrize(
    "attack",
    [
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        "import ctypes, signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "ctypes.CDLL(None).sleep(1000)",
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.sleep(1000)",
    ],
    ids=["busy-sigint-ignored", "c-sleep-sigint-ignored", "c-sleep-loop"],
)
def test_runaway_code_times_out_then_the_kernel_works(
    sandbox: tuple[Client, str], attack: str
) -> None:
    client, container_id = sandbox
    timeout = 2.0
    started = time.monotonic()
    execution = client.containers.execute(container_id, attack, timeout=timeout)
    assert execution.status == "timeout"
    # A restart under gVisor imports ipykernel about 3x slower.
    assert time.monotonic() - started <= timeout + (15 if is_gvisor() else 5)
    assert run(client, container_id, "print('ok')") == "ok\n"


_TOKEN = str(10_000 + os.getpid() % 80_000)
SURVIVORS = (
    "import os, subprocess, threading, time\n"
    "subprocess.Popen(['sleep', '1001'])\n"
    "subprocess.Popen(['sleep', '1002'], start_new_session=True)\n"
    "subprocess.Popen(['sh', '-c', 'trap \"\" TERM INT HUP; (setsid sleep 1003 &) ; sleep 1004'])\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n        time.sleep(1005)\n    os._exit(0)\n"
    "threading.Thread(target=time.sleep, args=(1006,), daemon=True).start()\n"
    "time.sleep(0.5)\n"
).replace("100", _TOKEN)  # durations unique to this run: pgrep never sees another run's


def test_survivors_are_killed_on_restart_and_pids_return_to_baseline(
    sandbox: tuple[Client, str],
) -> None:
    client, container_id = sandbox
    run(client, container_id, "1")
    baseline = pids_current(container_id)
    run(client, container_id, SURVIVORS)
    assert sum("sleep" in cmd for cmd in processes(client, container_id)) >= 5
    assert pids_current(container_id) > baseline
    client.containers.restart(container_id)
    assert not [cmd for cmd in processes(client, container_id) if "sleep" in cmd]
    # Under gVisor the cgroup counts the Sentry's host threads, which it keeps once grown.
    assert is_gvisor() or pids_current(container_id) <= baseline + 1


def test_survivors_go_with_the_sandbox_on_delete(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    run(client, container_id, SURVIVORS)
    pids_file = cgroup_file(container_id, "pids", "pids.current")
    client.containers.delete(container_id)
    assert not pids_file.exists()  # the cgroup (and every task in it) is gone
    assert not subprocess.run(
        ["pgrep", "-f", f"sleep {_TOKEN}[1-6]"], capture_output=True, text=True
    ).stdout.strip()


def test_idle_sandbox_expires_and_its_container_is_removed(sandbox: tuple[Client, str]) -> None:
    client, container_id = sandbox
    run(client, container_id, SURVIVORS)
    idle_minutes = client.containers.retrieve(container_id).expires_after.minutes
    client._store.touch(container_id, time.time() - idle_minutes * 60 - 1)
    expired, _ = client.gc()
    assert expired == [container_id]
    assert client.containers.retrieve(container_id).status == "expired"
    listed = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter",
         f"label=org.jupyter-sandbox.container-id={container_id}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert listed == ""


_OWNER = """
import json, sys, time
from jupyter_sandbox import Client
client = Client(home=sys.argv[1], extra_labels=json.loads(sys.argv[2]))
container = client.containers.create(name="owner", lifetime_seconds=int(sys.argv[3]))
execution = client.containers.execute(container.id, sys.argv[4])
print(container.id, execution.status, flush=True)
time.sleep(600)
"""
_OUTLIVE = (
    "import subprocess\n"
    "subprocess.Popen(['sh', '-c', 'trap \"\" TERM INT HUP; exec sleep 100000'],"
    " start_new_session=True)\n"
    "r = subprocess.run(['date', '-s', '2030-01-01'], capture_output=True, text=True)\n"
    "assert 'Operation not permitted' in r.stderr, r.stderr\n"
)


@pytest.mark.slow
def test_hard_lifetime_holds_with_every_host_process_killed(sandboxes: Sandboxes) -> None:
    lifetime = 8
    label = {TEST_LABEL: sandboxes.label}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(sandboxes.home), json.dumps(label), str(lifetime),
         _OUTLIVE],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert owner.stdout is not None
    line = owner.stdout.readline().split()
    created = time.monotonic()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdout.close()
    assert line[1:] == ["ok"], line
    selector = f"{TEST_LABEL}={sandboxes.label}"
    while "container" in labelled_objects(selector):
        assert time.monotonic() - created <= lifetime + 60, "the sandbox outlived its lifetime"
        time.sleep(0.5)
    client = sandboxes.client()
    assert client.containers.retrieve(line[0]).status == "expired"
