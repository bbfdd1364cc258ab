"""A remote engine's sandbox: no host path, every file through the engine's archive API.

On a remote engine (`DOCKER_HOST=tcp://...` or `ssh://...`) no host folder can be bound into
a container, so the kernel folder and the deadline folder are Docker volumes on the engine's
machine, filled through the archive API (`put_archive`, which writes into a volume even under
a read-only root file system, before the container starts and after). The deadline volume is
mounted read-write, because the archive API refuses read-only mounts, but it and its file
belong to root (0755, 0644) and nothing in a sandbox runs as root or holds a capability, so
the sandbox can read its deadline and not change it. Skills are copied the same way into a
volume made without the image's copy (so its root is root's too). An allowlist sandbox's
resolv.conf and CA bundle are files of the egress proxy's volume on the engine's machine
(`remote_egress`), bound from there.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.backends import deadline_file
from jupyter_sandbox.backends.exec_output import run_exec
from jupyter_sandbox.backends.runtime.base import ContainerSpec

KERNEL_ROLE = "kernel"
DEADLINE_ROLE = "sandbox"
SKILLS_ROLE = "skills"
REMOTE_ROLES = (KERNEL_ROLE, DEADLINE_ROLE, SKILLS_ROLE)
"""Volumes only a remote engine's sandboxes have (beside /mnt/data and /workspace)."""


def refuse_host_paths(spec: ContainerSpec) -> None:
    """Fail closed, before anything is made, on what needs a host path on this machine."""
    if spec.host_dirs is not None:
        raise BadRequestError(
            "Invalid disk: a loop-mounted disk on this host cannot reach a remote engine; "
            "use disk_mechanism='volume'",
            param="disk_mechanism",
        )


def _member(name: str, data: bytes, *, uid: int, mode: int) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    info.uid = info.gid = uid
    return info, data


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed tar of regular files (and hard links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def deadline_tar(deadline: float) -> bytes:
    """The deadline file, root's: written whole under a side name, then hard-linked to its
    name (the engine replaces a file by removing it first: a reader sees the old number, no
    file, which sandbox-init ignores, or the new number; never half of one)."""
    number = f"{deadline:.3f}".encode()
    fresh, data = _member(f".{deadline_file.FILE_NAME}.new", number, uid=0, mode=0o644)
    link = tarfile.TarInfo(deadline_file.FILE_NAME)
    link.type, link.linkname, link.mode = tarfile.LNKTYPE, fresh.name, 0o644
    link.mtime = fresh.mtime
    return tar_of([(fresh, data), (link, b"")])


def connection_tar(connection_file: Path, uid: int) -> bytes:
    """The kernel's connection file (the host's staging copy), the sandbox user's, 0600."""
    return tar_of([_member("connection.json", connection_file.read_bytes(), uid=uid, mode=0o600)])


def skills_tar(folder: Path) -> bytes:
    """The installed skills (a host folder), root's: folders 0755, files 0644, nothing else
    (the volume is mounted read-write for the archive API; these modes keep it read-only)."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isdir() or info.isfile()):
            return None  # install() writes only folders and files; anything else is dropped
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(folder.iterdir()):
            archive.add(entry, arcname=entry.name, filter=owned)
    return buffer.getvalue()


def put(api: Any, container: str, folder: str, archive: bytes) -> None:
    """Extract `archive` into `folder` of the container (a volume; running or not)."""
    if not api.put_archive(container, folder, archive):
        raise NotFoundError(f"the engine did not write into {folder} of {container}")


_CGROUP_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
"""The sandbox's own cgroup (v2, v1) as it sees it: both carry an `oom_kill` line."""
_OOM_READ_LIMIT = 4096
_OOM_READ_SECONDS = 30.0
"""For the whole read (a loaded engine can take seconds to start an exec)."""


def oom_kills(api: Any, container: str) -> int | None:
    """The sandbox cgroup's oom_kill counter, read by `cat` in the sandbox (at most 4 KiB of
    its output within 30 s in all: sandbox code could take the process over, or hold its
    output open, and only lie about its own OOMs); None if it cannot be read."""
    try:
        done = run_exec(
            api,
            container,
            ["cat", *_CGROUP_FILES],
            limit=_OOM_READ_LIMIT,
            timeout=_OOM_READ_SECONDS,
        )
    except (docker.errors.DockerException, OSError):
        return None
    for line in done.stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def image_hint(image: str, base_url: str) -> str:
    """How to load the kernel image into a remote engine that lacks it."""
    return (
        f"The kernel image {image} is not on the remote Docker engine {base_url}: load it "
        f"from a machine that has it with `docker save {image} | docker load`, the second "
        "docker pointed at that engine (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH); "
        "`jupyter-sandbox cluster up` loads it into the nodes it starts"
    )
