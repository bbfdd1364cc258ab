"""The in-container supervisor, run on the host with a fake kernel and scope `descendants`."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

SCRIPT = Path(str(files("jupyter_sandbox.backends") / "image_recipe" / "sandbox-init"))

# A stand-in kernel: reports on the inherited fd, leaves a setsid'ed daemon behind, and
# exits when SIGTERMed directly (a crash, as far as the supervisor knows).
FAKE_KERNEL = textwrap.dedent(
    """
    import os, signal, sys, time
    fd = int(os.environ["EVENT_FD"])
    def report(line):
        os.write(fd, (line + "\\n").encode())
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            report(f"survivor {os.getpid()}")
            while True:
                time.sleep(60)
        os._exit(0)
    os.wait()
    signal.signal(signal.SIGINT, lambda *_: report("sigint"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    report(f"kernel {os.getpid()} {sys.argv[1]}")
    while True:
        signal.pause()
    """
)


class Supervisor:
    """A running sandbox-init, with its fake kernel's events and its own log lines."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        deadline: float | None = None,
        deadline_file: Path | None = None,
        scope: str = "descendants",
    ):
        kernel = tmp_path / "kernel.py"
        kernel.write_text(FAKE_KERNEL)
        self._events, event_writer = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        env.update(
            SANDBOX_KERNEL_CMD=json.dumps([sys.executable, str(kernel), "{connection_file}"]),
            EVENT_FD=str(event_writer),
        )
        if scope:
            env["SANDBOX_INIT_SCOPE"] = scope
        argv = [sys.executable, str(SCRIPT), "--connection-file", str(tmp_path / "conn.json")]
        if deadline is not None:
            argv += ["--deadline", str(deadline)]
        if deadline_file is not None:
            argv += ["--deadline-file", str(deadline_file)]
        self.process = subprocess.Popen(
            argv, env=env, pass_fds=(event_writer,), stderr=subprocess.PIPE
        )
        os.close(event_writer)
        self._buffers: dict[int, bytes] = {self._events: b"", self.stderr_fd: b""}

    @property
    def stderr_fd(self) -> int:
        assert self.process.stderr is not None
        return self.process.stderr.fileno()

    def _next(self, fd: int, timeout: float) -> str | None:
        """The next line on `fd`, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffers[fd]:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buffers[fd] += chunk
        line, _, self._buffers[fd] = self._buffers[fd].partition(b"\n")
        return line.decode()

    def event(self, timeout: float = 10.0) -> str:
        line = self._next(self._events, timeout)
        assert line is not None, "no event from the fake kernel"
        return line

    def no_event(self, timeout: float) -> bool:
        return self._next(self._events, timeout) is None

    def log_until(self, text: str, timeout: float = 10.0) -> None:
        while (line := self._next(self.stderr_fd, timeout)) is not None:
            if text in line:
                return
        raise AssertionError(f"supervisor never logged {text!r}")

    def started(self) -> tuple[int, int]:
        """Pids of (kernel, survivor) from one kernel start."""
        pids: dict[str, int] = {}
        while len(pids) < 2:
            kind, pid, *_ = self.event().split()
            pids[kind] = int(pid)
        return pids["kernel"], pids["survivor"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the supervisor takes its kernel and survivors
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()
        os.close(self._events)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    running = Supervisor(tmp_path)
    try:
        yield running
    finally:
        running.close()


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kernel_gets_the_connection_file(supervisor: Supervisor, tmp_path: Path) -> None:
    kernel_line = next(line for line in iter(supervisor.event, "") if line.startswith("kernel"))
    assert kernel_line.split()[2] == str(tmp_path / "conn.json")


def test_sigint_is_forwarded_to_the_kernel(supervisor: Supervisor) -> None:
    supervisor.started()
    supervisor.process.send_signal(signal.SIGINT)
    assert supervisor.event() == "sigint"
    assert supervisor.process.poll() is None


def test_sigusr1_kills_everything_and_starts_a_fresh_kernel(supervisor: Supervisor) -> None:
    kernel, survivor = supervisor.started()
    supervisor.process.send_signal(signal.SIGUSR1)
    new_kernel, new_survivor = supervisor.started()
    assert new_kernel != kernel
    assert is_gone(kernel)
    assert is_gone(survivor)
    assert not is_gone(new_survivor)


def test_kernel_exit_kills_leftovers_and_waits_for_restart(supervisor: Supervisor) -> None:
    kernel, survivor = supervisor.started()
    os.kill(kernel, signal.SIGTERM)
    supervisor.log_until("exited with status 3; waiting for restart")
    assert is_gone(survivor)
    assert supervisor.no_event(timeout=0.5)
    assert supervisor.process.poll() is None
    supervisor.process.send_signal(signal.SIGUSR1)
    new_kernel, _ = supervisor.started()
    assert new_kernel != kernel


def test_sigterm_kills_everything_and_exits_0(supervisor: Supervisor) -> None:
    kernel, survivor = supervisor.started()
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.process.wait(timeout=10) == 0
    assert is_gone(kernel)
    assert is_gone(survivor)


def test_deadline_kills_everything_and_exits_0(tmp_path: Path) -> None:
    running = Supervisor(tmp_path, deadline=time.time() + 1.5)
    try:
        kernel, survivor = running.started()
        assert running.process.wait(timeout=10) == 0
        assert is_gone(kernel)
        assert is_gone(survivor)
    finally:
        running.close()


def write_deadline(path: Path, value: float) -> None:
    """As the host does: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_text(f"{value:.3f}")
    fresh.replace(path)


def test_the_deadline_file_brings_the_deadline_forward(tmp_path: Path) -> None:
    deadline_file = tmp_path / "deadline"
    running = Supervisor(tmp_path, deadline=time.time() + 600, deadline_file=deadline_file)
    try:
        kernel, survivor = running.started()
        assert running.process.poll() is None
        write_deadline(deadline_file, time.time() + 0.5)  # a claim with a short lifetime
        assert running.process.wait(timeout=10) == 0
        running.log_until("deadline set to")
        running.log_until("deadline reached")
        assert is_gone(kernel)
        assert is_gone(survivor)
    finally:
        running.close()


def test_the_deadline_file_extends_the_deadline_and_bad_content_is_ignored(
    tmp_path: Path,
) -> None:
    deadline_file = tmp_path / "deadline"
    write_deadline(deadline_file, time.time() + 600)  # claimed: longer than the pool's
    running = Supervisor(tmp_path, deadline=time.time() + 1, deadline_file=deadline_file)
    try:
        running.started()
        time.sleep(2.5)
        assert running.process.poll() is None  # the command line's deadline has passed
        deadline_file.with_suffix(".new").write_text("soon")
        deadline_file.with_suffix(".new").replace(deadline_file)
        time.sleep(1.5)
        assert running.process.poll() is None  # unreadable: the last good value holds
        write_deadline(deadline_file, time.time())
        assert running.process.wait(timeout=10) == 0
    finally:
        running.close()


@pytest.mark.skipif(os.getpid() == 1, reason="as PID 1 the supervisor would accept scope 'all'")
def test_scope_all_is_refused_outside_a_container(tmp_path: Path) -> None:
    running = Supervisor(tmp_path, scope="")
    try:
        assert running.process.wait(timeout=10) != 0
        running.log_until("scope 'all' needs PID 1 as parent")
    finally:
        running.close()
