"""What a Swarm service cannot say, applied or checked on the task's container (its node).

Run once the task's container exists and before its kernel gets a connection file (no user
code has run yet); any failure fails the create (fail closed), naming what is missing:

- **Network**: the container leaves the parking overlay; then it must have only `lo`. An
  allowlist sandbox keeps its own internal overlay (`swarm_egress`): then `eth0` on it and
  `lo`, and no default route.
- **No swap, CPU weight**: a 1.41 service spec cannot set `MemorySwap` (Swarm makes it twice
  the limit) or `CpuShares`; `docker update` on the node sets swap = memory and the weight,
  and an engine warning (no swap accounting) fails the create.
- **no-new-privileges** (`Privileges.NoNewPrivileges` is API 1.44+): not settable on 20.10.
  Replaced by what makes it a no-op, checked: PID 1's bounding, inheritable and ambient
  capability sets are empty (a setuid-root or file-capability program then gains no
  capability; its `euid 0` could still own root's files), and the image holds no setuid or
  setgid file (checked once per node and image id, by `find` as root, and as the sandbox user
  in any folder root could not read but the sandbox user can enter).
- **Everything else the spec carried** is read back from the container's `HostConfig`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import docker
import docker.errors

from jupyter_sandbox._exceptions import InternalServerError
from jupyter_sandbox.backends.runtime.docker import SANDBOX_UID
from jupyter_sandbox.backends.swarm_services import PARKING_NETWORK
from jupyter_sandbox.settings import Settings

__all__ = ["HardeningError", "NodeChecks", "check", "harden"]


class HardeningError(InternalServerError):
    """A hardening the sandbox must have could not be applied on its node (fail closed)."""


# Runs as the sandbox user in the new container: its interfaces, PID 1's capability sets and
# whether it has a default route.
_PROBE = r"""
import json
with open("/proc/net/dev") as f:
    interfaces = sorted(line.split(":")[0].strip() for line in list(f)[2:])
caps = {}
with open("/proc/1/status") as f:
    for line in f:
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
            caps[key] = value.strip()
with open("/proc/net/route") as f:
    default_route = any(line.split()[1] == "00000000" for line in list(f)[1:] if line.strip())
print(json.dumps({"interfaces": interfaces, "caps": caps, "default_route": default_route}))
"""
# Runs as root (no capability), then as the sandbox user in what root could not read: every
# setuid/setgid regular file on the image's own file system, and the folders not walked.
_SCAN = r"""
import json, os, stat, sys
found, blocked = [], []
roots = sys.argv[1:] or ["/"]
device = os.lstat("/").st_dev
def error(exc):
    blocked.append(exc.filename)
