"""The Docker runtime: one hardened container per sandbox, through the docker SDK."""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Mount, Ulimit

from jupyter_sandbox._exceptions import (
    APIError,
    InternalServerError,
    NotFoundError,
)
from jupyter_sandbox.backends import deadline_file, gvisor, labels
from jupyter_sandbox.backends.base import SandboxState
from jupyter_sandbox.backends.kernel_tcp import TCP_PORTS
from jupyter_sandbox.backends.kernel_tunnel import ExecTunnel
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.base import ContainerSpec, SandboxNetworkSpec
from jupyter_sandbox.backends.runtime.engine import ImageNotBuiltError as ImageNotBuiltError
from jupyter_sandbox.backends.runtime.engine import connect_engine as connect_engine
from jupyter_sandbox.backends.runtime.engine import docker_errors as docker_errors
from jupyter_sandbox.backends.runtime.engine import is_local_engine as is_local_engine
from jupyter_sandbox.settings import Settings

logger = logging.getLogger(__name__)

KERNEL_MOUNT = "/run/kernel"
CONNECTION_FILE = f"{KERNEL_MOUNT}/connection.json"
SANDBOX_UID = 1000
_WRITABLE_DIRS = {"data": "/mnt/data", "workspace": "/workspace"}
SKILLS_MOUNT = "/mnt/skills"
LOG_MAX_SIZE = "512k"  # the local driver keeps one rotated file beside it: 1 MB in all
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 2000


