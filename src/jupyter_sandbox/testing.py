"""NO ISOLATION AT ALL: `LocalBackend` runs sandbox code as you, on this host, for tests.

Test your own agent or notebook code against the real API without Docker, as httpx's
`MockTransport` serves httpx users::

    from jupyter_sandbox import Client
    from jupyter_sandbox.testing import LocalBackend

    with LocalBackend() as backend, Client(backend=backend) as client:
        box = client.containers.create(name="test")
        client.containers.execute(box.id, "x = 6 * 7")
        assert client.containers.execute(box.id, "print(x)").stdout == "42\\n"

Each sandbox is a real ipykernel in a subprocess, under the same supervisor as in the image
(`sandbox-init`), in a temporary folder. Create, execute (state across calls, timeouts,
interrupt, restart), files, skills, idle expiry and hard lifetimes behave as on Docker. What
does not: no memory limit, no disk cap, no network control (a `disabled` policy is not
enforced; an `allowlist` one is refused with a `BadRequestError` on `network_policy`), and
the kernel runs with your user's rights. Never run untrusted code with it.

Paths: the kernel's working folder is the sandbox's `/mnt/data` (as in the image), `HOME` its
`/workspace`, and skills are at `../skills/<name>` from there (the image's `/mnt/skills`).
Linux only (the supervisor uses `/proc` and `prctl`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from jupyter_sandbox._exceptions import BadRequestError, ConflictError, NotFoundError
from jupyter_sandbox.backends import deadline_file, kernel
from jupyter_sandbox.backends.base import (
    CHANNELS,
    KernelChannel,
    KernelEndpoint,
    Leftover,
    NetworkGrant,
    SandboxFiles,
    SandboxSpec,
    SandboxState,
    StorageGrant,
)
from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.host_scan import sweep_uploads
from jupyter_sandbox.backends.local_process import LocalProcess
from jupyter_sandbox.backends.sandbox_files import STALE_UPLOAD_SECONDS
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision
from jupyter_sandbox.types.skill import SKILLS_ROOT

__all__ = ["LocalBackend"]

STORAGE_KIND = "local"
_LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 2000


def _refuse_allowlist() -> BadRequestError:
    return BadRequestError(
        "Invalid network_policy: the local backend has no isolation and cannot enforce an "
        "allowlist; use the docker backend, or network_policy {'type': 'disabled'}",
        param="network_policy",
    )


def _stop_all(processes: dict[str, LocalProcess], root: Path, owned: bool) -> None:
    for process in list(processes.values()):
        process.stop()
    processes.clear()
    if owned:
        shutil.rmtree(root, ignore_errors=True)


class LocalBackend:
    """NO ISOLATION AT ALL: sandboxes are local ipykernel subprocesses, for tests only.

    Args:
        settings: given by `Client(backend="local")`, which must name its own `home`
            (BadRequestError on `home` otherwise: the default store holds real sandboxes).
        root: the folder for channels, deadlines and storage (default: a fresh temporary
            folder, removed by `close`). Keep its path short: Unix socket paths are limited.

    Sandboxes live until they are deleted or expire, `close` is called, or this process
    exits (every kernel is then stopped). `Client(backend=LocalBackend())` without `home`
    keeps its store in `default_home`, inside `root`, never in your real state folder.
    """

    name = "local"

    def __init__(self, settings: Settings | None = None, *, root: str | Path | None = None):
        if settings is not None and "home" not in settings.model_fields_set:
            # Built by name on the default state folder, reconcile would end every sandbox
            # recorded there (they are not this backend's): refuse.
            raise BadRequestError(
                "Invalid home: the local backend needs a state folder of its own; pass "
                "home=... (or JUPYTER_SANDBOX_HOME), or Client(backend=LocalBackend())",
                param="home",
            )
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="jsbx-local-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._processes: dict[str, LocalProcess] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._processes, self.root, self._owned)

    @property
    def default_home(self) -> Path:
        """The state folder a `Client` given this backend uses when it is given no `home`."""
        return self.root / "home"

    def close(self) -> None:
        """Stop every sandbox and remove the temporary folder (if this backend made it)."""
        self._finalizer()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- folders --------------------------------------------------------------------------
    def _folder(self, sandbox_id: str) -> Path:
        return self.root / "s" / sandbox_id

    def _roots(self, sandbox_id: str) -> dict[str, Path]:
        folder = self._folder(sandbox_id)
        return {"/mnt/data": folder / "mnt" / "data", "/workspace": folder / "workspace"}

    def _deadline_dir(self, sandbox_id: str) -> Path:
        return self.root / "d" / sandbox_id

    # --- the sandbox itself -------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        """Start `sandbox-init` (and so the kernel) in the sandbox's folder."""
        if spec.network is not None:
            raise _refuse_allowlist()
        if spec.storage is None:
            self.create_storage(spec.sandbox_id)
        folder, roots = self._folder(spec.sandbox_id), self._roots(spec.sandbox_id)
        deadline_path = self._deadline_dir(spec.sandbox_id) / deadline_file.FILE_NAME
        arguments = ["--connection-file", f"{spec.channel}/connection.json"]
        arguments += ["--deadline", repr(spec.deadline), "--deadline-file", str(deadline_path)]
        with self._lock:
            if spec.sandbox_id in self._processes:
                raise ConflictError(
                    f"sandbox {spec.sandbox_id} is started already", param="container_id"
                )
            process = LocalProcess(
                arguments, environment=self._environment(spec, folder), cwd=roots["/mnt/data"]
            )
            self._processes[spec.sandbox_id] = process
        return f"local-{process.pid}"

    def _environment(self, spec: SandboxSpec, folder: Path) -> dict[str, str]:
        skills = str(folder / "mnt" / "skills")
        tmp = folder / "tmp"
        tmp.mkdir(exist_ok=True, mode=0o700)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(folder / "workspace"),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MPLCONFIGDIR": str(tmp / ".mpl"),
            "IPYTHONDIR": str(tmp / ".ipython"),
            "JUPYTER_CONFIG_DIR": str(tmp / ".jupyter"),
            "JUPYTER_DATA_DIR": str(tmp / ".jupyter"),
            "JUPYTER_RUNTIME_DIR": str(tmp / ".jupyter" / "runtime"),
            "SANDBOX_INIT_SCOPE": "descendants",
        }
        for key, value in spec.environment.items():  # skill folders are where they are here
            environment[key] = value.replace(SKILLS_ROOT, skills)
        return environment

    def _process(self, sandbox_id: str) -> LocalProcess:
        with self._lock:
            process = self._processes.get(sandbox_id)
        if process is None:
            raise NotFoundError(f"sandbox {sandbox_id}: not found in the local backend")
        return process

    def state(self, sandbox_id: str) -> SandboxState | None:
        """Running while its supervisor runs; None once removed (or never started here)."""
        with self._lock:
            process = self._processes.get(sandbox_id)
        if process is None:
            return None
        return SandboxState(f"local-{process.pid}", process.running, None)

    def oom_kills(self, sandbox_id: str) -> int | None:
        """Unknown: nothing limits a local sandbox's memory."""
        return None

    def logs(
        self,
        sandbox_id: str,
        since: float,
        *,
        tail: int = _LOG_TAIL_LINES,
        max_bytes: int = _LOG_TAIL_BYTES,
    ) -> str:
        """What the supervisor and kernel printed since `since` (empty once removed)."""
        with self._lock:
            process = self._processes.get(sandbox_id)
        return "" if process is None else process.logs(since, tail=tail, max_bytes=max_bytes)

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal the supervisor (SIGINT interrupts the kernel, SIGUSR1 restarts it)."""
        if not self._process(sandbox_id).signal(signal):
            raise ConflictError(f"sandbox {sandbox_id} is not running", param="container_id")

    def pause(self, sandbox_id: str) -> None:
        """SIGSTOP to the sandbox's process group (no cgroup freezer here)."""
        self._process(sandbox_id).stop_group(True)

    def unpause(self, sandbox_id: str) -> None:
        """SIGCONT to the sandbox's process group."""
        self._process(sandbox_id).stop_group(False)

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """The supervisor's exit code, once it exited."""
        with self._lock:
            process = self._processes.get(sandbox_id)
        return None if process is None else process.exit_code

    def remove(self, sandbox_id: str) -> None:
        """Stop the supervisor and everything it started; idempotent."""
        with self._lock:
            process = self._processes.pop(sandbox_id, None)
        if process is not None:
            process.stop()

    def running_sandboxes(self) -> set[str]:
        """The sandboxes whose supervisor runs."""
        with self._lock:
            return {i for i, process in self._processes.items() if process.running}

    def existing(self) -> list[Leftover]:
        """Started sandboxes (until removed), channel, storage and deadline folders."""
        with self._lock:
            found = [Leftover("container", i, i) for i in self._processes]
        found += [Leftover("channel", str(p), p.name) for p in _entries(self.root / "c")]
        found += [Leftover("storage", p.name, p.name) for p in _entries(self.root / "s")]
        found += [Leftover("deadline", p.name, p.name) for p in _entries(self.root / "d")]
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one object `existing` reported."""
        if leftover.kind == "container":
            self.remove(leftover.owner)
        elif leftover.kind == "channel":
            kernel.remove_socket_dir(self.root / "c" / leftover.name)
        elif leftover.kind == "storage":
            self.remove_storage(leftover.owner)
        elif leftover.kind == "deadline":
            self.remove_deadline(leftover.owner)

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        """Upload temporary files left by a killed process."""
        uploads = self._folder(sandbox_id) / "uploads"
        return sweep_uploads(uploads, older_than=STALE_UPLOAD_SECONDS) if uploads.is_dir() else []

    # --- the kernel channel ---------------------------------------------------------------
    def channel_location(self, sandbox_id: str) -> str:
        """`<root>/c/<12 characters of the id>` (a socket path must stay short)."""
        return str(self.root / "c" / sandbox_id[5:17])

    def create_channel(self, location: str, key: str) -> None:
        """A private folder with the connection file (ipc sockets `<location>/k-1` ...)."""
        folder = Path(location)
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(mode=0o700)
        info = kernel.connection_info(f"{location}/{kernel.SOCKET_PREFIX}", key)
        descriptor = os.open(
            folder / "connection.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
        with os.fdopen(descriptor, "w") as handle:
            json.dump(info, handle)

    def remove_channel(self, location: str) -> None:
        """Delete the channel folder; idempotent, never follows a link."""
        kernel.remove_socket_dir(Path(location))

    def kernel_endpoint(self, location: str, key: str) -> KernelEndpoint:
        """ipc sockets `<location>/k-1` ... `k-5`, owned by this process's user."""
        return KernelEndpoint(
            transport="ipc",
            ip=f"{location}/{kernel.SOCKET_PREFIX}",
            ports={name: index + 1 for index, name in enumerate(CHANNELS)},
            key=key,
            folder=Path(location),
            uid=os.geteuid(),
        )

    def kernel_listening(self, endpoint: KernelEndpoint) -> bool:
        """Whether the heartbeat socket accepts a connection."""
        return kernel.kernel_listening(*_ipc(endpoint))

    def connect_kernel(self, endpoint: KernelEndpoint, max_message: int) -> KernelChannel:
        """The same signed ZeroMQ connection as for a container."""
        folder, uid = _ipc(endpoint)
        return kernel.KernelConnection(folder, endpoint.key, uid, max_message)

    def reset_channel(self, endpoint: KernelEndpoint) -> None:
        """Delete the old kernel's socket files."""
        kernel.clear_sockets(_ipc(endpoint)[0])

    # --- the hard deadline ----------------------------------------------------------------
    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        """The file the supervisor rereads about once a second."""
        deadline_file.write(self._deadline_dir(sandbox_id), deadline)

    def remove_deadline(self, sandbox_id: str) -> None:
        """Delete the deadline folder; idempotent."""
        deadline_file.remove(self._deadline_dir(sandbox_id))

    # --- storage and files ----------------------------------------------------------------
    def create_storage(self, sandbox_id: str) -> StorageGrant:
        """Plain folders (no disk cap): `mnt/data`, `mnt/skills`, `workspace`, `uploads`."""
        folder = self._folder(sandbox_id)
        for part in ("mnt/data", "mnt/skills", "workspace", "uploads"):
            (folder / part).mkdir(parents=True, exist_ok=True, mode=0o700)
        return StorageGrant(sandbox_id, STORAGE_KIND, folder / "mnt" / "skills", True)

    def remove_storage(self, sandbox_id: str) -> None:
        """Delete the sandbox's folders (links in them are removed, never followed)."""
        shutil.rmtree(self._folder(sandbox_id), ignore_errors=True)

    def files(self, sandbox_id: str, storage_kind: str | None) -> SandboxFiles:
        """The host-folder channel (`O_NOFOLLOW` walks, the image's path rules)."""
        return HostFiles(
            self._roots(sandbox_id), uploads=self._folder(sandbox_id) / "uploads", owner=None
        )

    # --- network: none to control ---------------------------------------------------------
    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        """Refuse every allowlist: nothing here could enforce it."""
        raise _refuse_allowlist()

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        """Refused, as `check_network`."""
        raise _refuse_allowlist()

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Nothing to release."""

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        """Nothing to reconcile."""
        return []

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        """No proxy, no decisions."""
        return []


def _entries(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.is_dir() else []


def _ipc(endpoint: KernelEndpoint) -> tuple[Path, int]:
    if endpoint.transport != "ipc" or endpoint.folder is None or endpoint.uid is None:
        raise TypeError(f"not an ipc endpoint of this backend: {endpoint.transport}")
    return endpoint.folder, endpoint.uid
