"""`domain_secrets` on the egress proxy's side: one certificate authority, one loopback
`ssl-bump` port and one ICAP secrets file per sandbox that has secrets.

Files, all in `<home>/egress/config/secrets/` (the proxy's `/etc/jsbx/secrets`, folder 0700
and files 0600, owned by squid's user; the values live here and nowhere else):

- `<port>.conf`, included by squid.conf: the bump port (its CA in `tls-cert=`), the
  `cache_peer` that sends that sandbox's CONNECTs to its secret domains there, and the access
  rules of the port;
- `<port>.pem`: the CA's certificate and private key (the key never leaves this folder);
- `<port>.json`: what `egress-inject` reads: `{"container_id", "secrets": [{"domain", "name",
  "placeholder", "value"}]}`.

The sandbox gets only the CA's certificate, in a bundle with the system CAs
(`<home>/egress/ca/<container id>.pem`, bound read-only over its system store).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_sandbox._exceptions import InternalServerError

__all__ = [
    "BUMP_PORTS",
    "SYSTEM_CA_BUNDLE",
    "SecretEntry",
    "SecretsConfig",
    "make_ca",
    "new_placeholder",
    "render_sandbox_conf",
    "sandbox_bundle",
    "secret_domains",
    "secrets_document",
]

BUMP_PORTS = range(40000, 41000)
"""Loopback ports of the proxy's per-sandbox ssl-bump listeners (squid.conf's `localport`)."""
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""The host's system CAs (Debian's path; the kernel image uses the same one)."""
PROXY_UID = 13  # Debian's `proxy` user, which squid and egress-inject run as
_BASE_CONF = "00-base.conf"


@dataclass(frozen=True)
class SecretEntry:
    """One secret as the proxy needs it (the value in clear: keep it out of logs)."""

    domain: str
    name: str
    placeholder: str
    value: str

    def __repr__(self) -> str:
        return f"SecretEntry(domain={self.domain!r}, name={self.name!r}, value=<hidden>)"


def new_placeholder(name: str) -> str:
    """A random, unguessable stand-in for a secret in the sandbox (no value hint in it)."""
    return f"jsbx-secret-{name.lower()}-{secrets.token_hex(16)}"


def _squid_domain(domain: str) -> str:
    """An allowlist entry as squid's dstdomain spells it (`*.x` → `.x`)."""
    return domain[1:] if domain.startswith("*.") else domain


class SecretsConfig:
    """The per-sandbox secret files of one store's proxy."""

    def __init__(self, config_dir: Path, folder: Path) -> None:
        self.directory = config_dir / "secrets"
        self.bundle_dir = folder / "ca"

    def prepare(self) -> None:
        """The secrets folder (0700, squid's user) with its always-present base file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        os.chmod(self.bundle_dir, 0o755)  # noqa: S103  (public certificates only)
        _chown_proxy(self.directory)
        base = self.directory / _BASE_CONF
        if not base.exists():
            _write_private(
                base, "# squid's `include` needs one match; the sandboxes' files follow.\n"
            )

    def owners(self) -> dict[int, str]:
        """Bump port → container id, for every sandbox with secrets."""
        found: dict[int, str] = {}
        if not self.directory.is_dir():
            return found
        for path in self.directory.glob("*.json"):
            if not path.stem.isdigit():
                continue
            try:
                found[int(path.stem)] = str(json.loads(path.read_text())["container_id"])
            except (OSError, ValueError, KeyError, TypeError):
                found[int(path.stem)] = ""
        return found

    def warm_targets(self) -> list[tuple[int, str]]:
        """(bump port, a host its peer accepts) for every sandbox with secrets."""
        targets: list[tuple[int, str]] = []
        for port in sorted(self.owners()):
            try:
                data = json.loads((self.directory / f"{port}.json").read_text())
                domain = str(data["secrets"][0]["domain"])
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
            targets.append(
                (port, "jsbx-warmup" + domain[1:] if domain.startswith("*.") else domain)
            )
        return targets

    def bundle_path(self, container_id: str) -> Path:
        """The sandbox's CA bundle (system CAs and its own CA's certificate)."""
        return self.bundle_dir / f"{container_id}.pem"

    def add(
        self,
        container_id: str,
        sandbox_ip: str,
        entries: list[SecretEntry],
        days: int,
    ) -> int:
        """Write one sandbox's CA, bump port, peer rules and secrets; return its port.

        The caller reconfigures squid afterwards.
        """
        self.prepare()
        used = set(self.owners())
        port = next((p for p in BUMP_PORTS if p not in used), None)
        if port is None:
            raise InternalServerError(
                "Invalid network_policy.domain_secrets: every bump port of the egress proxy is "
                "in use",
                param="network_policy.domain_secrets",
            )
        cert, key = _make_ca(container_id, days)
        _write_private(self.directory / f"{port}.pem", cert + key)
        _write_private(self.directory / f"{port}.json", secrets_document(container_id, entries))
        _write_private(
            self.directory / f"{port}.conf",
            render_sandbox_conf(
                container_id, port, sandbox_ip, secret_domains([e.domain for e in entries])
            ),
        )
        bundle = self.bundle_path(container_id)
        partial = bundle.with_name(f".{bundle.name}.partial")
        partial.write_text(sandbox_bundle(cert))
        os.chmod(partial, 0o644)
        partial.replace(bundle)
        return port

    def drop(self, keep: set[str]) -> bool:
        """Remove every sandbox's files whose owner is not in `keep`; whether any went."""
        removed = False
        for port, owner in self.owners().items():
            if owner in keep:
                continue
            for suffix in (".conf", ".pem", ".json"):  # the .conf first: squid stops using it
                (self.directory / f"{port}{suffix}").unlink(missing_ok=True)
            removed = True
        if self.bundle_dir.is_dir():
            for bundle in self.bundle_dir.glob("*.pem"):
                if bundle.stem not in keep:
                    bundle.unlink(missing_ok=True)
        return removed


