"""A store's egress proxy on a remote Docker engine (or one node): the container as
`EgressProxy` makes it, with volumes for its folders, and a keeper container through which
this host writes, removes and reads those files (see `remote_egress`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
import time
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from jupyter_sandbox.backends.egress import PROXY_PORT, EgressProxy, EgressUnavailableError
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.docker import docker_errors
from jupyter_sandbox.settings import Settings

__all__ = ["PROXY_UID", "RemoteEgressProxy", "entry"]

PROXY_UID = 13  # Debian's `proxy` user, which squid and egress-inject run as
_CONFIG = "/srv/config"
_LOG = "/srv/log"
_ROLE_KEEPER = "egress-files"
_ROLE_VOLUME = "egress-volume"
_RESOLV_CONF = (
    "# jupyter-sandbox: no resolver. HTTP(S) goes through the egress proxy\n"
    "# (HTTP_PROXY); nothing else leaves the sandbox, names included.\n"
    "options timeout:1 attempts:1\n"
)
# Run in the keeper as squid's user: who owns each list and secret port (never a value).
_STATE = f"""
import glob, json, os
state = {{"policies": {{}}, "secrets": {{}}, "bundles": []}}
for path in glob.glob("{_CONFIG}/policies/*.json"):
    try:
        owner = json.load(open(path)).get("container_id")
    except Exception:
        owner = None
    state["policies"][os.path.basename(path)] = owner
for path in glob.glob("{_CONFIG}/secrets/*.json"):
    port = os.path.basename(path)[:-5]
    if not port.isdigit():
        continue
    try:
        data = json.load(open(path))
        entry = [str(data["container_id"]), str(data["secrets"][0]["domain"])]
    except Exception:
        entry = ["", ""]
    state["secrets"][port] = entry + [os.path.exists(path[:-5] + ".conf")]
