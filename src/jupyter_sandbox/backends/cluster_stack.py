"""What `cluster up` runs on top of the nodes: the shared PostgreSQL store and the API servers
(`cluster_postgres`, `cluster_servers`), and the variables that point clients at them.

The servers use the backend named at `up` (`swarm` by default: sandboxes scheduled on the
nodes through the manager; `docker` runs them on this host's engine, which is how the
multi-server machinery is tested without the nodes). All of them share one state folder,
`<cluster folder>/home`, and label every object they make with the cluster's name, so
`down` finds and removes it with the nodes.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.cluster_certs import write_private
from jupyter_sandbox.backends.cluster_nodes import CLUSTER, LocalCluster
from jupyter_sandbox.backends.cluster_postgres import ClusterPostgres, PostgresState
from jupyter_sandbox.backends.cluster_servers import (
    ServerProcess,
    list_servers,
    start_servers,
    stop_servers,
    wait_answering,
)
from jupyter_sandbox.backends.kernel import remove_socket_dir
from jupyter_sandbox.settings import Settings

__all__ = ["ClusterStack", "StackState", "check_backend"]


@dataclass(frozen=True)
class StackState:
    """The database and servers, as `cluster status` shows them."""

    backend: str | None
    postgres: PostgresState | None
    servers: list[ServerProcess]


class ClusterStack:
    """The store and API servers of `cluster`."""

    def __init__(self, cluster: LocalCluster, settings: Settings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.postgres = ClusterPostgres(cluster.folder)
        self.api_key_file = cluster.folder / "api-key"
        self.home = cluster.folder / "home"
        self._record = cluster.folder / "stack.json"

    @property
    def backend(self) -> str | None:
        """The servers' backend, once `up` ran."""
        if not self._record.exists():
            return None
        return str(json.loads(self._record.read_text())["backend"])

    @property
    def api_key(self) -> str | None:
        """The servers' API key (the openai SDK's `api_key`)."""
        if not self.api_key_file.exists():
            return None
        return self.api_key_file.read_text().strip()

    def up(
        self, servers: int, backend: str, progress: Callable[[str], None] = lambda line: None
    ) -> list[ServerProcess]:
        """Start PostgreSQL and `servers` API servers; returns once every server answers.

        Raises:
            BadRequestError: `servers` out of range.
            ClusterError: PostgreSQL or a server did not start (the caller takes it down).
        """
        if not 1 <= servers <= 8:
            raise BadRequestError(f"servers={servers}: between 1 and 8", param="servers")
        write_private(self._record, json.dumps({"backend": backend}).encode())
        write_private(self.api_key_file, f"sk-cluster-{secrets.token_hex(24)}\n".encode())
        self.home.mkdir(mode=0o700, exist_ok=True)
        progress("starting PostgreSQL (the shared store)")
        self.postgres.start()
        progress(f"starting {servers} API server(s) (backend {backend})")
        started = start_servers(self.cluster.folder, servers, self._server_env(), self.api_key_file)
        wait_answering(started, progress=progress)
        return started

    def env(self) -> dict[str, str]:
        """The variables that point the CLI and `Client()` at this cluster's fleet."""
        backend = self.backend
        if backend is None:
            return self.cluster.env()
        docker = self.cluster.env() if backend != "docker" else {}
        return {
            **docker,
            "JUPYTER_SANDBOX_BACKEND": backend,
            "JUPYTER_SANDBOX_HOME": str(self.home),
            **self.postgres.env(),
        }

    def _server_env(self) -> dict[str, str]:
        """The servers' environment: this caller's own `JUPYTER_SANDBOX_*` settings are not
        passed on (`start_servers`), except the images it names."""
        labels = {**self.settings.extra_labels, CLUSTER: self.cluster.name}
        return {
            **self.env(),
            "JUPYTER_SANDBOX_IMAGE": self.settings.image,
            "JUPYTER_SANDBOX_EGRESS_IMAGE": self.settings.egress_image,
            "JUPYTER_SANDBOX_EXTRA_LABELS": json.dumps(labels),
        }

    def state(self) -> StackState:
        """What runs now."""
        return StackState(self.backend, self.postgres.state(), list_servers(self.cluster.folder))

    def server_settings(self) -> Settings:
        """The settings the servers run with (for a Client that acts on their fleet)."""
        url = self.postgres.url() if self.postgres.port is not None else None
        return Settings(
            home=self.home,
            store_url=SecretStr(url) if url else None,
            backend=self.backend or "docker",
            image=self.settings.image,
            extra_labels={**self.settings.extra_labels, CLUSTER: self.cluster.name},
        )

    def stop_servers(self) -> list[str]:
        """Stop the API servers (first, so that nothing new is made while the rest goes)."""
        return stop_servers(self.cluster.folder)

    def down(self) -> list[str]:
        """Stop the servers, then PostgreSQL, and remove their files; what was removed.
        The nodes and every labelled object go with `LocalCluster.down` after this."""
        removed = stop_servers(self.cluster.folder)
        sockets = self.server_settings().sockets_root  # before the store's port is forgotten
        removed += self.postgres.remove()
        # A channel folder left by a server that died mid-create is a tmpfs: unmount it
        # before any folder is deleted (a mount point cannot be).
        for entry in sorted(sockets.iterdir()) if sockets.is_dir() else []:
            remove_socket_dir(entry)
            removed.append(f"channel folder {entry}")
        # The kernels' socket folders may live outside the cluster folder (short paths).
        if not sockets.is_relative_to(self.cluster.folder) and sockets.exists():
            shutil.rmtree(sockets)
            removed.append(f"folder {sockets}")
        return removed


def check_backend(name: str) -> str:
    """`name` if the servers can use that backend here.

    Raises:
        BadRequestError: an unknown backend (param `backend`).
    """
    from jupyter_sandbox.backends.registry import BACKENDS

    if name not in BACKENDS:
        raise BadRequestError(
            f"backend {name!r} is not available in this version (known: "
            f"{', '.join(sorted(BACKENDS))}); `cluster up --backend docker` runs the servers' "
            "sandboxes on this host's engine",
            param="backend",
        )
    return name
