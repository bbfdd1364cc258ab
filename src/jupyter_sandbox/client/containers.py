"""`client.containers`: create, retrieve, list, delete, and execute code in sandboxes."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.base import KernelChannel
from jupyter_sandbox.client.files import ContainerFiles, list_params
from jupyter_sandbox.client.snapshots import ContainerSnapshots, finish_create
from jupyter_sandbox.core.execution import OutputCallback
from jupyter_sandbox.core.kernels import max_message
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.types.container import Container, ContainerDeleted, IdleAction
from jupyter_sandbox.types.egress import EgressDecision
from jupyter_sandbox.types.execution import Execution
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.params import (
    NOT_GIVEN,
    ContainerSkillParam,
    ExpiresAfterParam,
    NetworkPolicyParam,
    NotGiven,
    given,
)

if TYPE_CHECKING:
    from jupyter_sandbox.client._services import ClientServices

__all__ = ["Containers"]

_T = TypeVar("_T")


def _listed(values: Iterable[_T] | None) -> object:
    """A one-pass iterable as a list; lists, tuples and strings (refused later) as they are."""
    if values is None or isinstance(values, builtins.list | tuple | str):
        return values
    return builtins.list(values)


@api_errors
class Containers:
    """`client.containers`: create, retrieve, list, delete, and execute code."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client
        self.files = ContainerFiles(client)
        self.snapshots = ContainerSnapshots(client)

    def create(
        self,
        *,
        name: str,
        memory_limit: str | NotGiven | None = NOT_GIVEN,
        file_ids: Sequence[str] | NotGiven | None = NOT_GIVEN,
        network_policy: NetworkPolicyParam | NotGiven | None = NOT_GIVEN,
        skills: Iterable[ContainerSkillParam] | NotGiven | None = NOT_GIVEN,
        expires_after: ExpiresAfterParam | NotGiven | None = NOT_GIVEN,
        lifetime_seconds: int | NotGiven | None = NOT_GIVEN,
        idle_action: IdleAction | NotGiven | None = NOT_GIVEN,
        snapshot_id: str | NotGiven | None = NOT_GIVEN,
    ) -> Container:
        """Create a sandbox and wait until its kernel answers. A keyword left out or None
        takes its default (1g, no files, no network, no skills, 20 idle minutes, 1 h).

        Args:
            idle_action: extension: `"expire"` (default setting) or `"pause"` (an idle sandbox
                is frozen, and resumed by its next execute or file call).
            snapshot_id: extension: fork this snapshot (files, variables, imports restored).

        Raises:
            BadRequestError: a parameter is invalid (`param` names it).
            NotFoundError: the kernel image is missing (the message says how to build it).
            APIConnectionError: the Docker engine is unreachable.
        """
        given_params: dict[str, object] = {
            "name": name,
            "memory_limit": given(memory_limit),
            "file_ids": _listed(given(file_ids)),
            "network_policy": given(network_policy),
            "skills": _listed(given(skills)),
            "expires_after": given(expires_after),
            "lifetime_seconds": given(lifetime_seconds),
            "idle_action": given(idle_action),
            "snapshot_id": given(snapshot_id),
        }
        params = {key: value for key, value in given_params.items() if value is not None}
        self._client.sweep()
        # issue 18: a fork's snapshot is checked before anything boots
        fork_of = given(snapshot_id)
        snapshot = (
            self._client._snapshots.check(fork_of, self._client.project)
            if fork_of is not None
            else None
        )
        container = self._client._containers.create(params, project=self._client.project)
        return finish_create(self._client, container, given(idle_action), snapshot)

    def retrieve(self, container_id: str) -> Container:
        """One sandbox, by id."""
        self._client.sweep()
        return self._client._containers.retrieve(container_id, project=self._client.project)

    def list(
        self,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | NotGiven | None = NOT_GIVEN,
        name: str | NotGiven | None = NOT_GIVEN,
    ) -> CursorPage[Container]:
        """A page of sandboxes (newest first); iterating it walks every page."""
        self._client.sweep()
        params = list_params(limit, order, after)
        return self._client._containers.list(params, name=given(name), project=self._client.project)

    def delete(self, container_id: str) -> ContainerDeleted:
        """Stop and remove a sandbox with everything it holds."""
        return self._client._containers.delete(container_id, project=self._client.project)

    def execute(
        self,
        container_id: str,
        code: str,
        *,
        timeout: float | NotGiven | None = NOT_GIVEN,
        on_output: OutputCallback | NotGiven | None = NOT_GIVEN,
    ) -> Execution:
        """Run code in the sandbox's kernel (state persists between calls).

        Args:
            timeout: seconds before the run is interrupted (then the kernel restarted if it
                stays busy); None waits as long as it takes.
            on_output: called with each output as it arrives.
        """
        seconds = check_seconds(given(timeout), "timeout")  # before anything else: fail fast
        self._client.sweep()
        record = self._client._resumed(container_id, self._client.project)
        return self._client._executions.execute(
            record, code, timeout=seconds, on_output=given(on_output)
        )

    def interrupt(self, container_id: str) -> None:
        """Send SIGINT to the sandbox's kernel (what Jupyter's interrupt button does)."""
        record = self._client._resumed(container_id, self._client.project)
        self._client._executions.interrupt(record)

    def restart(self, container_id: str) -> None:
        """Kill every process in the sandbox and start a fresh kernel; files are kept."""
        self._client.sweep()
        record = self._client._resumed(container_id, self._client.project)
        self._client._executions.restart(record)

    def egress_log(self, container_id: str) -> builtins.list[EgressDecision]:
        """Every egress decision (allowed or refused, with the reason) for an allowlist sandbox.

        A refused request appears at once; an allowed HTTPS tunnel when it closes.
        """
        record = self._client._containers.get_record(container_id, project=self._client.project)
        return self._client._backend.egress_log(record.id)

    def logs(self, container_id: str, *, tail: int = 200) -> str:
        """The sandbox's own log: its supervisor's and kernel's last `tail` lines (at most
        256 KiB; what ipykernel captures goes to executions, not here)."""
        record = self._client._containers.get_record(container_id, project=self._client.project)
        return self._client._backend.logs(record.id, 1.0, tail=tail, max_bytes=256 * 2**10)

    def connection_info(self, container_id: str) -> dict[str, Any]:
        """A Jupyter connection dict for the sandbox's kernel (Docker: ipc transport, host
        paths).

        Raises:
            BadRequestError: (`kernel_channel`) the sandbox uses the encrypted tcp channel.
        """
        record = self._client._resumed(container_id, self._client.project)
        endpoint = self._client._backend.kernel_endpoint(record.socket_dir, record.kernel_key)
        if endpoint.transport != "ipc":
            raise BadRequestError(
                f"sandbox {container_id} uses the encrypted tcp kernel channel (gVisor or a "
                "remote engine): its kernel listens on the loopback of the sandbox's own "
                "network namespace (or behind the engine), which no connection file can name, "
                "and its CurveZMQ client key never leaves this host process. For Jupyter, use "
                "a sandbox kernelspec (`jupyter-sandbox kernelspec install --runtime runsc`), "
                "whose relay dials it; otherwise `containers.execute`",
                param="kernel_channel",
            )
        return endpoint.connection_info()

    def kernel_channel(self, container_id: str) -> KernelChannel:
        """A new, unconnected connection to the sandbox's kernel, made as this client reaches
        it (ipc sockets, or tcp with CurveZMQ, whose client key stays inside the object): for
        a relay such as the Jupyter provisioner's, which closes it when done."""
        record = self._client._resumed(container_id, self._client.project)
        backend = self._client._backend
        endpoint = backend.kernel_endpoint(record.socket_dir, record.kernel_key)
        return backend.connect_kernel(endpoint, max_message(self._client.settings))