def secrets_document(container_id: str, entries: list[SecretEntry]) -> str:
    """`<port>.json`, what egress-inject reads (it holds the values)."""
    secrets = [
        {"domain": e.domain, "name": e.name, "placeholder": e.placeholder, "value": e.value}
        for e in entries
    ]
    return json.dumps({"container_id": container_id, "secrets": secrets})


def secret_domains(domains: list[str]) -> list[str]:
    """Secret domains as squid spells them, sorted, once each."""
    return sorted({_squid_domain(domain) for domain in domains})


def sandbox_bundle(cert: str) -> str:
    """A sandbox's CA bundle: this host's system CAs, then its own CA's certificate."""
    system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.exists() else ""
    return system.rstrip("\n") + "\n" + cert


def make_ca(container_id: str, days: int) -> tuple[str, str]:
    """A fresh CA for one sandbox: (certificate PEM, private key PEM)."""
    return _make_ca(container_id, days)


def render_sandbox_conf(container_id: str, port: int, sandbox_ip: str, domains: list[str]) -> str:
    """squid.conf lines for one sandbox with secrets (included before the main access chain)."""
    p = port
    return (
        f"# sandbox {container_id}: its CONNECTs to its secret domains go to its own bump port.\n"
        f"http_port 127.0.0.1:{p} ssl-bump tls-cert=/etc/jsbx/secrets/{p}.pem "
        f"generate-host-certificates=on dynamic_cert_mem_cache_size=1MB name=jsbx_bump_{p}\n"
        f"cache_peer 127.0.0.1 parent {p} 0 no-query no-digest no-netdb-exchange "
        f"name=jsbx_peer_{p}\n"
        f"acl jsbx_src_{p} src {sandbox_ip}\n"
        f"acl jsbx_dst_{p} dstdomain {' '.join(domains)}\n"
        f"acl jsbx_port_{p} localport {p}\n"
        f"acl jsbx_warm_{p} req_header X-Jsbx-Warm ^{p}$\n"
        f"cache_peer_access jsbx_peer_{p} allow jsbx_src_{p} jsbx_dst_{p} CONNECT\n"
        f"cache_peer_access jsbx_peer_{p} allow jsbx_front jsbx_loopback jsbx_warm_{p}\n"
        f"cache_peer_access jsbx_peer_{p} deny all\n"
        f"never_direct allow jsbx_src_{p} jsbx_dst_{p} CONNECT\n"
        # On the bump port: the peer's CONNECT, then the decrypted requests, to these domains
        # only, never to a blocked address or the proxy's own pages.
        f"http_access deny jsbx_port_{p} !jsbx_dst_{p}\n"
        + "".join(
            # A request inside a tunnel goes to the tunnel's own domain: a Host header naming
            # another secret domain would otherwise get that domain's secret.
            f"acl jsbx_dst_{p}_{i} dstdomain {domain}\n"
            f"acl jsbx_tunnel_{p}_{i} ssl::server_name {domain}\n"
            f"http_access deny jsbx_port_{p} !CONNECT jsbx_dst_{p}_{i} !jsbx_tunnel_{p}_{i}\n"
            for i, domain in enumerate(domains)
        )
        + f"http_access deny jsbx_port_{p} blocked_address\n"
        f"http_access deny jsbx_port_{p} proxy_internal\n"
        f"http_access deny jsbx_port_{p} !safe_methods\n"
        f"http_access allow jsbx_port_{p} tls_port\n"
        f"http_access deny jsbx_port_{p}\n"
    )


def _make_ca(container_id: str, days: int) -> tuple[str, str]:
    """A fresh CA (certificate PEM, key PEM) made with the openssl command line tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise InternalServerError(
            "Invalid network_policy.domain_secrets: the openssl command is missing on this host",
            param="network_policy.domain_secrets",
        )
    with tempfile.TemporaryDirectory(prefix="jsbx-ca-") as scratch:
        key_path, cert_path = Path(scratch) / "key.pem", Path(scratch) / "cert.pem"
        result = subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                "-days", str(max(1, days)), "-keyout", str(key_path), "-out", str(cert_path),
                "-subj", f"/O=jupyter-sandbox/OU={container_id}/CN=jupyter-sandbox egress CA",
                "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InternalServerError(
                f"Invalid network_policy.domain_secrets: making the sandbox's certificate "
                f"authority failed ({result.stderr.strip()[-200:]})",
                param="network_policy.domain_secrets",
            )
        return cert_path.read_text(), key_path.read_text()


def _chown_proxy(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, PROXY_UID, PROXY_UID)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as 0600, squid's user's (when we may give it away)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(partial, 0o600)
    _chown_proxy(partial)
    partial.replace(path)