state["bundles"] = sorted(os.path.basename(p)[:-4] for p in glob.glob("{_CONFIG}/ca/*.pem"))
print(json.dumps(state))
"""
_LISTENING = f"import socket; socket.create_connection(('127.0.0.1', {PROXY_PORT}), 0.5).close()"


def entry(name: str, data: bytes | None, *, uid: int, mode: int) -> tuple[tarfile.TarInfo, bytes]:
    """A tar member: a regular file, or a folder when `data` is None."""
    info = tarfile.TarInfo(name)
    info.uid = info.gid = uid
    info.mode, info.mtime = mode, int(time.time())
    if data is None:
        info.type = tarfile.DIRTYPE
        return info, b""
    info.size = len(data)
    return info, data


class RemoteEgressProxy(EgressProxy):
    """One store's egress proxy on a remote engine; its files on the engine's volumes."""

    def __init__(self, settings: Settings, engine: docker.DockerClient) -> None:
        super().__init__(settings, engine)
        base_url = str(self._api.base_url)
        self.base_url = base_url
        # Only the lock lives here: one process of this host at a time decides about the proxy.
        key = hashlib.sha256(base_url.encode()).hexdigest()[:16]
        self.folder = settings.home / "egress-remote" / key
        self.keeper = f"{self.name}-files"
        self.config_volume = f"{self.name}-config"
        self.log_volume = f"{self.name}-log"

    # --- the proxy container, as EgressProxy makes it, with volumes for folders ----------
    def _image_hint(self, image: str) -> str:
        return (
            f"the egress proxy image {image} is not on the remote Docker engine "
            f"{self.base_url}: load it from a machine that has it with `docker save {image} | "
            "docker load`, the second docker pointed at that engine (DOCKER_HOST, "
            "DOCKER_TLS_VERIFY, DOCKER_CERT_PATH); `jupyter-sandbox cluster up` loads it into "
            "the nodes it starts (build it first with `python -m "
            "jupyter_sandbox.backends.egress_image build`)"
        )

    def _mounts(self) -> list[Mount]:
        return [
            Mount("/etc/jsbx", self.config_volume, type="volume", read_only=True, no_copy=True),
            Mount("/var/log/jsbx", self.log_volume, type="volume", no_copy=True),
        ]

    def _accepts(self, address: str) -> bool:
        """This host cannot reach the engine's bridges: ask inside the proxy."""
        try:
            run = self._api.exec_create(self.name, ["python3", "-I", "-c", _LISTENING])
            self._api.exec_start(run["Id"])
            return self._api.exec_inspect(run["Id"]).get("ExitCode") == 0
        except docker.errors.APIError:
            return False  # still starting (or restarting)

    def _engine_time(self) -> float:
        """The engine's clock, which stamps its logs (another machine's may differ)."""
        with docker_errors("reading the engine's clock"):
            text = str(self._api.info().get("SystemTime") or "")
        found = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
        if found is None:
            return time.time()
        zone = "+00:00" if found[3] == "Z" else found[3]
        return datetime.fromisoformat(found[1] + zone).timestamp() + float(f"0{found[2] or ''}")

    def _warm_targets(self) -> list[tuple[int, str]]:
        targets = []
        for port, (owner, domain, has_rules) in sorted(self.state_files()["secrets"].items()):
            if owner and domain and has_rules:
                host = "jsbx-warmup" + domain[1:] if domain.startswith("*.") else domain
                targets.append((int(port), host))
        return targets

    def prepare_folders(self) -> None:
        """The volumes and the keeper, then squid.conf, resolv.conf and the folders."""
        self.folder.mkdir(parents=True, exist_ok=True)
        image = self._settings.egress_image
        try:
            self._api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            raise EgressUnavailableError(
                f"Invalid network_policy: {self._image_hint(image)}", param="network_policy"
            ) from None
        with docker_errors(f"preparing the files of egress proxy {self.name}"):
            self._ensure_keeper(image)
            members = [
                entry("policies", None, uid=0, mode=0o755),
                entry("ca", None, uid=0, mode=0o755),
                entry("secrets", None, uid=PROXY_UID, mode=0o700),
                entry("squid.conf", self.render_config().encode(), uid=0, mode=0o644),
                entry("resolv.conf", _RESOLV_CONF.encode(), uid=0, mode=0o644),
                entry(
                    "secrets/00-base.conf",
                    b"# squid's `include` needs one match; the sandboxes' files follow.\n",
                    uid=PROXY_UID,
                    mode=0o600,
                ),
            ]
            upstream_ca = self._settings.test_egress_upstream_ca
            if upstream_ca:
                members.append(
                    entry("test-upstream-ca.pem", upstream_ca.encode(), uid=0, mode=0o644)
                )
            self.put(members)

    def _ensure_keeper(self, image: str) -> None:
        """The volumes and the container that holds them writable (idempotent)."""
        try:
            info = self._api.inspect_container(self.keeper)
        except docker.errors.NotFound:
            info = None
        if info is not None:
            if not info["State"]["Running"]:
                self._api.start(self.keeper)
            return
        for volume in (self.config_volume, self.log_volume):
            self._api.create_volume(name=volume, labels=self._labels(_ROLE_VOLUME))
        host_config = self._api.create_host_config(
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            read_only=True,
            network_mode="none",
            mem_limit="32m",
            memswap_limit="32m",
            pids_limit=16,
            restart_policy={"Name": "unless-stopped"},
            mounts=[
                Mount(_CONFIG, self.config_volume, type="volume"),
                Mount(_LOG, self.log_volume, type="volume"),
            ],
        )
        self._api.create_container(
            image=image,
            name=self.keeper,
            entrypoint=["/bin/sleep", "infinity"],
            user="0:0",
            labels=self._labels(_ROLE_KEEPER),
            host_config=host_config,
        )
        self._api.start(self.keeper)
        # The log folder stays root's: squid's user may append to these two files only.
        logs = [
            entry(name, b"", uid=PROXY_UID, mode=0o640) for name in ("access.log", "inject.log")
        ]
        remote.put(self._api, self.keeper, _LOG, remote.tar_of(logs))

    # --- files on the engine --------------------------------------------------------------
    def put(self, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        """Write files into the config volume (names relative to /etc/jsbx)."""
        remote.put(self._api, self.keeper, _CONFIG, remote.tar_of(members))

    def _exec(self, command: list[str], user: str) -> bytes:
        run = self._api.exec_create(self.keeper, command, user=user)
        stdout, stderr = self._api.exec_start(run["Id"], demux=True)
        if self._api.exec_inspect(run["Id"]).get("ExitCode") != 0:
            raise EgressUnavailableError(
                f"the egress files on {self.base_url} could not be changed: "
                f"{(stderr or b'').decode(errors='replace')[-300:]}"
            )
        return stdout or b""

    def state_files(self) -> dict[str, Any]:
        """`policies` (file → owner), `secrets` (port → [owner, a domain, has rules]) and
        `bundles` (owners), as the engine has them; all empty without a keeper."""
        try:
            running = self._api.inspect_container(self.keeper)["State"]["Running"]
        except docker.errors.NotFound:
            running = False
        if not running:
            return {"policies": {}, "secrets": {}, "bundles": []}
        with docker_errors(f"reading the egress files on {self.base_url}"):
            output = self._exec(["python3", "-I", "-c", _STATE], f"{PROXY_UID}:{PROXY_UID}")
        state: dict[str, Any] = json.loads(output.decode())
        return state

    def unlink(self, names: list[str], *, as_proxy: bool) -> None:
        """Remove files of the config volume, as their owner (squid's user, or root)."""
        if not names:
            return
        user = f"{PROXY_UID}:{PROXY_UID}" if as_proxy else "0:0"
        with docker_errors(f"removing egress files on {self.base_url}"):
            self._exec(["/bin/rm", "-f", "--", *(f"{_CONFIG}/{n}" for n in names)], user)

    def engine_path(self, name: str) -> str:
        """Where a file of the config volume is on the engine's machine (a bind source)."""
        with docker_errors(f"inspecting volume {self.config_volume}"):
            mountpoint = str(self._api.inspect_volume(self.config_volume)["Mountpoint"])
        return f"{mountpoint}/{name}"

    def read_log(self, name: str) -> str:
        """One of the proxy's logs (`access.log`, `inject.log`); empty without one."""
        try:
            chunks, _ = self._api.get_archive(self.keeper, f"{_LOG}/{name}")
        except docker.errors.NotFound:
            return ""
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.next()
            stream = archive.extractfile(member) if member is not None else None
            return stream.read().decode(errors="replace") if stream is not None else ""

    def has_files(self) -> bool:
        """Whether the keeper or one of the volumes exists."""
        with docker_errors(f"inspecting the files of egress proxy {self.name}"):
            if self._api.containers(all=True, filters={"name": f"^/{self.keeper}$"}):
                return True
            found = self._api.volumes(filters={"name": self.config_volume}).get("Volumes") or []
            found += self._api.volumes(filters={"name": self.log_volume}).get("Volumes") or []
        return any(v.get("Name") in (self.config_volume, self.log_volume) for v in found)

    def remove(self) -> None:
        """The proxy, its egress network, the keeper and both volumes; safe on nothing."""
        super().remove()
        with docker_errors(f"removing the files of egress proxy {self.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_container(self.keeper, force=True)
            for volume in (self.config_volume, self.log_volume):
                with contextlib.suppress(docker.errors.NotFound):
                    self._api.remove_volume(volume, force=True)
