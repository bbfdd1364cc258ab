"""IPython magics: `%load_ext jupyter_sandbox`, then `%sandbox ...` and `%%sandbox`.

Every magic parses its arguments, calls the Python API and renders the answer; the lifecycle
itself lives in the Client.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from jupyter_sandbox._exceptions import BadRequestError, JupyterSandboxError
from jupyter_sandbox._options import (
    NETWORK_HELP,
    describe_network,
    describe_seconds,
    parse_memory,
    parse_network,
    time_left,
)
from jupyter_sandbox._terminal import inert
from jupyter_sandbox.client import Client
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.jupyter import magics_snapshots
from jupyter_sandbox.jupyter.output_safety import safe_bundle
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    Execution,
    ExecutionOutput,
    StreamOutput,
)

__all__ = [
    "SandboxCellError",
    "SandboxMagics",
    "load_ipython_extension",
    "unload_ipython_extension",
]


class SandboxCellError(JupyterSandboxError):
    """A `%%sandbox` cell failed in the sandbox; shown with the sandbox's own traceback."""

    def __init__(self, ename: str, evalue: str, traceback: Sequence[str]) -> None:
        super().__init__(evalue)
        self.ename, self.evalue, self.traceback = ename, evalue, list(traceback)

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a local traceback through the magic.
        return self.traceback or [f"{self.ename}: {self.evalue}"]


def cell_error(execution: Execution) -> SandboxCellError | None:
    """The exception a failed run raises in the notebook, named like the sandbox's one."""
    error = execution.error
    if execution.status == "ok":
        return None
    if isinstance(error, ErrorOutput) and execution.status == "error":
        ename = error.ename if error.ename.isidentifier() else "SandboxCellError"
        kind: type[SandboxCellError] = type(ename, (SandboxCellError,), {"__module__": "sandbox"})
        return kind(error.ename, error.evalue, error.traceback)
    message = execution.message or f"the run ended with status {execution.status}"
    name = "SandboxTimeout" if execution.status == "timeout" else "SandboxKernelDied"
    failure: type[SandboxCellError] = type(name, (SandboxCellError,), {"__module__": "sandbox"})
    return failure(name, message, [f"{name}: {message}"])


class RichResult:
    """A sandbox cell's last value, shown by IPython as this cell's `Out[n]`.

    Only its safe part is shown (`output_safety.safe_bundle`): the sandbox chose every byte.
    """

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.data, self.metadata = safe_bundle(data, metadata)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<sandbox result>"))


def show_output(output: ExecutionOutput) -> None:
    """Render one output from the sandbox in this notebook, as it arrives (made safe first)."""
    if isinstance(output, StreamOutput):
        stream = sys.stdout if output.name == "stdout" else sys.stderr
        stream.write(output.text)
        stream.flush()
    elif isinstance(output, DisplayDataOutput):
        data, metadata = safe_bundle(output.data, output.metadata)
        display(data, raw=True, metadata=metadata)  # type: ignore[no-untyped-call]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as IPython usage errors instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr)  # noqa: T201
        raise _HelpShown


class _HelpShown(Exception):
    """`--help` was printed; nothing else to do."""


def _parsers() -> tuple[_ArgumentParser, _ArgumentParser]:
    line = _ArgumentParser(prog="%sandbox", description="Manage sandboxes from a notebook.")
    commands = line.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    create = commands.add_parser("create", help="create a sandbox and use it")
    create.add_argument("--name", default=None, help="descriptive name (default: notebook)")
    create.add_argument("--memory", default=None, help="512m, 1g, 2g or 4g (default: 1g)")
    create.add_argument("--network", default=None, help=NETWORK_HELP)
    create.add_argument(
        "--file", action="append", default=[], metavar="LOCAL", help="upload a local file"
    )
    commands.add_parser("list", help="list your sandboxes (* marks the one in use)")
    use = commands.add_parser("use", help="run later %%%%sandbox cells in sandbox ID")
    use.add_argument("id", metavar="ID")
    upload = commands.add_parser("upload", help="copy a local file into the sandbox")
    upload.add_argument("local", metavar="LOCAL")
    upload.add_argument("remote", metavar="REMOTE", nargs="?", help="default /mnt/data/NAME")
    download = commands.add_parser("download", help="copy a sandbox file here")
    download.add_argument("remote", metavar="REMOTE")
    download.add_argument("local", metavar="LOCAL", nargs="?", help="default ./NAME")
    commands.add_parser("files", help="list the files in the sandbox")
    delete = commands.add_parser("delete", help="delete a sandbox (default: the one in use)")
    delete.add_argument("id", metavar="ID", nargs="?")
    commands.add_parser("status", help="show the sandbox in use")
    commands.add_parser("panel", help="show the sandboxes panel (ipywidgets)")
    commands.add_parser("help", help="show this help")
    magics_snapshots.add_commands(commands)  # issue 18
    cell = _ArgumentParser(prog="%%sandbox", description="Run this cell in a sandbox.")
    cell.add_argument("id", metavar="ID", nargs="?", help="sandbox (default: the one in use)")
    cell.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds")
    return line, cell


