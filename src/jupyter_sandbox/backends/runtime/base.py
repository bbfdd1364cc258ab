"""What the Docker backend asks its container runtime for: one container's full spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one hardened sandbox container (host paths included)."""

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
    """File on the engine's machine (this host's locally; in the egress proxy's volume on a
    remote engine) bound read-only over /etc/resolv.conf: no nameserver."""
    ca_bundle: str | None = None
    """domain_secrets only: file on the engine's machine bound read-only over the system CA
    bundle (the system CAs and the sandbox's own egress CA); see `ca_bundle_mounts`."""
