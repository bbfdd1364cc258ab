"""Per-sandbox storage and the disk cap: a sparse ext4 image per sandbox, loop-mounted by the host.

`--storage-opt size=` needs overlay2 on xfs with project quotas, which this kind of host lacks,
and it would not cover volumes anyway. Instead, when we are root, each sandbox gets a sparse
file `<home>/sandboxes/<id>/disk.img` of `disk_limit` bytes holding a fresh ext4 file system
(no journal, no reserved blocks), mounted `nodev,nosuid` at `<id>/disk`; its `data` and
`workspace` folders are bind-mounted at /mnt/data and /workspace. Writing past the cap fails
with ENOSPC inside the sandbox; the host only spends what was really written. The host reads
and writes files through that mount (see `transfer.HostFiles`), never through `docker cp`.

Without root (or mkfs.ext4, or loop devices) the mechanism is `volume`: plain Docker volumes
with NO cap, which `jupyter-sandbox doctor` reports plainly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox._exceptions import InternalServerError
from jupyter_sandbox.settings import Settings

logger = logging.getLogger(__name__)

SANDBOX_UID = 1000
_MNT_DETACH = 2


def loop_unavailable() -> str | None:
    """Why loop-mounted images cannot be used on this host, or None if they can."""
    if os.geteuid() != 0:
        return "not running as root (loop mounts need root)"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (Debian: e2fsprogs)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control is missing)"
    return None


def describe(settings: Settings) -> tuple[str, str, bool]:
    """(mechanism, one-line explanation, whether a cap is enforced) for `doctor`."""
    reason = loop_unavailable()
    size = f"{settings.disk_limit / 2**30:g} GiB"
    if settings.disk_mechanism == "volume":
        return "volume", "Docker volumes: NO disk cap (disk_mechanism=volume)", False
    if reason is None:
        return "loop", f"sparse ext4 image per sandbox, loop-mounted; cap {size}", True
    if settings.disk_mechanism == "loop":
        return "loop", f"configured but unusable: {reason}", False
    return "volume", f"Docker volumes: NO disk cap is enforced, because {reason}", False


@dataclass(frozen=True)
class SandboxStorage:
    """The host side of one sandbox's storage."""

    folder: Path
    """`<home>/sandboxes/<container id>`."""
    is_capped: bool
    """True when /mnt/data and /workspace live on the capped image mounted at `mount`."""

    @property
    def mount(self) -> Path:
        """Where the image is mounted (loop mode)."""
        return self.folder / "disk"

    @property
    def skills(self) -> Path:
        """Host folder bind-mounted read-only at /mnt/skills."""
        return self.folder / "skills"

    @property
    def uploads(self) -> Path:
        """Host-only folder on the image for uploads in flight (loop mode; not mounted in the
        sandbox, so its code never sees a half-written file)."""
        return self.mount / "uploads"

    def host_dirs(self) -> dict[str, Path] | None:
        """Host folders for /mnt/data and /workspace (loop mode), or None (volumes)."""
        if not self.is_capped:
            return None
        return {"/mnt/data": self.mount / "data", "/workspace": self.mount / "workspace"}


class Disks:
    """Creates, finds and removes sandboxes' storage folders (and their capped images)."""

    def __init__(self, settings: Settings, *, is_remote: bool = False) -> None:
        self._settings = settings
        self.root = settings.home / "sandboxes"
        self.mechanism, self.detail, self.is_capped = describe(settings)
        if is_remote:  # a host loop mount cannot be bound into another machine's container
            self.mechanism, self.is_capped = "volume", False
            self.detail = "Docker volumes on the remote engine: NO disk cap is enforced"
        if settings.disk_mechanism == "loop" and not self.is_capped:
            raise InternalServerError(f"disk_mechanism=loop: {self.detail}")

    def folder(self, container_id: str) -> Path:
        """The storage folder of a sandbox (it may not exist)."""
        return self.root / container_id

    def create(self, container_id: str) -> SandboxStorage:
        """Make the folder, and in loop mode the image, its file system and the mount."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = SandboxStorage(self.folder(container_id), self.is_capped)
        storage.folder.mkdir(mode=0o700)
        try:
            storage.skills.mkdir(mode=0o755)
            if self.is_capped:
                self._make_disk(storage)
        except BaseException:
            remove_folder(storage.folder)
            raise
        return storage

    def _make_disk(self, storage: SandboxStorage) -> None:
        image = storage.folder / "disk.img"
        descriptor = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(descriptor, self._settings.disk_limit)  # sparse: costs nothing yet
        finally:
            os.close(descriptor)
        _run(
            "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
            "-E", "lazy_itable_init=1,nodiscard", str(image),
        )  # fmt: skip
        storage.mount.mkdir(mode=0o700)
        # util-linux sets autoclear: the loop device goes away with the last unmount.
        _run(
            "mount", "-t", "ext4", "-o", "loop,nodev,nosuid,noatime", str(image), str(storage.mount)
        )
        os.chmod(storage.mount, 0o700)
        for name in ("data", "workspace"):
            folder = storage.mount / name
            folder.mkdir(mode=0o755)
            os.chown(folder, SANDBOX_UID, SANDBOX_UID)

    def remove(self, container_id: str) -> None:
        """Unmount and delete a sandbox's storage; idempotent."""
        remove_folder(self.folder(container_id))

    def entries(self) -> list[Path]:
        """Every storage folder present (reconcile removes those no live sandbox owns)."""
        return sorted(self.root.iterdir()) if self.root.is_dir() else []


def remove_folder(folder: Path) -> None:
    """Unmount the image (lazily: never blocks) and delete the folder; never follows links."""
    mount = folder / "disk"
    if os.path.ismount(mount):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.umount2(str(mount).encode(), _MNT_DETACH) != 0:
            error = os.strerror(ctypes.get_errno())
            raise InternalServerError(f"cannot unmount the sandbox disk {mount}: {error}")
    if os.path.ismount(mount):
        raise InternalServerError(f"the sandbox disk {mount} is still mounted")
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[:500]
        raise InternalServerError(f"{command[0]} failed while preparing the sandbox disk: {detail}")