for root in roots:
    for folder, dirs, files in os.walk(root, onerror=error):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
        for name in files:
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                blocked.append(path)
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(path)
searchable = [p for p in blocked if os.access(p, os.X_OK)]
print(json.dumps({"found": found, "blocked": blocked, "searchable": searchable}))
"""
_OUTPUT_LIMIT = 1 << 20


def _run(api: Any, container: str, code: str, args: list[str], user: str) -> dict[str, Any]:
    try:
        made = api.exec_create(
            container, ["python3", "-I", "-S", "-c", code, *args], user=user, workdir="/"
        )
        stdout, stderr = api.exec_start(made["Id"], demux=True)
    except docker.errors.DockerException as exc:
        raise HardeningError(f"cannot check the sandbox's container: {exc}") from exc
    try:
        result: dict[str, Any] = json.loads((stdout or b"")[:_OUTPUT_LIMIT])
    except ValueError:
        why = (stderr or b"")[-500:].decode("utf-8", "replace")
        raise HardeningError(f"the container check gave no answer: {why}") from None
    return result


class NodeChecks:
    """Setuid scans already passed, by (node id, image id): one scan per image per node."""

    def __init__(self) -> None:
        self._passed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def scan_image(self, api: Any, node_id: str, container: str, image_id: str) -> None:
        """Fail closed unless the image in `container` has no setuid/setgid file."""
        with self._lock:
            if (node_id, image_id) in self._passed:
                return
        as_root = _run(api, container, _SCAN, [], "0:0")
        found = list(as_root["found"])
        unreadable = list(as_root["blocked"])
        if unreadable:
            # What root (no capability) could not read: the sandbox user may still enter it.
            as_user = _run(api, container, _SCAN, unreadable, f"{SANDBOX_UID}")
            found += as_user["found"]
            hidden = sorted(as_user["searchable"])
            if hidden:
                raise HardeningError(
                    "no-new-privileges cannot be set on a Swarm service here, and the image "
                    f"has folders the sandbox can enter but no check can list: {hidden[:5]}"
                )
        if found:
            raise HardeningError(
                "no-new-privileges cannot be set on a Swarm service here, and the image has "
                f"setuid/setgid files: {sorted(found)[:5]} (rebuild it: `jupyter-sandbox "
                "image build` strips them)"
            )
        with self._lock:
            self._passed.add((node_id, image_id))


def harden(
    api: Any,
    container: str,
    settings: Settings,
    memory_bytes: int,
    runtime: str | None,
    network: str | None = None,
) -> dict[str, Any]:
    """Apply and check, on the task's container, what the service spec could not carry;
    returns the container's inspect. `network`: an allowlist sandbox's overlay, which it
    keeps (else it leaves the parking overlay)."""
    try:
        if network is None:
            api.disconnect_container_from_network(container, PARKING_NETWORK, force=True)
        updated = api.update_container(
            container,
            mem_limit=memory_bytes,
            memswap_limit=memory_bytes,
            cpu_shares=settings.cpu_shares,
        )
        info: dict[str, Any] = api.inspect_container(container)
    except docker.errors.DockerException as exc:
        raise HardeningError(f"cannot harden the sandbox's container on its node: {exc}") from exc
    if updated.get("Warnings"):
        raise HardeningError(f"the node could not apply every limit: {updated['Warnings']}")
    check(api, info, settings, memory_bytes, runtime, network)
    return info


def check(
    api: Any,
    info: dict[str, Any],
    settings: Settings,
    memory_bytes: int,
    runtime: str | None,
    network: str | None = None,
) -> None:
    """Fail closed unless the container (`info`: its inspect) is as a sandbox must be: on
    no network, or (allowlist) on `network` alone."""
    container = str(info["Id"])
    host = info["HostConfig"]
    expected: dict[str, object] = {
        "CapDrop": ["ALL"],
        "CapAdd": None,
        "Privileged": False,
        "ReadonlyRootfs": True,
        "Memory": memory_bytes,
        "MemorySwap": memory_bytes,
        "NanoCpus": int(settings.cpus * 1e9),
        "CpuShares": settings.cpu_shares,
        "PidsLimit": settings.pids_limit,
        "IpcMode": "private",
        "Runtime": runtime or host.get("Runtime"),
    }
    wrong = {key: host.get(key) for key, value in expected.items() if host.get(key) != value}
    if info["Config"]["User"] != f"{SANDBOX_UID}:{SANDBOX_UID}":
        wrong["User"] = info["Config"]["User"]
    networks = list(info["NetworkSettings"]["Networks"] or {})
    if networks != ([network] if network else []):
        wrong["Networks"] = networks
    if wrong:
        raise HardeningError(f"the sandbox's container on its node is not as asked: {wrong}")
    probe = _run(api, container, _PROBE, [], f"{SANDBOX_UID}")
    interfaces = ["eth0", "lo"] if network else ["lo"]
    if probe["interfaces"] != interfaces:
        raise HardeningError(
            f"the sandbox has interfaces besides {interfaces}: {probe['interfaces']}"
        )
    if probe["default_route"] is not False:
        raise HardeningError("the sandbox has a default route (its network must be internal)")
    caps = probe["caps"]
    empty = "0" * 16
    held = {k: v for k, v in caps.items() if k != "NoNewPrivs" and v != empty}
    if held or len(caps) < 6:
        raise HardeningError(f"the sandbox's PID 1 holds capabilities: {caps}")
