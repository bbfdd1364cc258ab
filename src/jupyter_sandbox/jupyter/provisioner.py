"""A `jupyter_client` kernel provisioner: every Jupyter kernel is a sandbox.

Registered as `jupyter-sandbox` in the `jupyter_client.kernel_provisioners` entry point
group; a kernelspec selects it with

    "metadata": {"kernel_provisioner": {"provisioner_name": "jupyter-sandbox",
                 "config": {"memory_limit": "1g", "network_policy": "disabled"}}}

and each `config` key becomes a trait below (`"runtime": "runsc"` runs the kernels under
gVisor). The kernel manager never dials the sandbox: it gets the sockets and key of a
`KernelRelay` (a thread of this process, sockets in a private 0700 folder) that alone
connects to the kernel, through the Client's own connection object (`ipc` sockets, or the
encrypted tcp channel of gVisor and remote engines, whose CurveZMQ client key stays in that
object), checks and re-signs every message, and filters what the sandbox sends (outputs made
safe, comms and unknown types dropped; see `kernel_relay`). Otherwise this class maps the
manager's process lifecycle onto the Client API:

    launch_kernel   first start: containers.create;  restart: containers.restart (files kept);
                    then the relay dials the (new) kernel
    send_signal     SIGINT: containers.interrupt
    poll / wait     the sandbox is live and the kernel's heartbeat echoes (tcp: through
                    the relay's connection)
    kill/terminate  mark the kernel stopped; the cleanup or relaunch that follows stops it
    cleanup         shutdown: containers.delete (idempotent), stop the relay, close the Client

The kernelspec's `env` and the launch `cwd` are deliberately not passed into the sandbox: the
host's environment stays on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Any as AnyTrait
from traitlets import Dict, Int, List, Unicode

from jupyter_sandbox._exceptions import ConflictError, NotFoundError
from jupyter_sandbox._options import parse_memory, parse_network
from jupyter_sandbox.client import Client
from jupyter_sandbox.jupyter.kernel_relay import KernelDialer, KernelRelay

_T = TypeVar("_T")
_HEARTBEAT_TIMEOUT = 1.0
# How often `wait` asks `poll`: jupyter_client's own interval for the same loop.
_POLL_INTERVAL = 0.1
_EXIT_DELETED = 0
_EXIT_DIED = 1


class SandboxProvisioner(KernelProvisionerBase):
    """Runs each kernel in a hardened Docker sandbox created through the Client API."""

    memory_limit = Unicode(None, allow_none=True, config=True, help="512m, 1g, 2g or 4g.")
    network_policy = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="'disabled', 'allow=a.com,b.com', or a network_policy object.",
    )
    image = Unicode(None, allow_none=True, config=True, help="Kernel image (default: settings).")
    runtime = Unicode(
        None,
        allow_none=True,
        config=True,
        help="OCI runtime: runc, or runsc for gVisor (default: settings).",
    )
    file_ids = List(Unicode(), config=True, help="Files to copy into /mnt/data at start.")
    skills = List(Dict(), config=True, help="Skills, by id or inline.")
    lifetime = Int(
        None, allow_none=True, config=True, help="Hard lifetime in seconds (default: settings)."
    )
    idle_minutes = Int(
        None,
        allow_none=True,
        config=True,
        help="Idle expiry in minutes (default: the lifetime, since Jupyter culls idle kernels).",
    )
    name = Unicode(None, allow_none=True, config=True, help="Sandbox name (default: kernel id).")
    home = Unicode(None, allow_none=True, config=True, help="State folder (default: settings).")
    project = Unicode("default", config=True, help="Project the sandboxes belong to.")
    extra_labels = Dict(config=True, help="Extra Docker labels on the sandbox's objects.")

    container_id: str | None = None
    _client: Client | None = None
    _exit_code: int | None = None
    _relay: KernelRelay | None = None
    _is_tcp = False  # the kernel's channel is tcp: heartbeats go through the relay's dialer

    @property
    def has_process(self) -> bool:
        """True while this provisioner holds a sandbox."""
        return self.container_id is not None

    # -- start -----------------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Nothing to prepare on the host: no ports, no connection file, no command."""
        kwargs.pop("extra_arguments", None)
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = list(self.kernel_spec.argv) if self.kernel_spec else []
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Create the sandbox (or restart its kernel, keeping files) and return its connection."""
        if self.container_id is None:
            container = await self._call(lambda client: client.containers.create(**self._params()))
            self.container_id = container.id
            self.log.info("kernel %s runs in sandbox %s", self.kernel_id, container.id)
        else:
            container_id = self.container_id
            try:
                await self._call(lambda client: client.containers.restart(container_id))
            except (NotFoundError, ConflictError) as exc:
                self.container_id = None
                raise RuntimeError(
                    f"Sandbox {container_id} has ended ({exc.message}); its kernel cannot "
                    "restart. Shut this kernel down and start a new one."
                ) from exc
        self._exit_code = None
        container_id = self.container_id
        try:
            await self._relay_to(container_id)
        except BaseException:
            await self.cleanup()  # fail closed: no relay, no sandbox
            raise
        return self.connection_info

    async def _relay_to(self, container_id: str, key: str | None = None) -> None:
        """Point the relay (started on first use) at the sandbox's current kernel."""
        from jupyter_sandbox.backends.kernel_tcp import TcpKernelConnection

        kernel = await self._call(lambda client: client.containers.kernel_channel(container_id))
        try:
            if not isinstance(kernel, KernelDialer):
                raise RuntimeError(
                    f"the kernel channel of sandbox {container_id} cannot be relayed"
                )
            self._is_tcp = isinstance(kernel, TcpKernelConnection)
            relay = self._relay
            if relay is None or not relay.is_alive:
                if relay is not None:
                    key = relay.key
                    await asyncio.to_thread(relay.close)
                relay = self._relay = await asyncio.to_thread(self._new_relay, key)
            await asyncio.to_thread(relay.connect_kernel, kernel)
        except BaseException:
            await asyncio.to_thread(kernel.close)  # idempotent: the relay may own it already
            raise
        info = relay.connection_info()
        info["key"] = str(info["key"]).encode()  # the kernel manager compares bytes keys
        self.connection_info = cast(KernelConnectionInfo, info)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": self.name or f"jupyter-kernel-{str(self.kernel_id)[:8]}",
            "memory_limit": parse_memory(self.memory_limit),
            "network_policy": parse_network(self.network_policy),
            "file_ids": list(self.file_ids) or None,
            "skills": [dict(s) for s in self.skills] or None,
            "lifetime_seconds": self.lifetime,
        }
        idle = self.idle_minutes
        if idle is None and self.lifetime is not None:
            idle = max(1, min(24 * 60, -(-self.lifetime // 60)))
        if idle is not None:
            params["expires_after"] = {"anchor": "last_active_at", "minutes": idle}
        return params

    # -- state -----------------------------------------------------------------------------

    async def poll(self) -> int | None:
        """None while the sandbox is live and its kernel answers the heartbeat, else a code."""
        if self.container_id is None:
            return _EXIT_DELETED
        if self._exit_code is not None:
            return self._exit_code
        if self._relay is not None and not self._relay.is_alive:
            self.log.error("the kernel relay of sandbox %s stopped", self.container_id)
            self._exit_code = _EXIT_DIED  # the restart that follows starts a new relay
            return self._exit_code
        container_id = self.container_id
        relay = self._relay

        def alive(client: Client) -> bool:
            try:
                if client.containers.retrieve(container_id).status not in ("ready", "paused"):
                    return False
            except NotFoundError:
                return False
            if self._is_tcp and relay is not None:
                return relay.heartbeat(_HEARTBEAT_TIMEOUT)
            return _heartbeat(client.containers.connection_info(container_id))

        if await self._call(alive):
            return None
        # Remembered until the next launch: a dead kernel stays dead, and asking again costs.
        self._exit_code = _EXIT_DIED
        return self._exit_code

    async def wait(self) -> int | None:
        """Wait until the kernel has stopped; return its exit code."""
        while True:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(_POLL_INTERVAL)

    # -- signals and stopping ------------------------------------------------------------------

    async def send_signal(self, signum: int) -> None:
        """SIGINT interrupts the kernel; SIGTERM and SIGKILL stop it; 0 checks it exists."""
        if self.container_id is None or signum == 0:
            return
        if signum == signal.SIGINT:
            container_id = self.container_id
            await self._call(lambda client: client.containers.interrupt(container_id))
        elif signum == signal.SIGKILL:
            await self.kill()
        elif signum == signal.SIGTERM:
            await self.terminate()
        else:
            self.log.warning("signal %s is not forwarded to sandbox kernels", signum)

    async def kill(self, restart: bool = False) -> None:
        """Mark the kernel killed; the cleanup or relaunch that follows stops it."""
        self._stop(-signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        """Mark the kernel terminated; the cleanup or relaunch that follows stops it."""
        self._stop(-signal.SIGTERM)

    def _stop(self, code: int) -> None:
        # The manager always follows a kill or terminate with cleanup (shutdown: the sandbox is
        # deleted) or a relaunch (restart: containers.restart kills every process first), and
        # it passes `restart=False` to kill even when restarting (`shutdown_kernel(now=True,
        # restart=True)`), so deleting here would lose the files a restart must keep.
        if self.container_id is not None:
            self._exit_code = code

    async def shutdown_requested(self, restart: bool = False) -> None:
        """The manager asked the kernel to exit; nothing to add."""

    async def cleanup(self, restart: bool = False) -> None:
        """On shutdown, delete the sandbox (if still there) and close the Client."""
        if restart:
            return
        await self._delete()
        self.container_id = None
        if self._relay is not None:
            relay, self._relay = self._relay, None
            await asyncio.to_thread(relay.close)
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    async def _delete(self) -> None:
        container_id = self.container_id
        if container_id is None:
            return

        def delete(client: Client) -> None:
            with contextlib.suppress(NotFoundError):  # expired or deleted elsewhere
                client.containers.delete(container_id)

        await self._call(delete)

    # -- persistence ---------------------------------------------------------------------

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        """The manager's wait: the kernel exits on request like a local one."""
        return recommended

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        """A start is a container plus a kernel: allow the Client's start timeout."""
        return max(recommended, self._settings_start_timeout())

    async def get_provisioner_info(self) -> dict[str, Any]:
        """What another process needs to manage this kernel's sandbox."""
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update(
            container_id=self.container_id,
            runtime=self.runtime,
            home=self.home,
            project=self.project,
            extra_labels=dict(self.extra_labels),
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the sandbox described by `get_provisioner_info`."""
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.home = provisioner_info.get("home")
        self.runtime = provisioner_info.get("runtime")
        self.project = provisioner_info.get("project") or "default"
        self.extra_labels = provisioner_info.get("extra_labels") or {}
        if self.container_id is not None:
            # This process needs its own relay; the loaded key keeps the clients' sessions valid.
            key = (provisioner_info.get("connection_info") or {}).get("key")
            if isinstance(key, bytes):
                key = key.decode()
            await self._relay_to(self.container_id, key if isinstance(key, str) else None)

    # -- plumbing -----------------------------------------------------------------------

    def _new_relay(self, key: str | None) -> KernelRelay:
        from jupyter_sandbox.backends.runtime.docker import SANDBOX_UID
        from jupyter_sandbox.core.kernels import max_message

        return KernelRelay(SANDBOX_UID, max_message(self._get_client().settings), key)

    def _settings_start_timeout(self) -> float:
        return self._client.settings.start_timeout if self._client is not None else 30.0

    def _get_client(self) -> Client:
        if self._client is None:
            overrides: dict[str, Any] = {}
            if self.image:
                overrides["image"] = self.image
            if self.runtime:
                overrides["runtime"] = self.runtime
            if self.extra_labels:
                overrides["extra_labels"] = dict(self.extra_labels)
            self._client = Client(
                home=Path(self.home) if self.home else None, project=self.project, **overrides
            )
        return self._client

    async def _call(self, operation: Callable[[Client], _T]) -> _T:
        """Run a blocking Client call in a worker thread (never on the server's event loop)."""
        return await asyncio.to_thread(lambda: operation(self._get_client()))


def _heartbeat(info: dict[str, Any]) -> bool:
    """True if the kernel's heartbeat echoes (the sandbox's socket is checked, never followed)."""
    from jupyter_sandbox.backends.kernel import KernelConnection
    from jupyter_sandbox.backends.runtime.docker import SANDBOX_UID

    path = f"{info['ip']}-{info['hb_port']}"
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(status.st_mode) or (os.geteuid() == 0 and status.st_uid != SANDBOX_UID):
        return False
    # A dead kernel leaves its socket file behind: a refused connect says so at once, where
    # an unanswered ping would cost the whole heartbeat timeout.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_HEARTBEAT_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        pass  # let the ping decide
    finally:
        probe.close()
    socket_dir = Path(str(info["ip"])).parent
    return KernelConnection(socket_dir, str(info["key"]), SANDBOX_UID).heartbeat(_HEARTBEAT_TIMEOUT)
