"""The hosted tools of `/v1/responses`, run in the project's sandboxes through the public
Client: `code_interpreter` (through `CodeInterpreter`) and `shell` (commands run by the
sandbox's kernel with `subprocess`, in a namespace of their own).

A sandbox that fails mid-call (killed, out of memory, gone) never fails the response: the call
is `failed`/`incomplete` and the model reads why.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from jupyter_sandbox._exceptions import APIError, NotFoundError
from jupyter_sandbox.client import Client
from jupyter_sandbox.code_interpreter import CodeInterpreter
from jupyter_sandbox.code_interpreter.adapters import tool_output_text
from jupyter_sandbox.code_interpreter.shell_commands import run_commands
from jupyter_sandbox.server.errors import QuotaExceededError
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCall,
    CodeInterpreterCallCompletedEvent,
    CodeInterpreterContainerAuto,
    CodeInterpreterContainerRef,
    CodeInterpreterOutputLogs,
    ContainerFileCitation,
    OutputItemAddedEvent,
    OutputItemDoneEvent,
)
from jupyter_sandbox.types.response_params import (
    CodeInterpreterTool,
    ContainerAutoParam,
    ContainerReferenceParam,
    ShellTool,
)
from jupyter_sandbox.types.responses import ShellAction, ShellCommandOutput

__all__ = ["SandboxTools"]

logger = logging.getLogger(__name__)

CODE_TIMEOUT = 300.0
EventSink = Callable[[Any], None]


def _key(memory_limit: str | None, network_policy: Any) -> str:
    policy = network_policy.model_dump(mode="json") if network_policy is not None else None
    return json.dumps([memory_limit, policy], sort_keys=True)


class SandboxTools:
    """Resolves the tools' containers and runs calls for one response.

    Args:
        client: the project's client view.
        containers: `auto` configuration key -> sandbox, carried over from the previous
            response of the conversation (updated in place).
        max_live: the project's live-sandbox quota, checked before an `auto` sandbox is made.
    """

    def __init__(self, client: Client, containers: dict[str, str], *, max_live: int) -> None:
        self.client = client
        self.containers = containers
        self.max_live = max_live
        self.interpreter = CodeInterpreter(client, timeout=CODE_TIMEOUT)

    # -- containers --------------------------------------------------------------------

    def check_explicit(self, tool: CodeInterpreterTool | ShellTool, param: str) -> None:
        """Fail early (404 naming the param) if a tool names an unknown container."""
        container_id: str | None = None
        if isinstance(tool, CodeInterpreterTool):
            if isinstance(tool.container, CodeInterpreterContainerRef):
                container_id = tool.container.container_id
            elif isinstance(tool.container, str) and tool.container != "auto":
                container_id = tool.container
        elif isinstance(tool.environment, ContainerReferenceParam):
            container_id = tool.environment.container_id
        if container_id is None:
            return
        try:
            self.client.containers.retrieve(container_id)
        except NotFoundError as exc:
            raise NotFoundError(f"No container {container_id!r}", param=param) from exc

    def container_for(self, tool: CodeInterpreterTool | ShellTool) -> str:
        """The sandbox a tool's calls run in; an `auto` one is made on first use and reused by
        every later response of the conversation while it is ready."""
        if isinstance(tool, CodeInterpreterTool):
            container = tool.container
            if isinstance(container, CodeInterpreterContainerRef):
                return container.container_id
            if isinstance(container, str) and container != "auto":
                return container
            auto = container if isinstance(container, CodeInterpreterContainerAuto) else None
            file_ids = auto.file_ids if auto else []
            memory, policy = (auto.memory_limit, auto.network_policy) if auto else (None, None)
        else:
            env = tool.environment
            if isinstance(env, ContainerReferenceParam):
                return env.container_id
            file_ids = env.file_ids if isinstance(env, ContainerAutoParam) else []
            memory = env.memory_limit if isinstance(env, ContainerAutoParam) else None
            policy = env.network_policy if isinstance(env, ContainerAutoParam) else None
        return self._auto(memory, policy, file_ids)

    def _auto(self, memory: str | None, policy: Any, file_ids: list[str]) -> str:
        key = _key(memory or self.client.settings.default_memory_limit, policy)
        known = self.containers.get(key)
        if known is not None and self._is_ready(known):
            for file_id in dict.fromkeys(file_ids):
                self.client.containers.files.create(known, file_id=file_id)
            return known
        if self.client.count_live() >= self.max_live:
            raise QuotaExceededError(
                f"Quota reached: this project may hold {self.max_live} live containers; the "
                "tool's auto container cannot be made",
                retry_after=60.0,
                should_retry=False,
                code="insufficient_quota",
            )
        params = CodeInterpreterContainerAuto.model_validate(
            {"memory_limit": memory, "network_policy": policy, "file_ids": file_ids}
        )
        container_id = self.interpreter.resolve(params)
        self.containers[key] = container_id
        return container_id

    def _is_ready(self, container_id: str) -> bool:
        try:
            return self.client.containers.retrieve(container_id).status in ("ready", "paused")
        except NotFoundError:
            return False

    # -- code_interpreter ----------------------------------------------------------------

    def run_code(
        self,
        code: str,
        container_id: str,
        *,
        on_event: EventSink | None,
        output_index: int,
        sequence_number: int,
    ) -> tuple[CodeInterpreterCall, list[ContainerFileCitation], str]:
        """Run code; return the call, the files it wrote, and what the model reads back.

        `on_event` gets the call's streaming events; the caller re-stamps their sequence
        numbers."""
        started: list[str] = []

        def forward(event: Any) -> None:
            if isinstance(event, OutputItemAddedEvent):
                started.append(event.item.id)
            if on_event is not None:
                on_event(event)

        try:
            call = self.interpreter.run(
                code,
                container=container_id,
                on_event=forward,
                output_index=output_index,
                sequence_number=sequence_number,
            )
        except APIError as exc:
            logger.warning("code_interpreter call in %s failed: %s", container_id, exc)
            call = CodeInterpreterCall(
                id=started[0] if started else "ci_" + secrets.token_hex(24),
                status="failed",
                container_id=container_id,
                code=code,
                outputs=[CodeInterpreterOutputLogs(logs=f"The sandbox failed: {exc.message}\n")],
            )
            if on_event is not None:
                if not started:
                    on_event(OutputItemAddedEvent(item=call, output_index=output_index,
                                                  sequence_number=0))  # fmt: skip
                on_event(
                    CodeInterpreterCallCompletedEvent(
                        item_id=call.id, output_index=output_index, sequence_number=0
                    )
                )
                on_event(OutputItemDoneEvent(item=call, output_index=output_index,
                                             sequence_number=0))  # fmt: skip
            return call, [], tool_output_text(call, [], images_attached=False)
        citations = self.interpreter.citations(call)
        return call, citations, tool_output_text(call, citations, images_attached=False)

    # -- shell ---------------------------------------------------------------------------

    def run_shell(self, action: ShellAction, container_id: str) -> list[ShellCommandOutput]:
        """Run the commands one after the other in the sandbox."""
        return run_commands(
            self.client,
            container_id,
            action.commands,
            timeout_ms=action.timeout_ms,
            max_output=action.max_output_length,
        )
