"""One local sandbox process: the image's supervisor (`sandbox-init`) run on this host.

`testing.LocalBackend` runs each sandbox as `sandbox-init` (scope `descendants`) in a plain
subprocess: the same supervisor as in the image, so interrupt (SIGINT), restart (SIGUSR1),
the hard deadline (and its file) and the log lines core waits for behave as in a container.
Nothing is isolated. Every supervisor is spawned by one long-lived thread and asks the kernel
for SIGTERM when that thread ends (`PR_SET_PDEATHSIG`), so no sandbox outlives this process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import IO

SUPERVISOR = Path(str(files("jupyter_sandbox.backends") / "image_recipe" / "sandbox-init"))
_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the spawning process is gone already
os.execv(sys.executable, [sys.executable, "-IS", *sys.argv[2:]])
"""
_LOG_LINES = 2000
_LOG_LINE_BYTES = 4096
_STOP_GRACE = 5.0
_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    """The one thread that starts supervisors (their parent-death signal follows it)."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsbx-local-spawn")
        return _SPAWNER


class LocalProcess:
    """A running supervisor and the timestamped lines it (and its kernel) printed."""

    def __init__(self, arguments: list[str], *, environment: dict[str, str], cwd: Path) -> None:
        command = [sys.executable, "-IS", "-c", _LAUNCHER, str(os.getpid()), str(SUPERVISOR)]
        self._process: subprocess.Popen[bytes] = (
            _spawner()
            .submit(
                subprocess.Popen,
                [*command, *arguments],
                env=environment,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is not an interrupt
            )
            .result()
        )
        self._lines: collections.deque[tuple[float, str]] = collections.deque(maxlen=_LOG_LINES)
        self._kernel_pids: set[int] = set()
        stdout = self._process.stdout
        assert stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(stdout,), name="jsbx-local-log", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        """The supervisor's process id."""
        return self._process.pid

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            while line := stream.readline(_LOG_LINE_BYTES):
                text = line.decode("utf-8", "replace").rstrip("\n")
                if text.startswith("sandbox-init: kernel started, pid "):
                    with contextlib.suppress(ValueError):
                        self._kernel_pids.add(int(text.rpartition(" ")[2]))
                self._lines.append((time.time(), text))

    @property
    def running(self) -> bool:
        """Whether the supervisor still runs."""
        return self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The supervisor's exit code once it exited (128 + n if killed by signal n)."""
        code = self._process.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def stop_group(self, stop: bool) -> None:
        """Stop (SIGSTOP) or continue (SIGCONT) the supervisor's whole process group."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGSTOP if stop else signal.SIGCONT)

    def signal(self, name: str) -> bool:
        """Send `name` (`SIGINT`, `SIGUSR1`, ...) to the supervisor; False once it exited."""
        if not self.running:
            return False
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.Signals[name])
        return True

    def logs(self, since: float, *, tail: int, max_bytes: int) -> str:
        """The last `tail` lines printed at or after `since`, at most `max_bytes` (the end)."""
        lines = [text for at, text in list(self._lines) if at >= since]
        text = "\n".join(lines[-tail:] if tail > 0 else [])
        encoded = text.encode()
        if len(encoded) > max_bytes:
            text = encoded[len(encoded) - max_bytes :].decode("utf-8", "ignore")
        return text + "\n" if text else ""

    def stop(self) -> None:
        """SIGTERM (the supervisor kills its kernel and everything it started), then SIGKILL
        whatever is left; idempotent."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                self._process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                for pid in self._kernel_pids:  # killed outright, it left its kernels
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
        self._reader.join(timeout=1.0)
