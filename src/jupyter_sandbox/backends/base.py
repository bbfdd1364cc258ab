"""The seam: what core needs from the place a sandbox runs, as one protocol (`Backend`).

Core (`jupyter_sandbox.core`) talks to sandboxes only through a `Backend` and the small
dataclasses here; it never imports a concrete backend, a Docker object or a backend's host
path. `docker_backend.DockerBackend` is today's implementation (one hardened container per
sandbox on the local Docker engine); `jupyter_sandbox.testing` adds one without Docker.

What a backend owns, per sandbox (each acquired by `core.resources.SandboxResources`, in
this order, and released by it in reverse, idempotently):

1. the kernel channel (`create_channel`: today a private socket folder with the connection
   file; `KernelEndpoint` says how a client connects: `ipc` now, `tcp` with CurveZMQ keys
   later);
2. the hard-deadline file the sandbox's supervisor obeys (`write_deadline`);
3. storage for /mnt/data and /workspace (`create_storage`: a capped disk or volumes) and the
   folder skills are installed into;
4. for an `allowlist` sandbox, its network behind the egress proxy (`attach_network`);
5. the sandbox itself (`start`), which mounts all of the above.

`remove` and the other removals are idempotent; nothing here touches the store (records are
core's). Errors are this package's `APIError`s (`APIConnectionError` when the backend is
unreachable), never a backend library's.

Stability: other work builds on this protocol; change it additively only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from jupyter_sandbox.backends.sandbox_files import FoundFile, SandboxFiles, Scan
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = [
    "CHANNELS",
    "Backend",
    "FoundFile",
    "KernelChannel",
    "KernelEndpoint",
    "KernelMessage",
    "Leftover",
    "NetworkGrant",
    "SandboxFiles",
    "SandboxSpec",
    "SandboxState",
    "Scan",
    "StorageGrant",
]

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
"""The five Jupyter channels, in connection-file order."""


@dataclass(frozen=True)
class KernelEndpoint:
    """How a client reaches one sandbox's kernel: a Jupyter connection file's content.

    `transport="ipc"` (today): `ip` is the socket path prefix on this host (`<folder>/k`),
    `ports` the socket suffixes (`k-1` ... `k-5`); `folder` is the private socket folder and
    `uid` the sandbox user who must own each socket (a socket of anyone else is never
    dialled). `transport="tcp"`: `ip` and `ports` are an address, and the curve keys (Z85)
    authenticate and encrypt the channel (CurveZMQ); `folder` and `uid` are None.
    """

    transport: Literal["ipc", "tcp"]
    ip: str
    ports: dict[str, int]
    """Port (tcp) or socket suffix (ipc) by channel name (`shell`, `iopub`, ...)."""
    key: str
    """The HMAC key signing every message (hex)."""
    signature_scheme: str = "hmac-sha256"
    folder: Path | None = None
    """ipc: the host folder holding the sockets."""
    uid: int | None = None
    """ipc: the sandbox user that must own each socket."""
    curve_server_key: str | None = None
    """tcp: the kernel's public CurveZMQ key (Z85), which the client pins."""
    curve_public_key: str | None = None
    """tcp: the client's own CurveZMQ key pair (Z85)."""
    curve_secret_key: str | None = field(default=None, repr=False)

    def connection_info(self) -> dict[str, Any]:
        """A Jupyter connection dict (without the curve secret key)."""
        info: dict[str, Any] = {
            "transport": self.transport,
            "ip": self.ip,
            **{f"{name}_port": port for name, port in self.ports.items()},
            "key": self.key,
            "signature_scheme": self.signature_scheme,
            "kernel_name": "python3",
        }
        if self.curve_server_key is not None:
            info["curve_server_key"] = self.curve_server_key
        return info


@dataclass
class KernelMessage:
    """One message received from a kernel channel (`backends.kernel.Message`)."""

    channel: str
    msg_type: str
    parent_id: str | None
    content: dict[str, Any]


