"""What the core needs from a container runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to start one hardened sandbox container."""

    container_id: str
    image: str
    memory_bytes: int
    socket_dir: Path
    deadline: float
    """Unix time at which the container stops itself (hard lifetime)."""
    labels: dict[str, str]
    environment: dict[str, str] = field(default_factory=dict)
    host_dirs: dict[str, str] | None = None
    """Host folders to bind at /mnt/data and /workspace (the capped disk); None: volumes."""
    skills_dir: str | None = None
    """Host folder bound read-only at /mnt/skills, if the sandbox has skills."""
    network: SandboxNetworkSpec | None = None
    """An allowlist sandbox's internal network; None: no network at all (`none`)."""
    deadline_dir: Path | None = None
    """Host folder bound read-only at /run/sandbox: its `deadline` file, rewritten by the
    host, replaces `deadline` (a warm-pool claim sets the claimed lifetime this way)."""


@dataclass(frozen=True)
class SandboxNetworkSpec:
    """Where an allowlist sandbox is attached, and the resolver it must not have."""

    name: str
    """The sandbox's own internal Docker network."""
    address: str
    """The sandbox's fixed IPv4 address on it."""
    dns: str
    """Upstream of the engine's embedded resolver (127.0.0.11): the proxy, which serves no
    DNS, so a query sent there directly dies inside the network (CVE-2024-29018)."""
    resolv_conf: str
    """Host file bound read-only over /etc/resolv.conf: no nameserver."""
    ca_bundle: str | None = None
    """domain_secrets only: host file bound read-only over the system CA bundle (the system
    CAs and the sandbox's own egress CA); see `ca_bundle_mounts`."""


@dataclass(frozen=True)
class SandboxState:
    """What the engine says about a sandbox container."""

    docker_id: str
    running: bool
    oom_kills: int | None
    """The cgroup's oom_kill counter, when the host can read it."""


class Runtime(Protocol):
    """Starts, signals, inspects and removes sandbox containers."""

    def start(self, spec: SandboxSpec) -> str:
        """Create and start the container; return the engine's id. Fails closed."""
        ...

    def state(self, container_id: str) -> SandboxState | None:
        """The container's state, or None if it is gone."""
        ...

    def oom_kills(self, container_id: str) -> int | None:
        """The container's cumulative count of out-of-memory kills, if the host can read it."""
        ...

    def logs(
        self, container_id: str, since: float, *, tail: int = ..., max_bytes: int = ...
    ) -> str:
        """The supervisor's and kernel's own output since `since` (epoch seconds): the last
        `tail` lines, at most `max_bytes`."""
        ...

    def signal(self, container_id: str, signal: str) -> None:
        """Send a signal to the container's supervisor (SIGINT interrupts, SIGUSR1 restarts)."""
        ...

    def pause(self, container_id: str) -> None:
        """Freeze the sandbox's processes, memory kept (issue 18); idempotent."""
        ...

    def unpause(self, container_id: str) -> None:
        """Thaw a paused sandbox; idempotent."""
        ...

    def remove(self, container_id: str) -> None:
        """Remove the container and its volumes; idempotent."""
        ...

    def labelled(self, store_id: str) -> dict[str, list[str]]:
        """Sandbox ids that own labelled objects of this store, by kind (container, volume)."""
        ...

    def running(self, store_id: str) -> set[str]:
        """Ids of this store's sandboxes whose container is running."""
        ...

    def exit_code(self, container_id: str, since: float) -> int | None:
        """The container's exit code after `since` (epoch seconds), if the engine knows it."""
        ...
