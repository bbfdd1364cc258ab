"""The nodes' second way in: ssh with keys made per cluster (`DOCKER_HOST=ssh://root@<node>`).

docker and docker-py reach an engine over ssh by running `docker system dial-stdio` on the
node, so the node runs Debian's sshd (`node_recipe/sshd_config`): public-key authentication
only (no password, no keyboard-interactive, no PAM), no forwarding of any kind. `cluster up`
makes one ed25519 client key per cluster and one ed25519 host key per node; the node gets
its host key and the client's public key (files 0600, root's, in /etc/jsbx-node/ssh), the
host keeps, in `<home>/clusters/<name>/ssh/` (0700):

- `id_ed25519` (0600): the client's private key;
- `known_hosts`: each node's host key under its address (a node with another key is refused);
- `config`: an ssh_config block per node (`ssh -F config <address> docker info` works).

docker-py (paramiko) reads only `~/.ssh/config` and `~/.ssh/known_hosts` and cannot
`Include`: copy both files' lines there to use `DOCKER_HOST=ssh://root@<address>`.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jupyter_sandbox.backends.cluster_certs import write_private

__all__ = ["SSH_USER", "ClusterSsh"]

SSH_USER = "root"
"""The engine's socket is root's; a docker group member would be root's equal anyway."""
NODE_FOLDER = "ssh"
"""Under /etc/jsbx-node in the node (see node-entrypoint)."""


def _private_openssh(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def _public_openssh(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


class ClusterSsh:
    """The host side of a cluster's ssh keys, in `folder` (`<home>/clusters/<name>/ssh`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def identity(self) -> Path:
        """The client's private key (0600)."""
        return self.folder / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def config(self) -> Path:
        """An ssh_config with one `Host` block per node."""
        return self.folder / "config"

    def _client_public(self) -> bytes:
        if not self.identity.exists():
            write_private(self.identity, _private_openssh(ed25519.Ed25519PrivateKey.generate()))
        key = serialization.load_ssh_private_key(self.identity.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{self.identity} is not an ed25519 key")
        return _public_openssh(key)

    def node_files(self, address: str) -> dict[str, bytes]:
        """A fresh host key for the node at `address`, recorded on the host (known_hosts,
        config); returns the node's files, relative to /etc/jsbx-node."""
        host = ed25519.Ed25519PrivateKey.generate()
        client = self._client_public()
        with self.known_hosts.open("ab") as known:
            known.write(address.encode() + b" " + _public_openssh(host) + b"\n")
        block = (
            f"Host {address}\n"
            f"    User {SSH_USER}\n"
            f"    IdentityFile {self.identity}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    StrictHostKeyChecking yes\n"
            "    PasswordAuthentication no\n"
        )
        with self.config.open("a") as config:
            config.write(block)
        return {
            f"{NODE_FOLDER}/authorized_keys": client + b"\n",
            f"{NODE_FOLDER}/ssh_host_ed25519_key": _private_openssh(host),
        }

    def docker_host(self, address: str) -> str:
        """The `DOCKER_HOST` that reaches the node at `address` over ssh."""
        return f"ssh://{SSH_USER}@{address}"