class KernelChannel(Protocol):
    """An open connection to one kernel (`backends.kernel.KernelConnection` is one).

    Every message is verified (HMAC) before it is returned; a message that cannot be read
    arrives as msg_type `_malformed`, a dropped and reopened channel as `_connection_dropped`
    (`backends.kernel.MALFORMED`, `DROPPED`).
    """

    resubscribed: bool
    """Its iopub socket was reopened: until the kernel is heard there again (`wait_ready`),
    outputs may be lost while the new subscription travels. The caller resets it."""

    def connect(self, deadline: float, check: Callable[[], None] | None = None) -> None:
        """Connect every channel by `deadline` (monotonic); `check` runs about once a second
        and raises to give up early (the sandbox stopped)."""
        ...

    def wait_ready(
        self, deadline: float, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Wait until the kernel answers on shell and iopub; return its kernel_info_reply
        content."""
        ...

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request; return its msg_id."""
        ...

    def receive(self, timeout: float) -> Iterator[KernelMessage]:
        """Messages arriving within `timeout` seconds."""
        ...

    def heartbeat(self, timeout: float) -> bool:
        """Whether the kernel answers a heartbeat within `timeout`."""
        ...

    def close(self) -> None:
        """Close every socket; idempotent."""
        ...


@dataclass(frozen=True)
class StorageGrant:
    """A sandbox's storage for /mnt/data and /workspace, made by `Backend.create_storage`."""

    sandbox_id: str
    kind: str
    """How the files live (kept in the record, given back to `Backend.files`): Docker's
    `loop` (a capped disk image on this host) or `volume` (engine volumes, no cap)."""
    skills_folder: Path
    """A folder core installs skills into before start; the sandbox sees it read-only at
    /mnt/skills (core may write here, never read back anything the sandbox wrote)."""
    files_before_start: bool
    """Whether `Backend.files` works before `start` (a host disk) or only after (engine)."""


@dataclass(frozen=True)
class NetworkGrant:
    """An allowlist sandbox's network, made by `Backend.attach_network`."""

    sandbox_id: str
    environment: dict[str, str]
    """Variables the kernel gets (proxy URLs, secret placeholders, CA bundle paths)."""
    handle: object = None
    """Backend-private: what `start` needs to plug the sandbox in (core never reads it)."""


@dataclass(frozen=True)
class SandboxSpec:
    """Everything `Backend.start` needs to start one hardened sandbox."""

    sandbox_id: str
    image: str
    memory_bytes: int
    deadline: float
    """Unix time at which the sandbox stops itself (hard lifetime); `write_deadline` moves it."""
    labels: dict[str, str]
    """Labels on every object the backend makes (reconcile finds orphans by them)."""
    channel: str
    """The channel location from `channel_location` (already made by `create_channel`)."""
    environment: dict[str, str] = field(default_factory=dict)
    storage: StorageGrant | None = None
    """None: the backend's own default storage (Docker: volumes)."""
    mount_skills: bool = False
    """Mount `storage.skills_folder` read-only at /mnt/skills."""
    network: NetworkGrant | None = None
    """None: no network at all (`disabled`)."""


@dataclass(frozen=True)
class SandboxState:
    """What the backend says about a sandbox."""

    docker_id: str
    """The backend's own id of the sandbox (Docker: the container id)."""
    running: bool
    oom_kills: int | None
    """The cgroup's oom_kill counter, when the host can read it."""
    node: str | None = None
    """Which machine runs it, for a backend with several (Swarm: the node's hostname)."""
    reason: str | None = None
    """Why it is not running, when the backend knows better than an exit code (its node is
    down, its task failed): core records it as the sandbox's `error`."""


@dataclass(frozen=True)
class Leftover:
    """One object the backend holds for some sandbox (reconcile removes the orphans)."""

    kind: str
    """`container`, `volume`, `network`, `channel`, `storage` or `deadline`."""
    owner: str
    """The sandbox id, or for `channel` the channel location (as in the record)."""
    name: str
    """What to report (a name or folder)."""


@runtime_checkable
class Backend(Protocol):
    """Where sandboxes run: start and inspect them, their kernel channel, files, storage,
    network and deadline; idempotent removals; the leftovers reconcile looks for."""

    name: str
    """Short name (`docker`, `local`), as `Client(backend=...)` accepts it."""

    # --- the sandbox itself -------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        """Start the sandbox; return the backend's id for it. Fails closed: any limit the
        backend cannot apply is an error, and a failed start leaves nothing behind."""
        ...

    def state(self, sandbox_id: str) -> SandboxState | None:
        """The sandbox's state, or None once it is gone."""
        ...

    def oom_kills(self, sandbox_id: str) -> int | None:
        """Cumulative out-of-memory kills in the sandbox, if the host can read them."""
        ...

    def logs(self, sandbox_id: str, since: float, *, tail: int = ..., max_bytes: int = ...) -> str:
        """The supervisor's and kernel's own output since `since` (epoch seconds): the last
        `tail` lines, at most `max_bytes` (empty once gone)."""
        ...

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal the sandbox's supervisor (SIGINT interrupts the kernel, SIGUSR1 restarts it)."""
        ...

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """How the sandbox last exited after `since` (epoch seconds), if known."""
        ...

    def pause(self, sandbox_id: str) -> None:
        """Freeze every process of the sandbox, memory kept (idle pause); idempotent."""
        ...

    def unpause(self, sandbox_id: str) -> None:
        """Thaw a paused sandbox; idempotent (a running one is left alone)."""
        ...

    def remove(self, sandbox_id: str) -> None:
        """Remove the sandbox and every object `start` made for it; idempotent."""
        ...

    def running_sandboxes(self) -> set[str]:
        """Ids of this store's sandboxes that are running (one call)."""
        ...

    def existing(self) -> list[Leftover]:
        """Every object this backend holds for this store's sandboxes (reconcile)."""
        ...

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one object `existing` reported; idempotent."""
        ...

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        """Remove stale temporary files (uploads of a killed process) of a live sandbox."""
        ...

    # --- the kernel channel ---------------------------------------------------------------
    def channel_location(self, sandbox_id: str) -> str:
        """Where the sandbox's channel will live (stored in its record; no side effect)."""
        ...

    def create_channel(self, location: str, key: str) -> None:
        """Make the channel at `location` with HMAC `key` (ipc: the private socket folder
        and its connection file). Fails if it exists."""
        ...

    def remove_channel(self, location: str) -> None:
        """Remove the channel; idempotent, never follows a link the sandbox planted."""
        ...

    def kernel_endpoint(self, location: str, key: str) -> KernelEndpoint:
        """How a client on this host connects to the kernel."""
        ...

    def kernel_listening(self, endpoint: KernelEndpoint) -> bool:
        """A cheap sign of life (the heartbeat socket accepts a connection) before asking
        `state`; False does not mean dead."""
        ...

    def connect_kernel(self, endpoint: KernelEndpoint, max_message: int) -> KernelChannel:
        """An unconnected channel to the kernel (messages above `max_message` bytes are
        dropped as malformed)."""
        ...

    def reset_channel(self, endpoint: KernelEndpoint) -> None:
        """Before a restart: forget the old kernel's sockets, so new ones are the new one's."""
        ...

    # --- the hard deadline ----------------------------------------------------------------
    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        """Set (or move: a warm-pool claim) the Unix time the sandbox stops itself."""
        ...

    def remove_deadline(self, sandbox_id: str) -> None:
        """Forget the deadline file; idempotent."""
        ...

    # --- storage and files ----------------------------------------------------------------
    def create_storage(self, sandbox_id: str) -> StorageGrant:
        """Make the sandbox's storage (the capped disk when the host allows)."""
        ...

    def remove_storage(self, sandbox_id: str) -> None:
        """Unmount and delete the sandbox's storage; idempotent."""
        ...

    def files(self, sandbox_id: str, storage_kind: str | None) -> SandboxFiles:
        """Streaming access to the sandbox's /mnt/data and /workspace. Path rules are
        enforced here (`types.container_file.check_path`), and a link the sandbox planted
        is refused, never followed (O_NOFOLLOW walks, or resolution inside the sandbox)."""
        ...

    # --- network (allowlist sandboxes) ----------------------------------------------------
    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        """Refuse (BadRequestError naming `network_policy...`) what this backend cannot
        enforce; the operator's domain ceiling is checked by core."""
        ...

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        """Give the sandbox its network behind the egress proxy (started if needed).

        Raises:
            EgressUnavailableError: the proxy cannot run (the create must fail).
        """
        ...

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Forget the sandbox's allowlist (and secrets); remove the proxy when `needed()`
        (the live allowlist sandboxes, asked under the backend's lock) is empty. Idempotent."""
        ...

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        """Proxy up while `needed()` is not empty, gone otherwise; stale lists dropped.
        Returns what was done."""
        ...

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        """Every egress decision about the sandbox, oldest first."""
        ...

    def close(self) -> None:
        """Release the backend's own connections (sandboxes keep running)."""
        ...