class DockerRuntime:
    """Starts hardened sandbox containers and cleans up after them."""

    def __init__(self, settings: Settings, engine: docker.DockerClient | None = None) -> None:
        self._settings = settings
        self.engine = engine or connect_engine()
        self._api = self.engine.api
        self._cgroup_files: dict[str, Path | None] = {}
        self._init_processes: dict[str, tuple[int, str]] = {}
        """Local engine: each sandbox's init process (host pid, start time), as inspected."""
        self._oom_counts: dict[str, tuple[int, float]] = {}
        """Per sandbox: the counter last read, and the time (epoch seconds) just before."""
        self._runtimes: frozenset[str] | None = None

    @property
    def is_remote(self) -> bool:
        """Whether the engine is on another machine (no host path reaches its containers):
        `engine_location`, where `auto` means any engine not on a local Unix socket."""
        where = self._settings.engine_location
        if where != "auto":
            return where == "remote"
        return not str(self._api.base_url).startswith("http+docker://local")

    def open_tunnel(self, container_id: str) -> ExecTunnel:
        """Host-local endpoints for the sandbox's kernel ports, carried by `docker exec`."""
        return ExecTunnel(
            self._api,
            container_name(container_id),
            TCP_PORTS,
            connect_wait=self._settings.start_timeout,
        )

    def put_deadline(self, container_id: str, deadline: float) -> None:
        """Rewrite a remote sandbox's deadline volume (a warm-pool claim), through the engine."""
        with docker_errors(f"setting the deadline of sandbox {container_id}"):
            remote.put(
                self._api,
                container_name(container_id),
                deadline_file.MOUNT,
                remote.deadline_tar(deadline),
            )

    def check_runtime(self) -> None:
        """Refuse the configured runtime if the engine lacks it (BadRequestError, `runtime`);
        the engine is asked once per client."""
        runtime = self._settings.runtime
        if runtime is None:
            return
        if self._runtimes is None:
            with docker_errors("listing the engine's runtimes"):
                self._runtimes = frozenset(self.engine.info().get("Runtimes") or {})
        gvisor.check_runtime(runtime, self._runtimes)

    def start(self, spec: ContainerSpec) -> str:
        """Create and start the container; any failure removes what was made."""
        settings = self._settings
        name = container_name(spec.container_id)
        self.check_runtime()
        is_remote = self.is_remote
        if is_remote:
            remote.refuse_host_paths(spec)
        roles = [*(_WRITABLE_DIRS if spec.host_dirs is None else ())]
        roles += [r for r in remote.REMOTE_ROLES if r != remote.SKILLS_ROLE] if is_remote else []
        roles += [remote.SKILLS_ROLE] if is_remote and spec.skills_dir is not None else []
        try:
            with docker_errors(f"creating sandbox {spec.container_id}"):
                for role in roles:
                    self._api.create_volume(
                        name=_volume_name(spec.container_id, role),
                        labels={**spec.labels, labels.ROLE: role},
                    )
                host_config = self._api.create_host_config(
                    auto_remove=True,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges:true"],
                    pids_limit=settings.pids_limit,
                    read_only=True,
                    tmpfs={"/tmp": f"rw,nosuid,nodev,size={settings.tmp_size},mode=1777"},
                    shm_size=settings.shm_size,
                    mem_limit=spec.memory_bytes,
                    memswap_limit=spec.memory_bytes,
                    mem_swappiness=0,
                    cpu_shares=settings.cpu_shares,
                    nano_cpus=int(settings.cpus * 1e9),
                    network_mode=spec.network.name if spec.network else "none",
                    dns=[spec.network.dns] if spec.network else None,
                    ipc_mode="private",
                    sysctls={"net.ipv6.conf.all.disable_ipv6": "1"},
                    # Capped: start-up failures stay readable, a flood costs at most 1 MB.
                    log_config=LogConfig(
                        type="local",
                        config={"max-size": LOG_MAX_SIZE, "max-file": "1", "compress": "false"},
                    ),
                    ulimits=[
                        Ulimit(name="nofile", soft=4096, hard=4096),
                        Ulimit(name="core", soft=0, hard=0),
                    ],
                    mounts=[
                        *_kernel_mounts(spec, is_remote=is_remote),
                        *_writable_mounts(spec, is_remote=is_remote),
                        *_network_mounts(spec),
                    ],
                    runtime=settings.runtime,
                )
                created: dict[str, Any] = self._api.create_container(
                    image=spec.image,
                    command=[
                        "--connection-file",
                        CONNECTION_FILE,
                        "--deadline",
                        f"{spec.deadline:.3f}",
                        *(
                            ["--deadline-file", deadline_file.CONTAINER_PATH]
                            if spec.deadline_dir is not None
                            else []
                        ),
                    ],
                    name=name,
                    user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                    environment=spec.environment,
                    labels=spec.labels,
                    host_config=host_config,
                    network_disabled=False,
                    networking_config=self._networking_config(spec),
                    stop_signal="SIGTERM",
                )
                if created.get("Warnings"):
                    # Docker drops limits it cannot apply with only a warning; we fail closed.
                    raise InternalServerError(
                        f"the engine could not apply every limit: {created['Warnings']}"
                    )
                if is_remote:
                    self._put_kernel_files(created["Id"], spec)
                self._api.start(created["Id"])
                return str(created["Id"])
        except ImageNotBuiltError as exc:
            self.remove(spec.container_id)
            if not is_remote:
                raise
            hint = remote.image_hint(spec.image, str(self._api.base_url))
            raise ImageNotBuiltError(hint, param="image") from exc
        except BaseException:
            self.remove(spec.container_id)
            raise

    def _put_kernel_files(self, docker_id: str, spec: ContainerSpec) -> None:
        """A remote sandbox's connection file and deadline, into its volumes, before it starts."""
        connection = remote.connection_tar(spec.socket_dir / "connection.json", SANDBOX_UID)
        remote.put(self._api, docker_id, KERNEL_MOUNT, connection)
        if spec.deadline_dir is not None:
            deadline = remote.deadline_tar(spec.deadline)
            remote.put(self._api, docker_id, deadline_file.MOUNT, deadline)
        if spec.skills_dir is not None:
            skills = remote.skills_tar(Path(spec.skills_dir))
            remote.put(self._api, docker_id, SKILLS_MOUNT, skills)

    def state(self, container_id: str) -> SandboxState | None:
        """The container's state, or None once it is gone."""
        try:
            with docker_errors(f"inspecting sandbox {container_id}"):
                info = self._api.inspect_container(container_name(container_id))
        except NotFoundError:
            return None
        docker_id = str(info["Id"])
        if self.is_remote:  # its pid and cgroup are another machine's
            self._cgroup_files[container_id] = None
        else:
            self._note_init_process(container_id, int(info["State"].get("Pid") or 0))
        if container_id not in self._cgroup_files:
            pid = int(info["State"].get("Pid") or 0)
            self._cgroup_files[container_id] = _find_memory_events(docker_id, pid)
        return SandboxState(
            docker_id=docker_id,
            running=bool(info["State"]["Running"]),
            oom_kills=_read_oom_kills(self._cgroup_files[container_id]),
        )

    def is_running(self, container_id: str) -> bool:
        """Whether the sandbox runs. On a local engine, once inspected, without asking the
        engine: its init process (host pid and start time, so a reused pid is not taken for
        it) still exists; else, or on a remote engine, the engine's word (`state`)."""
        known = self._init_processes.get(container_id)
        if known is not None and _process_start(known[0]) == known[1]:
            return True
        state = self.state(container_id)
        return state is not None and state.running

    def _note_init_process(self, container_id: str, pid: int) -> None:
        start = _process_start(pid) if pid else None
        if start is None:
            self._init_processes.pop(container_id, None)
        else:
            self._init_processes[container_id] = (pid, start)

    def kernel_netns(self, container_id: str) -> str:
        """The sandbox's network namespace (`/proc/<pid>/ns/net`), for the tcp channel."""
        with docker_errors(f"inspecting sandbox {container_id}"):
            info = self._api.inspect_container(container_name(container_id))
        pid = int(info["State"].get("Pid") or 0)
        if not pid:
            raise InternalServerError(f"sandbox {container_id} is not running")
        return f"/proc/{pid}/ns/net"

    def oom_kills(self, container_id: str) -> int | None:
        """The container cgroup's oom_kill counter (a file read after the first call; on a
        remote engine, read in the sandbox by one short exec). Once the cgroup is gone with its
        container (auto-removed; under gVisor the OOM killer ends the whole sandbox, and the
        engine may remove it before the death is noticed): the count last read plus the
        engine's `oom` events since."""
        if self.is_remote:
            return remote.oom_kills(self._api, container_name(container_id))
        if container_id not in self._cgroup_files and self.state(container_id) is None:
            return None
        read_at = time.time()  # before the read: an OOM in between is counted, never missed
        count = _read_oom_kills(self._cgroup_files.get(container_id))
        if count is not None:
            self._oom_counts[container_id] = (count, read_at)
            return count
        last = self._oom_counts.get(container_id)
        if last is None:
            return None
        since_last = self._oom_events(container_id, since=last[1])
        return None if since_last is None else last[0] + since_last

    def _oom_events(self, container_id: str, since: float) -> int | None:
        """How many times the engine saw the sandbox's cgroup run out of memory after `since`
        (epoch seconds), from its events (they outlive the container); None if unknown."""
        try:
            with docker_errors(f"reading the events of sandbox {container_id}"):
                events = self._api.events(  # type: ignore[call-overload]  # str times ok
                    since=f"{since:.3f}",
                    until=f"{time.time():.3f}",  # now: the stream ends at once
                    filters={"container": container_name(container_id), "event": "oom"},
                    decode=True,
                )
                return sum(1 for _ in events)
        except APIError:
            return None

    def logs(
        self,
        container_id: str,
        since: float,
        *,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_TAIL_BYTES,
    ) -> str:
        """The last `tail` lines (at most `max_bytes`) the supervisor and kernel wrote since
        `since`; empty once gone."""
        try:
            with docker_errors(f"reading the log of sandbox {container_id}"):
                raw = self._api.logs(container_name(container_id), tail=tail, since=since)
        except (NotFoundError, InternalServerError):  # gone, or being removed
            return ""
        return bytes(raw)[-max_bytes:].decode("utf-8", "replace")

    def signal(self, container_id: str, signal: str) -> None:
        """Send a signal to PID 1, the supervisor (sandbox-init)."""
        with docker_errors(f"signalling sandbox {container_id}"):
            self._api.kill(container_name(container_id), signal=signal)

    # --- pause/unpause (issue 18): two small methods the Backend seam can move as they are.
    def pause(self, container_id: str) -> None:
        """Freeze every process of the sandbox (the cgroup freezer: no CPU, memory kept);
        idempotent."""
        with docker_errors(f"pausing sandbox {container_id}"):
            try:
                self._api.pause(container_name(container_id))
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "already paused" not in str(exc):
                    raise

    def unpause(self, container_id: str) -> None:
        """Thaw a paused sandbox; idempotent (a running one is left alone)."""
        with docker_errors(f"resuming sandbox {container_id}"):
            try:
                self._api.unpause(container_name(container_id))
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "not paused" not in str(exc):
                    raise

    def remove(self, container_id: str) -> None:
        """Remove the container and its volumes; safe to call twice or on nothing."""
        name = container_name(container_id)
        with docker_errors(f"removing sandbox {container_id}"):
            try:
                self._api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: auto-remove is already under way
                    raise
            self._wait_gone(name)
            for role in [*_WRITABLE_DIRS, *(remote.REMOTE_ROLES if self.is_remote else ())]:
                self._remove_volume(_volume_name(container_id, role))
            self._remove_network(network_name(container_id))
        self._cgroup_files.pop(container_id, None)
        self._init_processes.pop(container_id, None)
        self._oom_counts.pop(container_id, None)

    def _networking_config(self, spec: ContainerSpec) -> dict[str, Any] | None:
        """An allowlist sandbox's fixed address on its own network (the proxy trusts it)."""
        if spec.network is None:
            return None
        endpoint = self._api.create_endpoint_config(ipv4_address=spec.network.address)
        config: dict[str, Any] = self._api.create_networking_config(
            {spec.network.name: endpoint}  # type: ignore[arg-type]  # the stub is wrong
        )
        return config

    def _remove_network(self, network: str) -> None:
        """Remove a sandbox's network, first unplugging the egress proxy from it."""
        try:
            self._api.remove_network(network)
            return
        except docker.errors.NotFound:
            return  # a `disabled` sandbox has none: one call, no inspect
        except docker.errors.APIError as exc:
            if exc.status_code not in (403, 409):  # 403: it still has endpoints
                raise
        for endpoint in (self._api.inspect_network(network).get("Containers") or {}).values():
            with suppress(docker.errors.NotFound):
                self._api.disconnect_container_from_network(endpoint["Name"], network, force=True)
        with suppress(docker.errors.NotFound):
            self._api.remove_network(network)

    def _wait_gone(self, name: str) -> None:
        try:
            self._api.wait(name, condition="removed", timeout=30)
        except (docker.errors.NotFound, docker.errors.APIError):
            pass  # already gone
        except Exception as exc:  # requests' timeout types vary by version
            logger.warning("container %s still present after 30 s: %s", name, exc)

    def _remove_volume(self, volume: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._api.remove_volume(volume, force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the engine is still detaching it from the container

    def exit_code(self, container_id: str, since: float) -> int | None:
        """How the sandbox's container last exited after `since` (epoch seconds), from the
        engine's events (it is auto-removed, so inspect no longer knows); None if unknown."""
        try:
            with docker_errors(f"reading the events of sandbox {container_id}"):
                events = self._api.events(  # type: ignore[call-overload]  # until: str ok
                    since=int(since) - 1,
                    until=f"{time.time():.3f}",  # now: the stream ends at once
                    filters={"container": container_name(container_id), "event": "die"},
                    decode=True,
                )
                codes = [
                    (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
                    for event in events
                ]
        except APIError:
            return None
        found = [c for c in codes if isinstance(c, str) and c.lstrip("-").isdigit()]
        return int(found[-1]) if found else None

    def running(self, store_id: str) -> set[str]:
        """Ids of this store's sandboxes whose container is running (one engine call)."""
        selector = {"label": [f"{labels.MANAGED}=true", f"{labels.STORE}={store_id}"]}
        with docker_errors("listing sandboxes"):
            containers = self._api.containers(filters=selector)
        return {c["Labels"].get(labels.CONTAINER_ID, "") for c in containers} - {""}

    def labelled(self, store_id: str) -> dict[str, list[str]]:
        """Sandbox ids owning labelled containers, volumes and networks of this store."""
        selector = {"label": [f"{labels.MANAGED}=true", f"{labels.STORE}={store_id}"]}
        with docker_errors("listing sandboxes"):
            containers = self._api.containers(all=True, filters=selector)
            volumes = self._api.volumes(filters=selector).get("Volumes") or []
            networks = self._api.networks(filters=selector)
        return {
            "container": [c["Labels"].get(labels.CONTAINER_ID, "") for c in containers],
            "volume": [(v.get("Labels") or {}).get(labels.CONTAINER_ID, "") for v in volumes],
            "network": [(n.get("Labels") or {}).get(labels.CONTAINER_ID, "") for n in networks],
        }


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None  # field 22, the 20th after comm


def _kernel_mounts(spec: ContainerSpec, *, is_remote: bool) -> list[Mount]:
    """The kernel folder and the deadline folder: host folders, or a remote engine's volumes."""
    if is_remote:
        volume = _volume_name(spec.container_id, remote.KERNEL_ROLE)
        mounts = [Mount(KERNEL_MOUNT, volume, type="volume")]
        if spec.deadline_dir is not None:
            deadline = _volume_name(spec.container_id, remote.DEADLINE_ROLE)
            mounts.append(Mount(deadline_file.MOUNT, deadline, type="volume"))
        return mounts
    mounts = [Mount(KERNEL_MOUNT, str(spec.socket_dir), type="bind")]
    if spec.deadline_dir is not None:
        mounts.append(
            Mount(deadline_file.MOUNT, str(spec.deadline_dir), type="bind", read_only=True)
        )
    return mounts


def _writable_mounts(spec: ContainerSpec, *, is_remote: bool) -> list[Mount]:
    """/mnt/data and /workspace: the capped disk's folders, or else volumes; skills read-only."""
    if spec.host_dirs is None:
        mounts = [
            Mount(path, _volume_name(spec.container_id, role), type="volume")
            for role, path in _WRITABLE_DIRS.items()
        ]
    else:
        mounts = [
            Mount(path, spec.host_dirs[path], type="bind", propagation="rprivate")
            for path in _WRITABLE_DIRS.values()
        ]
    if spec.skills_dir is not None and is_remote:
        volume = _volume_name(spec.container_id, remote.SKILLS_ROLE)
        mounts.append(Mount(SKILLS_MOUNT, volume, type="volume", no_copy=True))
    elif spec.skills_dir is not None:
        mounts.append(Mount(SKILLS_MOUNT, spec.skills_dir, type="bind", read_only=True))
    return mounts


def _network_mounts(spec: ContainerSpec) -> list[Mount]:
    """An allowlist sandbox gets a resolv.conf with no nameserver: names resolve nowhere."""
    if spec.network is None:
        return []
    return [
        Mount("/etc/resolv.conf", spec.network.resolv_conf, type="bind", read_only=True),
        *ca_bundle_mounts(spec.network),
    ]


# --- domain_secrets: the sandbox's CA bundle ---
CA_BUNDLE_PATHS = ("/etc/ssl/certs/ca-certificates.crt",)
"""Where the kernel image keeps its system CA bundle (Debian's, which curl, pip and
SSL_CERT_FILE read); a sandbox with domain secrets sees its own bundle there."""


def ca_bundle_mounts(network: SandboxNetworkSpec) -> list[Mount]:
    """Read-only binds of the sandbox's CA bundle over the system store (none without one)."""
    if network.ca_bundle is None:
        return []
    return [Mount(path, network.ca_bundle, type="bind", read_only=True) for path in CA_BUNDLE_PATHS]


def network_name(container_id: str) -> str:
    """The Docker name of an allowlist sandbox's own internal network."""
    return f"jsbx-{container_id}-net"


def container_name(container_id: str) -> str:
    """The Docker name of a sandbox's container."""
    return f"jsbx-{container_id}"


def _volume_name(container_id: str, role: str) -> str:
    return f"jsbx-{container_id}-{role}"


def _read_oom_kills(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except OSError:
        return None
    return None


def _find_memory_events(docker_id: str, pid: int) -> Path | None:
    """The file holding the container's oom_kill counter (cgroup v2 or v1)."""
    relative: list[str] = []
    if pid:
        try:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controllers in ("", "memory") or "memory" in controllers.split(","):
                    relative.append(path.lstrip("/"))
        except OSError:
            pass
    relative += [f"docker/{docker_id}", f"system.slice/docker-{docker_id}.scope"]
    root = Path("/sys/fs/cgroup")
    for rel in relative:
        for candidate in (
            root / rel / "memory.events",
            root / "memory" / rel / "memory.oom_control",
        ):
            if candidate.is_file():
                return candidate
    return None
