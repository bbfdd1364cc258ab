"""The code_interpreter tool, self-hosted: run code in a sandbox, get OpenAI's
`code_interpreter_call` item back, with the files it wrote as `container_file_citation`s.

```python
ci = CodeInterpreter(client)
call = ci.run("print(2 + 2)")          # container="auto": made on first use, then reused
call.outputs                           # [CodeInterpreterOutputLogs(logs="4\\n")]
ci.citations(call)                     # files the code wrote under /mnt/data
```
Adapters for models that only know function tools are in `adapters`; the output and
citation shaping is in `outputs`, and the `container` param's resolution (the "auto"
sandboxes) in `auto_containers`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, cast

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.client import Client
from jupyter_sandbox.code_interpreter import adapters
from jupyter_sandbox.code_interpreter.auto_containers import AutoContainers
from jupyter_sandbox.code_interpreter.outputs import (
    CALL_STATUS,
    EventSequence,
    FileState,
    call_id,
    file_citations,
    to_output,
    to_outputs,
)
from jupyter_sandbox.code_interpreter.outputs import image_url as image_url
from jupyter_sandbox.code_interpreter.outputs import strip_ansi as strip_ansi
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterCall,
    CodeInterpreterCallCodeDeltaEvent,
    CodeInterpreterCallCodeDoneEvent,
    CodeInterpreterCallCompletedEvent,
    CodeInterpreterCallInProgressEvent,
    CodeInterpreterCallInterpretingEvent,
    CodeInterpreterCallOutputEvent,
    CodeInterpreterContainer,
    CodeInterpreterContainerAuto,
    CodeInterpreterEvent,
    ContainerFileCitation,
    OutputItemAddedEvent,
    OutputItemDoneEvent,
)
from jupyter_sandbox.types.container_file import DEFAULT_DIR
from jupyter_sandbox.types.execution import ExecutionOutput
from jupyter_sandbox.types.params import NetworkPolicyParam

__all__ = ["CodeInterpreter", "EventCallback", "call_id", "to_outputs"]

EventCallback = Callable[[CodeInterpreterEvent], None]
DEFAULT_TIMEOUT = 300.0
IDLE_MINUTES = 20
AUTO_NAME = "code-interpreter"


class CodeInterpreter(AutoContainers):
    """The code_interpreter tool on local sandboxes.

    Args:
        client: the sandbox client (default: a new `Client()`, closed by `close()`).
        timeout: default seconds per run before it is interrupted (`incomplete`).
        idle_minutes: idle expiry of the sandboxes `container="auto"` makes.
        lifetime_seconds: their hard lifetime (default: the client's setting).
        name: the name they get.
        history: how many recent calls `calls` keeps (they hold their images).
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        idle_minutes: int = IDLE_MINUTES,
        lifetime_seconds: int | None = None,
        name: str = AUTO_NAME,
        history: int = 100,
    ) -> None:
        self.timeout = check_seconds(timeout, "timeout")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise BadRequestError("Invalid history: must be a positive integer", param="history")
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        self.idle_minutes = idle_minutes
        self.lifetime_seconds = lifetime_seconds
        self.name = name
        self.calls: deque[CodeInterpreterCall] = deque(maxlen=history)
        """The last `history` calls, oldest first (the adapters' results are here too)."""
        self._auto: dict[str, str] = {}  # configuration -> container id
        self._auto_files: dict[str, set[str]] = {}  # container id -> file ids copied in
        self._lock = threading.Lock()

    # -- containers: `auto_containers` and `resolve` come from `AutoContainers` ------------

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        code: str,
        *,
        container: CodeInterpreterContainer = "auto",
        timeout: float | None = adapters.INTERPRETER_TIMEOUT,
        on_event: EventCallback | None = None,
        output_events: bool = False,
        output_index: int = 0,
        sequence_number: int = 0,
    ) -> CodeInterpreterCall:
        """Run `code` and return the `code_interpreter_call` item.

        An exception in the code is not raised: its traceback is in the logs and the call is
        `completed`. A timeout gives `incomplete` and a dead kernel (out of memory) `failed`,
        each with the reason at the end of the logs.

        Args:
            container: "auto" (default), a container id, `{"type": "auto", "memory_limit":
                ..., "file_ids": [...], "network_policy": ...}` or `{"container_id": ...}`.
            timeout: seconds before the run is interrupted; default the interpreter's.
            on_event: called with each Responses streaming event as the run goes.
            output_events: also send `sandbox.code_interpreter_call.output` events.
            output_index, sequence_number: where the events sit in a larger response stream.

        Raises:
            BadRequestError: `container` or `timeout` is invalid.
            NotFoundError, ConflictError: an explicit container is unknown or not ready.
        """
        if not isinstance(code, str):
            raise BadRequestError("Invalid code: must be a string", param="code")
        container_id = self.resolve(container)
        seconds = self.timeout if timeout is adapters.INTERPRETER_TIMEOUT else timeout
        sequence = EventSequence(sequence_number)
        item_id = call_id()

        def emit(make: Callable[..., CodeInterpreterEvent], **fields: Any) -> None:
            if on_event is None:
                return
            if "item" not in fields:
                fields["item_id"] = item_id
            on_event(make(output_index=output_index, sequence_number=sequence(), **fields))

        item = CodeInterpreterCall(
            id=item_id, status="in_progress", container_id=container_id, code="", outputs=None
        )
        emit(OutputItemAddedEvent, item=item)
        emit(CodeInterpreterCallInProgressEvent)
        if code:
            emit(CodeInterpreterCallCodeDeltaEvent, delta=code)
        emit(CodeInterpreterCallCodeDoneEvent, code=code)

        before = self._file_state(container_id)
        emit(CodeInterpreterCallInterpretingEvent)

        def on_output(output: ExecutionOutput) -> None:
            converted = to_output(output)
            if converted is not None:
                emit(CodeInterpreterCallOutputEvent, output=converted)

        execution = self.client.containers.execute(
            container_id,
            code,
            timeout=seconds,
            on_output=on_output if output_events and on_event is not None else None,
        )
        after = self._file_state(container_id)
        call = CodeInterpreterCall(
            id=item_id,
            status=CALL_STATUS[execution.status],
            container_id=container_id,
            code=code,
            outputs=to_outputs(execution),
        )
        call._citations = file_citations(container_id, before, after)
        self.calls.append(call)
        emit(CodeInterpreterCallCompletedEvent)
        emit(OutputItemDoneEvent, item=call)
        return call

    def stream(
        self,
        code: str,
        *,
        container: CodeInterpreterContainer = "auto",
        timeout: float | None = adapters.INTERPRETER_TIMEOUT,
        output_events: bool = False,
        output_index: int = 0,
        sequence_number: int = 0,
    ) -> Iterator[CodeInterpreterEvent]:
        """`run`, as an iterator of the Responses streaming events (the last one,
        `response.output_item.done`, carries the finished call).

        Closing the iterator early interrupts the code (once the sandbox is known) and waits
        for the run to end.
        """
        events: queue.Queue[CodeInterpreterEvent | BaseException | None] = queue.Queue()
        container_ids: list[str] = []
        ended = threading.Event()

        def on_event(event: CodeInterpreterEvent) -> None:
            if isinstance(event, OutputItemAddedEvent):
                container_ids.append(event.item.container_id)
            events.put(event)

        def work() -> None:
            try:
                self.run(
                    code,
                    container=container,
                    timeout=timeout,
                    on_event=on_event,
                    output_events=output_events,
                    output_index=output_index,
                    sequence_number=sequence_number,
                )
            except BaseException as exc:  # handed to the consumer, re-raised there
                events.put(exc)
            else:
                events.put(None)
            finally:
                ended.set()

        worker = threading.Thread(target=work, name="code-interpreter-run", daemon=True)
        worker.start()
        try:
            while True:
                event = events.get()
                if event is None:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            # A SIGINT that lands before the kernel starts the code is lost: repeat it each
            # second until the run ends.
            while container_ids and not ended.is_set():
                with contextlib.suppress(NotFoundError):
                    self.client.containers.interrupt(container_ids[0])
                ended.wait(1.0)
            worker.join()

    def _file_state(self, container_id: str) -> FileState:
        """The sandbox's files under /mnt/data (listing also discovers what code wrote)."""
        return {
            file.id: (file.path, file.bytes)
            for file in self.client.containers.files.list(container_id, limit=100)
            if file.path.startswith(DEFAULT_DIR + "/")
        }

    # -- results ---------------------------------------------------------------------------

    def citations(self, call: CodeInterpreterCall | str) -> list[ContainerFileCitation]:
        """`container_file_citation`s for the files the call's code created or changed under
        /mnt/data (a file rewritten with exactly the same size is not noticed)."""
        if isinstance(call, str):
            found = next((c for c in reversed(self.calls) if c.id == call), None)
            if found is None:
                raise NotFoundError(f"No recent call {call!r}", param="call_id")
            call = found
        return list(call._citations)

    # -- function-tool adapters ------------------------------------------------------------

    def chat_tool(self, name: str = adapters.TOOL_NAME) -> dict[str, Any]:
        """This tool as a chat completions function tool (`tools=[ci.chat_tool()]`)."""
        return adapters.chat_tool(name)

    def responses_tool(self, name: str = adapters.TOOL_NAME) -> dict[str, Any]:
        """This tool as a Responses API function tool (`tools=[ci.responses_tool()]`)."""
        return adapters.responses_tool(name)

    def handle_chat_tool_call(
        self,
        tool_call: Any,
        *,
        container: CodeInterpreterContainer = "auto",
        timeout: float | None = adapters.INTERPRETER_TIMEOUT,
        tool_name: str = adapters.TOOL_NAME,
    ) -> dict[str, Any]:
        """Run a chat completion's tool call; return the `{"role": "tool", ...}` message."""
        return adapters.handle_chat_tool_call(
            self, tool_call, container=container, timeout=timeout, tool_name=tool_name
        )

    def handle_function_call(
        self,
        item: Any,
        *,
        container: CodeInterpreterContainer = "auto",
        timeout: float | None = adapters.INTERPRETER_TIMEOUT,
        tool_name: str = adapters.TOOL_NAME,
        include_images: bool = True,
    ) -> dict[str, Any]:
        """Run a Responses `function_call` item; return its `function_call_output` item."""
        return adapters.handle_function_call(
            self,
            item,
            container=container,
            timeout=timeout,
            tool_name=tool_name,
            include_images=include_images,
        )

    def fork(self, container: CodeInterpreterContainer = "auto") -> CodeInterpreter:
        """A second CodeInterpreter whose auto sandbox is a fork of this one's: a snapshot of
        its files and variables now, restored in a new sandbox (issue 18). Both go on
        independently; closing the fork deletes only its sandbox.

        Args:
            container: the sandbox to fork (default: this one's auto sandbox, made if needed).
        """
        source = self.resolve(container)
        key = next((k for k, v in self._auto.items() if v == source), None)
        if key is None:  # an explicit sandbox: the fork becomes the default auto one
            key = self._auto_config(CodeInterpreterContainerAuto())[0]
        twin = CodeInterpreter(
            self.client,
            timeout=self.timeout,
            idle_minutes=self.idle_minutes,
            lifetime_seconds=self.lifetime_seconds,
            name=self.name,
            history=self.calls.maxlen or 100,
        )
        original = self.client.containers.retrieve(source)
        snapshot = self.client.containers.snapshots.create(source)
        try:
            forked = self.client.containers.create(
                name=self.name,
                memory_limit=original.memory_limit,
                network_policy=cast(
                    "NetworkPolicyParam", original.network_policy
                ),  # no domain secrets
                snapshot_id=snapshot.id,
                expires_after={"anchor": "last_active_at", "minutes": self.idle_minutes},
                lifetime_seconds=self.lifetime_seconds,
            )
        finally:
            self.client.containers.snapshots.delete(source, snapshot.id)
        twin._auto[key] = forked.id
        twin._auto_files[forked.id] = set(self._auto_files.get(source, ()))
        return twin

    def close(self) -> None:
        """Delete the sandboxes `container="auto"` made (and close the client if we made it)."""
        with self._lock:
            auto, self._auto = list(self._auto.values()), {}
            self._auto_files.clear()
        try:
            for container_id in auto:
                with contextlib.suppress(NotFoundError):  # already gone: nothing to delete
                    self.client.containers.delete(container_id)
        finally:
            if self._owns_client:
                self.client.close()

    def __enter__(self) -> CodeInterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
