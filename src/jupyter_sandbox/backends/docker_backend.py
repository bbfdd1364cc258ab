"""`DockerBackend`: the `Backend` of one Docker engine (one hardened container per
sandbox), built from the runtime, the disks, the egress networks and the kernel channel.

Everything host-specific lives here and below: the socket folder (`sockets_root`), the
deadline folder (`deadlines_root`), the storage folder (`home/sandboxes`), container and
network names. Core sees only `backends.base`.

A remote engine (`engine_location`; `auto`: any engine not on a local Unix socket) keeps the
same seam: the kernel channel is tcp through an exec tunnel (`kernel_tunnel`), the connection
file, deadline and skills go onto volumes through the archive API (`runtime.remote`), storage
is volumes (no disk cap), and allowlist sandboxes get their egress proxy on that engine, its
files on the engine's volumes (`remote_egress`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends import deadline_file, kernel, kernel_tcp
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
from jupyter_sandbox.backends.channel_master import channel_master
from jupyter_sandbox.backends.disk import Disks, SandboxStorage, remove_folder
from jupyter_sandbox.backends.egress import EgressProxy
from jupyter_sandbox.backends.egress_network import EgressNetworks, NetworkAttachment
from jupyter_sandbox.backends.engine_files import EngineFiles
from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.host_scan import sweep_uploads
from jupyter_sandbox.backends.kernel_tunnel import TunnelKernelConnection
from jupyter_sandbox.backends.remote_egress import remote_egress
from jupyter_sandbox.backends.runtime.base import ContainerSpec, SandboxNetworkSpec
from jupyter_sandbox.backends.runtime.docker import (
    KERNEL_MOUNT,
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    SANDBOX_UID,
    DockerRuntime,
    container_name,
)
from jupyter_sandbox.backends.sandbox_files import STALE_UPLOAD_SECONDS
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

_ENGINE_KINDS = ("container", "volume", "network")


class DockerBackend:
    """Sandboxes as hardened containers on the Docker engine named by the environment.

    Args:
        settings: the store's settings (the `runtime` setting picks the OCI runtime).
        engine: an open docker client to use (default: one from DOCKER_HOST; closed by
            `close` only when made here).
    """

    name = "docker"

    def __init__(self, settings: Settings, engine: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self._channel_master: bytes | None = None
        self.runtime = DockerRuntime(settings, engine)
        self.engine = self.runtime.engine
        try:
            self.is_remote = self.runtime.is_remote
            self.disks = Disks(settings, is_remote=self.is_remote)
        except BaseException:
            self.close()
            raise
        self.egress: EgressNetworks = (
            remote_egress(settings, self.engine)
            if self.is_remote
            else EgressNetworks(settings, EgressProxy(settings, self.engine))
        )

    # --- the sandbox itself -------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> str:
        """Start the container; a failure removes what was made."""
        return self.runtime.start(
            ContainerSpec(
                container_id=spec.sandbox_id,
                image=spec.image,
                memory_bytes=spec.memory_bytes,
                socket_dir=Path(spec.channel),
                deadline=spec.deadline,
                labels=spec.labels,
                environment=spec.environment,
                host_dirs=self._host_dirs(spec.storage),
                skills_dir=(
                    str(spec.storage.skills_folder)
                    if spec.storage is not None and spec.mount_skills
                    else None
                ),
                network=_network_spec(spec.network),
                deadline_dir=self._deadline_dir(spec.sandbox_id),
            )
        )

    def _host_dirs(self, storage: StorageGrant | None) -> dict[str, str] | None:
        if storage is None or storage.kind != "loop":
            return None
        dirs = self._storage(storage.sandbox_id).host_dirs()
        assert dirs is not None  # a loop storage has host folders
        return {path: str(folder) for path, folder in dirs.items()}

    def state(self, sandbox_id: str) -> SandboxState | None:
        """The container's state, or None once it is gone."""
        return self.runtime.state(sandbox_id)

    def oom_kills(self, sandbox_id: str) -> int | None:
        """The container cgroup's oom_kill counter."""
        return self.runtime.oom_kills(sandbox_id)

    def logs(
        self,
        sandbox_id: str,
        since: float,
        *,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_TAIL_BYTES,
    ) -> str:
        """The container's capped log since `since`."""
        return self.runtime.logs(sandbox_id, since, tail=tail, max_bytes=max_bytes)

    def signal(self, sandbox_id: str, signal: str) -> None:
        """Signal PID 1 (sandbox-init)."""
        self.runtime.signal(sandbox_id, signal)

    def pause(self, sandbox_id: str) -> None:
        """Docker pause: the cgroup freezer."""
        self.runtime.pause(sandbox_id)

    def unpause(self, sandbox_id: str) -> None:
        """Docker unpause."""
        self.runtime.unpause(sandbox_id)

    def exit_code(self, sandbox_id: str, since: float) -> int | None:
        """The container's last exit code after `since`, from the engine's events."""
        return self.runtime.exit_code(sandbox_id, since)

    def remove(self, sandbox_id: str) -> None:
        """Remove the container, its volumes and its network; idempotent."""
        self.runtime.remove(sandbox_id)

    def running_sandboxes(self) -> set[str]:
        """This store's sandboxes whose container runs."""
        return self.runtime.running(self.settings.store_id)

    def existing(self) -> list[Leftover]:
        """Labelled engine objects (one entry per sandbox: its container if it has one),
        socket folders, storage folders and deadline folders of this store."""
        found: list[Leftover] = []
        engine: dict[str, str] = {}
        labelled = self.runtime.labelled(self.settings.store_id)
        for kind in _ENGINE_KINDS:
            for owner in labelled.get(kind, []):
                if owner:
                    engine.setdefault(owner, kind)
        found += [Leftover(kind, owner, owner) for owner, kind in engine.items()]
        found += [
            Leftover("channel", str(entry), entry.name) for entry in _entries(self._sockets_root)
        ]
        found += [Leftover("storage", f.name, f.name) for f in self.disks.entries()]
        found += [
            Leftover("deadline", f.name, f.name) for f in _entries(self.settings.deadlines_root)
        ]
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one object `existing` reported (an engine kind: all of the sandbox's)."""
        if leftover.kind in _ENGINE_KINDS:
            self.runtime.remove(leftover.owner)
        elif leftover.kind == "channel":
            kernel.remove_socket_dir(self._sockets_root / leftover.name)
        elif leftover.kind == "storage":
            remove_folder(self.disks.folder(leftover.owner))
        elif leftover.kind == "deadline":
            deadline_file.remove(self._deadline_dir(leftover.owner))

    def sweep_stale(self, sandbox_id: str) -> list[str]:
        """Upload temporary files of a killed process, on a live sandbox's disk."""
        uploads = SandboxStorage(self.disks.folder(sandbox_id), True).uploads
        return sweep_uploads(uploads, older_than=STALE_UPLOAD_SECONDS)

    # --- the kernel channel ---------------------------------------------------------------
    @property
    def _sockets_root(self) -> Path:
        return self.settings.sockets_root

    @property
    def channel(self) -> str:
        """The channel new sandboxes get: `kernel_channel`, where `auto` is tcp for runsc
        (gVisor binds ipc sockets in its own file system view, which the host never sees)
        and for a remote engine (an ipc socket is a file on the engine's machine)."""
        chosen = self.settings.kernel_channel
        if chosen == "auto":
            return "tcp" if self.settings.runtime == "runsc" or self.is_remote else "ipc"
        if chosen == "ipc" and self.is_remote:
            raise BadRequestError(
                "Invalid kernel_channel: ipc sockets cannot reach a remote Docker engine; "
                "use 'tcp' or 'auto'",
                param="kernel_channel",
            )
        return chosen

    def channel_location(self, sandbox_id: str) -> str:
        """The sandbox's private kernel folder (its connection file; ipc: its sockets):
        `<sockets_root>/<12 characters of the id>` for ipc (a socket path must stay short),
        `<sockets_root>/tcp-<id>` for the encrypted tcp channel. The name says which channel
        a sandbox was made with, whatever the settings of the process that reads it."""
        if self.channel == "tcp":
            return str(self._sockets_root / f"{_TCP_PREFIX}{sandbox_id}")
        return str(self._sockets_root / sandbox_id[5:17])

    def create_channel(self, location: str, key: str) -> None:
        """The private folder (a 1 MiB tmpfs as root) and its connection file; for tcp the
        file holds the kernel's Curve keys (fails closed without Curve support)."""
        sandbox_id = _tcp_sandbox(location)
        info = None
        if sandbox_id is not None:
            keys = self._curve_keys(sandbox_id)
            info = kernel_tcp.tcp_connection_info(key, keys)
        kernel.create_socket_dir(Path(location), key, KERNEL_MOUNT, SANDBOX_UID, info)

    def remove_channel(self, location: str) -> None:
        """Unmount and delete the folder; idempotent."""
        kernel.remove_socket_dir(Path(location))

    def kernel_endpoint(self, location: str, key: str) -> KernelEndpoint:
        """ipc: sockets `<location>/k-1` ... `k-5`, owned by the sandbox user; tcp: the
        kernel's loopback ports inside the sandbox's own network namespace, with Curve keys."""
        sandbox_id = _tcp_sandbox(location)
        if sandbox_id is None:
            return KernelEndpoint(
                transport="ipc",
                ip=f"{location}/{kernel.SOCKET_PREFIX}",
                ports={name: index + 1 for index, name in enumerate(CHANNELS)},
                key=key,
                folder=Path(location),
                uid=SANDBOX_UID,
            )
        keys = self._curve_keys(sandbox_id)
        return KernelEndpoint(
            transport="tcp",
            ip=kernel_tcp.LOOPBACK,
            ports=dict(kernel_tcp.TCP_PORTS),
            key=key,
            folder=Path(location),
            curve_server_key=keys.server_public.decode(),
            curve_public_key=keys.client_public.decode(),
            curve_secret_key=keys.client_secret.decode(),
        )

    def kernel_listening(self, endpoint: KernelEndpoint) -> bool:
        """ipc: whether the heartbeat socket accepts a connection; tcp: whether the sandbox
        runs (its loopback is reachable only from inside; `is_running` asks the engine only
        the first time on a local engine: this runs before every execute)."""
        if endpoint.transport == "tcp":
            sandbox_id = _tcp_sandbox(str(endpoint.folder))
            return sandbox_id is not None and self.runtime.is_running(sandbox_id)
        return kernel.kernel_listening(*_ipc(endpoint))

    def connect_kernel(self, endpoint: KernelEndpoint, max_message: int) -> KernelChannel:
        """ipc: a ZeroMQ connection over the sockets (each `lstat`ed before it is dialled);
        tcp: CurveZMQ from inside the sandbox's network namespace (root, local engine), or
        through an exec tunnel (`kernel_tunnel`: a remote engine's namespace is out of reach)."""
        if endpoint.transport == "tcp":
            sandbox_id = _tcp_sandbox(str(endpoint.folder))
            if sandbox_id is None:
                raise TypeError("not a tcp endpoint of this backend")
            keys = self._curve_keys(sandbox_id)
            if self.is_remote:
                tunnel = self.runtime.open_tunnel(sandbox_id)
                return TunnelKernelConnection(tunnel, endpoint.key, keys, max_message)
            netns = self.runtime.kernel_netns(sandbox_id)
            return kernel_tcp.TcpKernelConnection(netns, endpoint.key, keys, max_message)
        folder, uid = _ipc(endpoint)
        return kernel.KernelConnection(folder, endpoint.key, uid, max_message)

    def reset_channel(self, endpoint: KernelEndpoint) -> None:
        """ipc: delete the old kernel's socket files (tcp: nothing to delete)."""
        if endpoint.transport == "ipc":
            kernel.clear_sockets(_ipc(endpoint)[0])

    def _curve_keys(self, sandbox_id: str) -> kernel_tcp.CurveKeys:
        kernel_tcp.require_curve()
        if self._channel_master is None:  # the store's for a shared store: any server's
            self._channel_master = channel_master(self.settings)
        return kernel_tcp.sandbox_keys(self._channel_master, sandbox_id)

    # --- the hard deadline ----------------------------------------------------------------
    def _deadline_dir(self, sandbox_id: str) -> Path:
        return self.settings.deadlines_root / sandbox_id

    def write_deadline(self, sandbox_id: str, deadline: float) -> None:
        """Atomically replace the deadline file the supervisor rereads (on a remote engine,
        also in the sandbox's deadline volume through the archive API, once it exists:
        `start` puts the spec's deadline there before the container starts)."""
        deadline_file.write(self._deadline_dir(sandbox_id), deadline)
        if self.is_remote and self.runtime.state(sandbox_id) is not None:
            self.runtime.put_deadline(sandbox_id, deadline)

    def remove_deadline(self, sandbox_id: str) -> None:
        """Delete the deadline folder; idempotent."""
        deadline_file.remove(self._deadline_dir(sandbox_id))

    # --- storage and files ----------------------------------------------------------------
    def _storage(self, sandbox_id: str) -> SandboxStorage:
        return SandboxStorage(self.disks.folder(sandbox_id), True)

    def create_storage(self, sandbox_id: str) -> StorageGrant:
        """The capped disk image (loop mode) or a folder for skills beside volumes."""
        storage = self.disks.create(sandbox_id)
        return StorageGrant(
            sandbox_id=sandbox_id,
            kind="loop" if storage.is_capped else "volume",
            skills_folder=storage.skills,
            files_before_start=storage.is_capped,
        )

    def remove_storage(self, sandbox_id: str) -> None:
        """Unmount and delete the storage folder; idempotent."""
        self.disks.remove(sandbox_id)

    def files(self, sandbox_id: str, storage_kind: str | None) -> SandboxFiles:
        """`HostFiles` on the mounted disk (loop), else `EngineFiles` (archive API)."""
        if storage_kind == "loop":
            storage = self._storage(sandbox_id)
            roots = storage.host_dirs()
            assert roots is not None
            return HostFiles(roots, uploads=storage.uploads, disk_limit=self.settings.disk_limit)
        return EngineFiles(
            self.engine,
            container_name(sandbox_id),
            spool=self.settings.home / "blobs" / "tmp",
        )

    # --- network ------------------------------------------------------------------------
    def check_network(self, policy: NetworkPolicyAllowlist) -> None:
        """Domain secrets need root on a local engine (squid's files must be its own)."""
        self.egress.check(policy)

    def attach_network(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkGrant:
        """The sandbox's own internal network, with the proxy on it."""
        attachment = self.egress.attach(sandbox_id, policy, labels, deadline)
        return NetworkGrant(sandbox_id, attachment.environment, attachment)

    def release_network(self, sandbox_id: str, needed: Callable[[], set[str]]) -> None:
        """Drop the sandbox's list and secrets; the proxy goes with the last one."""
        self.egress.release(sandbox_id, needed)

    def reconcile_network(self, needed: Callable[[], set[str]]) -> list[str]:
        """Proxy up while needed, gone otherwise."""
        return self.egress.reconcile(needed)

    def egress_log(self, sandbox_id: str) -> list[EgressDecision]:
        """The proxy's decisions about the sandbox."""
        return self.egress.log(sandbox_id)

    def close(self) -> None:
        """Close the engine connection if this backend opened it."""
        if self._owns_engine:
            self.engine.close()


def _network_spec(grant: NetworkGrant | None) -> SandboxNetworkSpec | None:
    if grant is None:
        return None
    attachment = grant.handle
    if not isinstance(attachment, NetworkAttachment):
        raise TypeError("a NetworkGrant not made by this backend")
    return SandboxNetworkSpec(
        name=attachment.network.name,
        address=attachment.network.sandbox_ip,
        dns=attachment.network.proxy_ip,
        resolv_conf=attachment.resolv_conf,
        ca_bundle=attachment.ca_bundle,
    )


_TCP_PREFIX = "tcp-"


def _tcp_sandbox(location: str) -> str | None:
    """The sandbox id of a tcp channel's folder, or None for an ipc one."""
    name = Path(location).name
    return name[len(_TCP_PREFIX) :] if name.startswith(_TCP_PREFIX) else None


def _ipc(endpoint: KernelEndpoint) -> tuple[Path, int]:
    """The socket folder and owner of an ipc endpoint (this backend makes no other kind)."""
    if endpoint.transport != "ipc" or endpoint.folder is None or endpoint.uid is None:
        raise TypeError(f"not an ipc endpoint of this backend: {endpoint.transport}")
    return endpoint.folder, endpoint.uid


def _entries(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.is_dir() else []