@magics_class
class SandboxMagics(Magics):
    """The `%sandbox` line magic and `%%sandbox` cell magic, sharing one Client."""

    def __init__(self, shell: Any = None, client_factory: Callable[[], Client] = Client) -> None:
        super().__init__(shell)
        self._client_factory = client_factory
        self._client: Client | None = None
        self.current: str | None = None
        """The sandbox `%%sandbox` cells run in when they name none."""
        self._line_parser, self._cell_parser = _parsers()

    @property
    def client(self) -> Client:
        """The Client, made on first use (settings from `JUPYTER_SANDBOX_*`)."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def close(self) -> None:
        """Close the Client (sandboxes keep running until deleted or expired)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @line_cell_magic
    def sandbox(self, line: str, cell: str | None = None) -> Any:
        """Run code and manage files in hardened Docker sandboxes.

        Line magic:

            %sandbox create [--name N] [--memory 1g] [--network disabled|allowlist:a.com,b.com]
                            [--file LOCAL]...     create a sandbox and use it
            %sandbox list                         your sandboxes (* = in use)
            %sandbox use ID                       run later %%sandbox cells in ID
            %sandbox upload LOCAL [REMOTE]        copy a file in (default /mnt/data/NAME)
            %sandbox download REMOTE [LOCAL]      copy a file out (default ./NAME)
            %sandbox files                        files in the sandbox in use
            %sandbox delete [ID]                  delete ID (default: the one in use)
            %sandbox status                       the sandbox in use
            %sandbox panel                        an ipywidgets panel of it all
            %sandbox snapshot [--name N]          keep the files and variables in use
            %sandbox fork [SNAPSHOT] [--name N]   a new sandbox from a snapshot; use it
            %sandbox snapshots [ID]               snapshots of ID (default: the one in use)
            %sandbox COMMAND --help               help for one command

        Cell magic:

            %%sandbox [ID] [--timeout S]
            <code>

        runs the cell in sandbox ID (default: the one in use) and shows its output here as
        it arrives: printed text, rich displays (plots, HTML tables) and the last value. An
        exception in the sandbox is shown with its traceback and fails the cell; so does a
        timeout (the sandbox's kernel is interrupted). Interrupting this notebook interrupts
        the sandbox too.

        Sandboxes live in the state folder of `jupyter_sandbox.Client()` (settings from
        `JUPYTER_SANDBOX_*` variables) and expire like any other.
        """
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except _HelpShown:
            return None
        except (JupyterSandboxError, OSError) as exc:
            if isinstance(exc, SandboxCellError):
                raise
            raise UsageError(str(exc)) from None

    # -- line magic ----------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%sandbox: {exc}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            self._line_parser.print_help()
            return None
        args = self._line_parser.parse_args(words)
        handler: Callable[[argparse.Namespace], Any] = getattr(self, f"_do_{args.command}")
        return handler(args)

    def _do_create(self, args: argparse.Namespace) -> None:
        missing = [path for path in args.file if not Path(path).is_file()]
        if missing:
            raise UsageError(f"%sandbox create: no such local file: {missing[0]}")
        container = self.client.containers.create(
            name=args.name or "notebook",
            memory_limit=parse_memory(args.memory),
            network_policy=parse_network(args.network),
        )
        self.current = container.id
        print(f"Created sandbox {container.id} ({inert(container.name)}); now in use.")  # noqa: T201
        for path in args.file:
            self._upload(container.id, Path(path), None)

    def _do_list(self, args: argparse.Namespace) -> None:
        containers = list(self.client.containers.list(limit=100))
        if not containers:
            print("No sandboxes. Create one with %sandbox create.")  # noqa: T201
            return
        rows = [("", "ID", "NAME", "STATUS", "MEMORY", "NETWORK", "TIME LEFT")]
        rows += [
            (
                "*" if c.id == self.current else "",
                c.id,
                inert(c.name),
                c.status,
                c.memory_limit,
                describe_network(c.network_policy),
                describe_seconds(time_left(c)),
            )
            for c in containers
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())  # noqa: T201

    def _do_use(self, args: argparse.Namespace) -> None:
        container = self.client.containers.retrieve(args.id)
        self.current = container.id
        print(f"Using sandbox {container.id} ({inert(container.name)}).")  # noqa: T201

    def _do_delete(self, args: argparse.Namespace) -> None:
        container_id = args.id or self._require_current("delete")
        self.client.containers.delete(container_id)
        if container_id == self.current:
            self.current = None
        print(f"Deleted sandbox {container_id}.")  # noqa: T201

    def _do_status(self, args: argparse.Namespace) -> None:
        if self.current is None:
            print("No sandbox in use. Create one with %sandbox create, or %sandbox use ID.")  # noqa: T201
            return
        container = self.client.containers.retrieve(self.current)
        for label, value in (
            ("id", container.id),
            ("name", container.name),
            ("status", container.status),
            ("memory", container.memory_limit),
            ("network", describe_network(container.network_policy)),
            ("idle expiry", f"{container.expires_after.minutes} min"),
            ("time left", describe_seconds(time_left(container))),
        ):
            print(f"{label + ':':<13}{inert(value)}")  # noqa: T201

    def _do_panel(self, args: argparse.Namespace) -> Any:
        from jupyter_sandbox.jupyter.widgets import Panel

        return Panel(client=self.client, magics=self)

    def _do_snapshot(self, args: argparse.Namespace) -> None:
        magics_snapshots.do_snapshot(self, args)

    def _do_fork(self, args: argparse.Namespace) -> None:
        magics_snapshots.do_fork(self, args)

    def _do_snapshots(self, args: argparse.Namespace) -> None:
        magics_snapshots.do_snapshots(self, args)

    def _do_help(self, args: argparse.Namespace) -> None:
        self._line_parser.print_help()

    def _do_upload(self, args: argparse.Namespace) -> None:
        local = Path(args.local)
        if not local.is_file():
            raise UsageError(f"%sandbox upload: no such local file: {local}")
        self._upload(self._require_current("upload"), local, args.remote)

    def _do_download(self, args: argparse.Namespace) -> None:
        container_id = self._require_current("download")
        files = self.client.containers.files
        match = next((f for f in files.list(container_id) if f.path == args.remote), None)
        if match is None:
            raise UsageError(f"%sandbox download: no file {args.remote} in {container_id}")
        target = Path(args.local) if args.local else Path(Path(args.remote).name)
        if target.is_dir():
            target = target / Path(args.remote).name
        content = files.content.retrieve(match.id, container_id=container_id).read()
        target.write_bytes(content)
        print(f"Downloaded {inert(args.remote)} to {inert(str(target))} ({len(content)} bytes).")  # noqa: T201

    def _do_files(self, args: argparse.Namespace) -> None:
        container_id = self._require_current("files")
        page = self.client.containers.files.list(container_id)
        found = list(page)
        if not found:
            print(f"No files in {container_id}.")  # noqa: T201
        for item in found:
            print(f"{item.bytes:>10}  {inert(item.path)}")  # noqa: T201
        if page.truncated:
            print(f"The listing stopped early ({page.truncated}): some files are not shown.")  # noqa: T201

    def _upload(self, container_id: str, local: Path, remote: str | None) -> None:
        path = remote or f"/mnt/data/{local.name}"
        created = self.client.containers.files.create(container_id, file=local, path=path)
        print(f"Uploaded {local} to {inert(created.path)} ({created.bytes} bytes).")  # noqa: T201

    def _require_current(self, command: str) -> str:
        if self.current is None:
            raise UsageError(
                f"%sandbox {command}: no sandbox in use; run %sandbox create or %sandbox use ID"
            )
        return self.current

    # -- cell magic ----------------------------------------------------------------------

    def _cell(self, line: str, cell: str) -> Any:
        try:
            args = self._cell_parser.parse_args(shlex.split(line))
        except ValueError as exc:
            raise UsageError(f"%%sandbox: {exc}") from None
        try:
            timeout = check_seconds(args.timeout, "timeout")
        except BadRequestError as exc:
            raise UsageError(f"%%sandbox: --timeout: {exc.message}") from None
        container_id = args.id or self.current
        if container_id is None:
            raise UsageError(
                "%%sandbox: no sandbox in use; run %sandbox create first, or name one: %%sandbox ID"
            )
        return self.run_cell(container_id, cell, timeout=timeout)

    def run_cell(self, container_id: str, code: str, *, timeout: float | None = None) -> Any:
        """Run `code` in the sandbox, showing outputs live; raise if it failed."""
        try:
            execution = self.client.containers.execute(
                container_id, code, timeout=timeout, on_output=show_output
            )
        except KeyboardInterrupt:
            self.client.containers.interrupt(container_id)
            raise
        error = cell_error(execution)
        if error is not None:
            raise error
        result = execution.result
        return RichResult(result.data, result.metadata) if result is not None else None


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_sandbox`: register the `%sandbox` magics."""
    ipython.register_magics(SandboxMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext jupyter_sandbox`: drop the magics and close their Client."""
    registry = ipython.magics_manager.registry.pop("SandboxMagics", None)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("sandbox", None)
    if isinstance(registry, SandboxMagics):
        registry.close()
