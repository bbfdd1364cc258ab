"""Allowlist egress on a remote Docker engine (a node): the same squid proxy, run ON that
engine, with every file it and its sandboxes need on the engine's volumes, never on this host.

On the engine, per store (all labelled like the local proxy's objects):

- `jsbx-egress-<store>`: the proxy, hardened as locally, its egress bridge its only route out,
  at `.2` on every sandbox's internal network; /etc/jsbx is the volume
  `jsbx-egress-<store>-config` mounted read-only, /var/log/jsbx the volume `...-log`.
- `jsbx-egress-<store>-files`: the keeper. No network, no capability, a read-only root, it
  runs `sleep` and only holds both volumes writable, so this host can put files there (the
  archive API, with owners and modes set in the tar) and remove them (`rm` by exec, as the
  files' owner: root for lists and bundles, squid's user for secrets).
- The config volume is the local `<home>/egress/config` (squid.conf, `policies/`, `secrets/`
  0700 squid's), plus `resolv.conf` (no nameserver) and `ca/<sandbox id>.pem` (the system CAs
  and the sandbox's own CA, domain_secrets only). A sandbox gets those two files bound
  read-only from the volume's mount point on the engine's machine: a path there, never here.

Isolation is the local design's: one internal /29 per sandbox (proxy `.2`, sandbox `.3`, no
gateway), the proxy the only thing on it, secrets readable by squid's user alone.

For a backend that places sandboxes on nodes (Swarm), the two halves of `attach` are public:
`prepare` before the sandbox exists (proxy up, the proxy on the sandbox's network, environment,
files to bind) and `admit` once its address is known (its list, and its secrets' rules).
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

from jupyter_sandbox.backends.egress import (
    PROXY_PORT,
    EgressProxy,
    EgressUnavailableError,
    SandboxNetwork,
)
from jupyter_sandbox.backends.egress_network import (
    CA_STORE,
    EgressNetworks,
    NetworkAttachment,
    parse_access_log,
    parse_inject_log,
    proxy_environment,
)
from jupyter_sandbox.backends.egress_secrets import (
    BUMP_PORTS,
    SecretEntry,
    make_ca,
    new_placeholder,
    render_sandbox_conf,
    sandbox_bundle,
    secret_domains,
    secrets_document,
)
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.docker import docker_errors
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.egress import EgressDecision

__all__ = ["RemoteEgressNetworks", "RemoteEgressProxy", "remote_egress"]

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


def _file(name: str, data: bytes | None, *, uid: int, mode: int) -> tuple[tarfile.TarInfo, bytes]:
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
                _file("policies", None, uid=0, mode=0o755),
                _file("ca", None, uid=0, mode=0o755),
                _file("secrets", None, uid=PROXY_UID, mode=0o700),
                _file("squid.conf", self.render_config().encode(), uid=0, mode=0o644),
                _file("resolv.conf", _RESOLV_CONF.encode(), uid=0, mode=0o644),
                _file(
                    "secrets/00-base.conf",
                    b"# squid's `include` needs one match; the sandboxes' files follow.\n",
                    uid=PROXY_UID,
                    mode=0o600,
                ),
            ]
            upstream_ca = self._settings.test_egress_upstream_ca
            if upstream_ca:
                members.append(
                    _file("test-upstream-ca.pem", upstream_ca.encode(), uid=0, mode=0o644)
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
            _file(name, b"", uid=PROXY_UID, mode=0o640) for name in ("access.log", "inject.log")
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

    def remove(self) -> None:
        """The proxy, its egress network, the keeper and both volumes; safe on nothing."""
        super().remove()
        with docker_errors(f"removing the files of egress proxy {self.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_container(self.keeper, force=True)
            for volume in (self.config_volume, self.log_volume):
                with contextlib.suppress(docker.errors.NotFound):
                    self._api.remove_volume(volume, force=True)


class RemoteEgressNetworks(EgressNetworks):
    """`EgressNetworks` for a remote engine: lists, secrets and bundles on its volumes."""

    _proxy: RemoteEgressProxy

    def __init__(self, settings: Settings, proxy: RemoteEgressProxy) -> None:
        super().__init__(settings, proxy)

    def check(self, policy: NetworkPolicyAllowlist) -> None:
        """Nothing to refuse: the tar gives the secret files squid's user (no root here)."""

    def attach(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
    ) -> NetworkAttachment:
        """`prepare` on a fresh internal /29 of the engine, then `admit` its `.3`."""
        attachment = self.prepare(sandbox_id, policy, labels, deadline)
        self.admit(sandbox_id, policy, attachment.network.sandbox_ip, deadline)
        return attachment

    def prepare(
        self,
        sandbox_id: str,
        policy: NetworkPolicyAllowlist,
        labels: dict[str, str],
        deadline: float,
        network: SandboxNetwork | None = None,
    ) -> NetworkAttachment:
        """Before the sandbox exists: the proxy up, the proxy at `network.proxy_ip` on the
        sandbox's network (None: a new internal /29 here), the CA and its bundle.

        The sandbox can reach nothing until `admit` names its address.

        Raises:
            EgressUnavailableError: the proxy cannot run (creation must then fail).
        """
        proxy = self._proxy
        with self._locked():
            proxy.ensure_running(proxy.sandbox_networks(), deadline)
            if network is None:
                network = proxy.create_sandbox_network(sandbox_id, labels)
            proxy.connect(network)
            environment = proxy_environment(network.proxy_ip)
            resolv_conf = proxy.engine_path("resolv.conf")
            if not policy.domain_secrets:
                return NetworkAttachment(network, resolv_conf, environment)
            placeholders = {s.name: new_placeholder(s.name) for s in policy.domain_secrets}
            entries = [
                SecretEntry(s.domain, s.name, placeholders[s.name], s.value.get_secret_value())
                for s in policy.domain_secrets
            ]
            used = {int(port) for port in proxy.state_files()["secrets"]}
            port = next((p for p in BUMP_PORTS if p not in used), None)
            if port is None:
                raise EgressUnavailableError(
                    "Invalid network_policy.domain_secrets: every bump port of the egress "
                    "proxy is in use",
                    param="network_policy.domain_secrets",
                )
            cert, key = make_ca(sandbox_id, self._settings.max_lifetime_seconds // 86400 + 2)
            proxy.put(
                [
                    _file(f"secrets/{port}.pem", (cert + key).encode(), uid=PROXY_UID, mode=0o600),
                    _file(
                        f"secrets/{port}.json",
                        secrets_document(sandbox_id, entries).encode(),
                        uid=PROXY_UID,
                        mode=0o600,
                    ),
                    _file(f"ca/{sandbox_id}.pem", sandbox_bundle(cert).encode(), uid=0, mode=0o644),
                ]
            )
        environment.update(placeholders)
        environment.update({"SSL_CERT_FILE": CA_STORE, "REQUESTS_CA_BUNDLE": CA_STORE})
        return NetworkAttachment(
            network=network,
            resolv_conf=resolv_conf,
            environment=environment,
            ca_bundle=proxy.engine_path(f"ca/{sandbox_id}.pem"),
        )

    def admit(
        self, sandbox_id: str, policy: NetworkPolicyAllowlist, sandbox_ip: str, deadline: float
    ) -> None:
        """Once the sandbox's address is known: its list, and its secrets' bump rules.

        Raises:
            EgressUnavailableError: squid did not take the secrets' rules in time.
        """
        proxy = self._proxy
        with self._locked():
            self._write_policy(sandbox_ip, sandbox_id, policy.allowed_domains)
            if not policy.domain_secrets:
                return
            owned = [
                int(port)
                for port, (owner, _, _) in proxy.state_files()["secrets"].items()
                if owner == sandbox_id
            ]
            if not owned:
                raise EgressUnavailableError(
                    f"Invalid network_policy.domain_secrets: sandbox {sandbox_id} was not "
                    "prepared on this engine",
                    param="network_policy.domain_secrets",
                )
            domains = secret_domains([s.domain for s in policy.domain_secrets])
            rules = render_sandbox_conf(sandbox_id, owned[0], sandbox_ip, domains)
            proxy.put(
                [_file(f"secrets/{owned[0]}.conf", rules.encode(), uid=PROXY_UID, mode=0o600)]
            )
            proxy.reconfigure(deadline)

    def _write_policy(self, address: str, container_id: str, domains: list[str]) -> None:
        document = json.dumps({"container_id": container_id, "allowed_domains": domains})
        self._proxy.put([_file(f"policies/{address}.json", document.encode(), uid=0, mode=0o644)])

    def _drop_policies(self, keep: set[str]) -> None:
        state = self._proxy.state_files()
        names = [f"policies/{n}" for n, owner in state["policies"].items() if owner not in keep]
        self._proxy.unlink(names, as_proxy=False)

    def _drop_secrets(self, keep: set[str]) -> bool:
        proxy = self._proxy
        state = proxy.state_files()
        ports = [port for port, (owner, _, _) in state["secrets"].items() if owner not in keep]
        # The .conf first: squid stops using the port before its key and values go.
        proxy.unlink([f"secrets/{p}.conf" for p in ports], as_proxy=True)
        proxy.unlink(
            [f"secrets/{p}{suffix}" for p in ports for suffix in (".pem", ".json")], as_proxy=True
        )
        proxy.unlink([f"ca/{b}.pem" for b in state["bundles"] if b not in keep], as_proxy=False)
        if ports and keep and proxy.state() == "running":
            proxy.reconfigure(time.monotonic() + self._settings.egress_start_timeout)
        return bool(ports)

    def log(self, container_id: str) -> list[EgressDecision]:
        """The proxy's decisions about one sandbox (its logs go with the proxy)."""
        access = self._proxy.read_log("access.log").splitlines()
        injected = self._proxy.read_log("inject.log").splitlines()
        decisions = parse_access_log(access, container_id)
        decisions += parse_inject_log(injected, container_id)
        return sorted(decisions, key=lambda d: d.time)


def remote_egress(settings: Settings, engine: docker.DockerClient) -> RemoteEgressNetworks:
    """Allowlist egress for sandboxes on `engine` (a remote engine, or one Swarm node's)."""
    return RemoteEgressNetworks(settings, RemoteEgressProxy(settings, engine))
