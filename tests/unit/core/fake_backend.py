"""An in-memory `Backend` for core unit tests: no Docker, no kernel, no process.

Sandboxes are dictionary entries; their kernel is a `FakeChannel` that answers every
execute_request at once (`FakeBackend.script` decides the messages). Files live in plain
folders under `root` (the real `HostFiles`). Any method can be made to fail once
(`fail_next`), and every call is recorded (`calls`), so core's rollback and teardown can be
checked step by step.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_sandbox._exceptions import APITimeoutError, NotFoundError
from jupyter_sandbox.backends.base import (
    CHANNELS,
    KernelChannel,
    KernelEndpoint,
    KernelMessage,
    Leftover,
    NetworkGrant,
    SandboxFiles,
    SandboxSpec,
    SandboxState,
    StorageGrant,
)
from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.host_scan import sweep_uploads
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

Script = Callable[[str, str], list[KernelMessage]]
"""(code, msg_id) -> the messages the fake kernel sends back."""


def ok_script(code: str, msg_id: str) -> list[KernelMessage]:
    """busy, the code echoed on stdout, an ok reply, idle."""
    return [
        KernelMessage("iopub", "status", msg_id, {"execution_state": "busy"}),
        KernelMessage("iopub", "stream", msg_id, {"name": "stdout", "text": code}),
        KernelMessage("shell", "execute_reply", msg_id, {"status": "ok", "execution_count": 1}),
        KernelMessage("iopub", "status", msg_id, {"execution_state": "idle"}),
    ]


@dataclass
class FakeSandbox:
    """One started sandbox."""

    spec: SandboxSpec
    running: bool = True
    kernel_up: bool = True
    """Whether its kernel answers (False: connect waits, checking, until its deadline)."""
    exit_code: int | None = None
    oom_kills: int = 0
    signals: list[str] = field(default_factory=list)
    log: list[tuple[float, str]] = field(default_factory=list)


class FakeChannel:
    """A kernel connection that answers from the backend's script."""

    def __init__(self, backend: FakeBackend, sandbox_id: str) -> None:
        self._backend = backend
        self._sandbox_id = sandbox_id
        self._queue: list[KernelMessage] = []
        self._ids = itertools.count()
        self.closed = False
        self.resubscribed = False

    def _sandbox(self) -> FakeSandbox | None:
        return self._backend.sandboxes.get(self._sandbox_id)

    def connect(self, deadline: float, check: Callable[[], None] | None = None) -> None:
        self._backend.called("connect", self._sandbox_id)
        while True:
            sandbox = self._sandbox()
            if sandbox is not None and sandbox.running and sandbox.kernel_up:
                return
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise APITimeoutError("the kernel did not open its shell socket in time")
            time.sleep(0.01)

    def wait_ready(
        self, deadline: float, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        self._backend.called("wait_ready", self._sandbox_id)
        return {"status": "ok", "implementation": "fake"}

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = f"{self._sandbox_id}-{next(self._ids)}"
        if msg_type == "execute_request":
            self._backend.executed.append(str(content["code"]))
            self._queue += self._backend.script(str(content["code"]), msg_id)
        return msg_id

    def receive(self, timeout: float) -> Iterator[KernelMessage]:
        if not self._queue:
            time.sleep(min(timeout, 0.01))
        while self._queue:
            yield self._queue.pop(0)

    def heartbeat(self, timeout: float) -> bool:
        sandbox = self._sandbox()
        return sandbox is not None and sandbox.running and sandbox.kernel_up

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """Everything core asks of a backend, in memory (see the module docstring)."""

    name = "fake"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.channels: dict[str, str] = {}  # location -> key
        self.deadlines: dict[str, float] = {}
        self.storage: set[str] = set()
        self.networks: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, BaseException] = {}
        self.failure_subjects: dict[str, str] = {}
        self.executed: list[str] = []
        self.script: Script = ok_script
        self.network_reconciles = 0
        self.files_before_start = True
        """False: like Docker volumes, files can be copied in only once the sandbox runs."""

    # --- test controls --------------------------------------------------------------------
    def fail_next(self, method: str, error: BaseException, subject: str | None = None) -> None:
        """Make the next call of `method` (about `subject`, if given) raise `error`."""
        self.failures[method] = error
        if subject is not None:
            self.failure_subjects[method] = subject

    def called(self, method: str, subject: str) -> None:
        self.calls.append((method, subject))
        wanted = self.failure_subjects.get(method)
        if wanted is not None and wanted != subject:
            return
        error = self.failures.pop(method, None)
        self.failure_subjects.pop(method, None)
        if error is not None:
            raise error

    def holds(self) -> dict[str, list[str]]:
        """What is left, by kind (empty when everything was released)."""
        held = {
            "sandbox": sorted(self.sandboxes),
            "channel": sorted(self.channels),
            "deadline": sorted(self.deadlines),
            "storage": sorted(self.storage),
            "network": sorted(self.networks),
        }
        return {kind: items for kind, items in held.items() if items}

    def stop(self, sandbox_id: str, exit_code: int = 137) -> None:
        """The sandbox stops by itself (killed, or its deadline)."""
        sandbox = self.sandboxes[sandbox_id]
        sandbox.running, sandbox.exit_code = False, exit_code

    # --- the sandbox itself ---------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        self.called("start", spec.sandbox_id)
        self.sandboxes[spec.sandbox_id] = FakeSandbox(spec)
        self.sandboxes[spec.sandbox_id].log.append((time.time(), "sandbox-init: kernel started"))
        return f"fake-{spec.sandbox_id[5:17]}"

    def state(self, sandbox_id: str) -> SandboxState | None:
        self.called("state", sandbox_id)
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return None
        return SandboxState(f"fake-{sandbox_id[5:17]}", sandbox.running, sandbox.oom_kills)

    def oom_kills(self, sandbox_id: str) -> int | None:
        sandbox = self.sandboxes.get(sandbox_id)
        return None if sandbox is None else sandbox.oom_kills

    def logs(self, sandbox_id: str, since: float, *, tail: int = 20, max_bytes: int = 2000) -> str:
        sandbox = self.sandboxes.get(sandbox_id)
        lines = [text for at, text in (sandbox.log if sandbox else []) if at >= since]
        return "".join(f"{line}\n" for line in lines[-tail:])[-max_bytes:]

    def pause(self, sandbox_id: str) -> None:
        self.called("pause", sandbox_id)

    def unpause(self, sandbox_id: str) -> None:
        self.called("unpause", sandbox_id)

    def signal(self, sandbox_id: str, signal: str) -> None:
        self.called("signal", f"{sandbox_id} {signal}")
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise NotFoundError(f"signalling sandbox {sandbox_id}: not found")
        sandbox.signals.append(signal)
        if signal == "SIGUSR1":
            sandbox.log.append((time.time(), "sandbox-init: kernel started"))

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        sandbox = self.sandboxes.get(sandbox_id)
        return None if sandbox is None else sandbox.exit_code

    def remove(self, sandbox_id: str) -> None:
        self.called("remove", sandbox_id)
        self.sandboxes.pop(sandbox_id, None)

    def running_sandboxes(self) -> set[str]:
        return {i for i, sandbox in self.sandboxes.items() if sandbox.running}

    def existing(self) -> list[Leftover]:
        found = [Leftover("container", i, i) for i in self.sandboxes]
        found += [Leftover("channel", location, Path(location).name) for location in self.channels]
        found += [Leftover("storage", i, i) for i in self.storage]
        found += [Leftover("deadline", i, i) for i in self.deadlines]
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        self.called("remove_leftover", f"{leftover.kind} {leftover.owner}")
        if leftover.kind == "container":
            self.remove(leftover.owner)
        elif leftover.kind == "channel":
            self.remove_channel(leftover.owner)
        elif leftover.kind == "storage":
            self.remove_storage(leftover.owner)
        elif leftover.kind == "deadline":
            self.remove_deadline(leftover.owner)

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        uploads = self._folder(sandbox_id) / "uploads"
        return sweep_uploads(uploads, older_than=600) if uploads.is_dir() else []

    # --- the kernel channel ---------------------------------------------------------------
    def channel_location(self, sandbox_id: str) -> str:
        return str(self.root / "c" / sandbox_id[5:17])

    def create_channel(self, location: str, key: str) -> None:
        self.called("create_channel", location)
        if location in self.channels:
            raise FileExistsError(location)
        self.channels[location] = key

    def remove_channel(self, location: str) -> None:
        self.called("remove_channel", location)
        self.channels.pop(location, None)

    def kernel_endpoint(self, location: str, key: str) -> KernelEndpoint:
        return KernelEndpoint(
            transport="ipc",
            ip=f"{location}/k",
            ports={name: index + 1 for index, name in enumerate(CHANNELS)},
            key=key,
            folder=Path(location),
            uid=0,
        )

    def _owner(self, endpoint: KernelEndpoint) -> str:
        for sandbox_id, sandbox in self.sandboxes.items():
            if sandbox.spec.channel == str(endpoint.folder):
                return sandbox_id
        return f"cntr_{endpoint.folder}"  # no sandbox (it never started, or was removed)

    def kernel_listening(self, endpoint: KernelEndpoint) -> bool:
        sandbox = self.sandboxes.get(self._owner(endpoint))
        return sandbox is not None and sandbox.running and sandbox.kernel_up

    def connect_kernel(self, endpoint: KernelEndpoint, max_message: int) -> KernelChannel:
        return FakeChannel(self, self._owner(endpoint))

    def reset_channel(self, endpoint: KernelEndpoint) -> None:
        self.called("reset_channel", str(endpoint.folder))

    # --- the hard deadline ----------------------------------------------------------------
    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        self.called("write_deadline", sandbox_id)
        self.deadlines[sandbox_id] = deadline

    def remove_deadline(self, sandbox_id: str) -> None:
        self.called("remove_deadline", sandbox_id)
        self.deadlines.pop(sandbox_id, None)

    # --- storage and files ----------------------------------------------------------------
    def _folder(self, sandbox_id: str) -> Path:
        return self.root / "s" / sandbox_id

    def create_storage(self, sandbox_id: str) -> StorageGrant:
        self.called("create_storage", sandbox_id)
        folder = self._folder(sandbox_id)
        for part in ("data", "workspace", "skills", "uploads"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        self.storage.add(sandbox_id)
        return StorageGrant(sandbox_id, "fake", folder / "skills", self.files_before_start)

    def remove_storage(self, sandbox_id: str) -> None:
        self.called("remove_storage", sandbox_id)
        shutil.rmtree(self._folder(sandbox_id), ignore_errors=True)
        self.storage.discard(sandbox_id)

    def files(self, sandbox_id: str, storage_kind: str | None) -> SandboxFiles:
        self.called("files", sandbox_id)
        folder = self._folder(sandbox_id)
        roots = {"/mnt/data": folder / "data", "/workspace": folder / "workspace"}
        return HostFiles(roots, uploads=folder / "uploads", owner=None)

    # --- network --------------------------------------------------------------------------
    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        self.called("check_network", ",".join(policy.allowed_domains))

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        self.called("attach_network", sandbox_id)
        self.networks.add(sandbox_id)
        return NetworkGrant(sandbox_id, {"HTTPS_PROXY": "http://proxy:3128"})

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        self.called("release_network", sandbox_id)
        self.networks.discard(sandbox_id)

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        self.network_reconciles += 1
        return ["proxy kept"] if needed() else []

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        return []

    def close(self) -> None:
        self.called("close", "")
