"""The sandbox commands: create, list, get, delete, logs, exec and gc."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from jupyter_sandbox._exceptions import BadRequestError, JupyterSandboxError, NotFoundError
from jupyter_sandbox._options import MEMORY_HELP, NETWORK_HELP
from jupyter_sandbox._terminal import RESET
from jupyter_sandbox.cli._common import (
    JsonOption,
    Order,
    _client,
    _console,
    _exit_code,
    _print_json,
    _print_table,
    _time,
    app,
    parse_network,
    print_container,
    print_containers,
    print_error,
    program_output,
    shown,
)
from jupyter_sandbox.core.validation import MAX_TIMEOUT_SECONDS, check_seconds

if TYPE_CHECKING:
    from jupyter_sandbox.types.execution import ExecutionOutput
    from jupyter_sandbox.types.params import ExpiresAfterParam

__all__ = ["create", "delete", "exec_", "gc", "get", "list_", "logs"]


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Descriptive name (required).")],
    memory: Annotated[
        str | None,
        typer.Option("--memory", help=MEMORY_HELP, show_default="1g"),
    ] = None,
    expires_minutes: Annotated[
        int | None,
        typer.Option(
            "--expires-minutes",
            help="Idle minutes before the sandbox expires.",
            show_default="20",
        ),
    ] = None,
    lifetime: Annotated[
        int | None,
        typer.Option(
            "--lifetime",
            help="Hard lifetime in seconds, enforced inside the container.",
            show_default="3600",
        ),
    ] = None,
    network: Annotated[
        str,
        typer.Option("--network", help=NETWORK_HELP + "."),
    ] = "disabled",
    idle_action: Annotated[
        str | None,
        typer.Option(
            "--idle-action",
            help="When idle: 'expire' (end it) or 'pause' (freeze it; the next use resumes it).",
            show_default="expire",
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option("--snapshot", metavar="SNAPSHOT", help="Fork this snapshot (snap_...)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a sandbox, wait for its kernel and print it."""
    policy = parse_network(network)
    expires: ExpiresAfterParam | None = (
        {"anchor": "last_active_at", "minutes": expires_minutes} if expires_minutes else None
    )
    with _client(ctx) as client:
        container = client.containers.create(
            name=name,
            memory_limit=memory,
            network_policy=policy,
            expires_after=expires,
            lifetime_seconds=lifetime,
            idle_action=idle_action,  # type: ignore[arg-type]  # checked by the model
            snapshot_id=snapshot,
        )
    print_container(container, as_json=as_json)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100, help="Sandboxes per page (1..100).")
    ] = 20,
    order: Annotated[
        Order, typer.Option("--order", help="By creation time: desc (newest first) or asc.")
    ] = Order.desc,
    name: Annotated[
        str | None, typer.Option("--name", help="Only sandboxes with this exact name.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Walk every page, not just the first.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List sandboxes, newest first (the first page, or every page with --all)."""
    with _client(ctx) as client:
        page = client.containers.list(limit=limit, order=order.value, name=name)
        containers = list(page) if every else list(page.data)
        has_more = page.has_more and not every
    if as_json:
        _print_json(
            {
                "object": "list",
                "data": [c.model_dump(mode="json") for c in containers],
                "first_id": containers[0].id if containers else None,
                "last_id": containers[-1].id if containers else None,
                "has_more": has_more,
            }
        )
        return
    if not print_containers(containers):
        _console(stderr=True).print("No sandboxes.")
    elif has_more:
        _console(stderr=True).print(f"[dim]More than {limit}: use --all to list every one.[/]")


@app.command()
def get(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show one sandbox (with --json on a multi-node backend, also the node it runs on; for
    a sandbox that ended by itself, the reason)."""
    with _client(ctx) as client:
        container = client.containers.retrieve(container_id)
        # Beside the Container fields, never inside them: the wire shape stays OpenAI's.
        state = client._backend.state(container.id) if as_json else None
        record = client._store.get(container.id) if as_json else None
    extra: dict[str, str] = {}
    if state is not None and state.node is not None:
        extra["node"] = state.node
    if record is not None and record.error:
        extra["reason"] = record.error
    if extra:
        _print_json({**container.model_dump(mode="json"), **extra})
        return
    print_container(container, as_json=as_json)


@app.command()
def delete(
    ctx: typer.Context,
    container_ids: Annotated[
        list[str], typer.Argument(metavar="ID", help="One or more sandbox ids.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Stop and remove sandboxes with everything they hold."""
    failures: list[JupyterSandboxError] = []
    with _client(ctx) as client:
        for container_id in container_ids:
            try:
                deleted = client.containers.delete(container_id)
            except (BadRequestError, NotFoundError) as exc:
                # Keep going: one unknown id must not spare the others.
                print_error(exc.message)
                failures.append(exc)
                continue
            if as_json:
                sys.stdout.write(deleted.model_dump_json() + "\n")
            else:
                typer.echo(f"deleted {deleted.id}")
    if failures:
        raise typer.Exit(_exit_code(failures[0]))


@app.command()
def logs(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id.")],
    egress: Annotated[
        bool, typer.Option("--egress", help="Show the egress proxy's decisions (allowlist).")
    ] = False,
    tail: Annotated[
        int, typer.Option("--tail", min=1, max=10000, help="How many of the last lines to show.")
    ] = 200,
    as_json: JsonOption = False,
) -> None:
    """Show a sandbox's log (its supervisor and kernel); with --egress, every request its
    allowlist allowed or refused."""
    if not egress:
        with _client(ctx) as client:
            text = client.containers.logs(container_id, tail=tail)
        if as_json:
            _print_json({"id": container_id, "log": text})
        else:
            sys.stdout.write(program_output(text, colors=False))
        return
    with _client(ctx) as client:
        decisions = client.containers.egress_log(container_id)
    if as_json:
        _print_json([d.model_dump() for d in decisions])
        return
    table = Table("time", "decision", "method", "host", "port", "status", "reason")
    for d in decisions:
        table.add_row(
            _time(int(d.time)),
            shown(d.decision),
            shown(d.method),
            shown(d.host),
            str(d.port or ""),
            str(d.status or ""),
            shown(d.reason or ""),
        )
    _print_table(table)


def _read_code(code: str | None, file: Path | None) -> str:
    if code is not None and code != "-" and file is not None:
        raise typer.BadParameter("give CODE or --file, not both", param_hint="CODE")
    if file is not None:
        try:
            return file.read_text()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {file}: {exc.strerror}", param_hint="--file"
            ) from None
    if code is not None and code != "-":
        return code
    if code is None and sys.stdin.isatty():
        raise typer.BadParameter(
            "give CODE, --file, or pipe code on stdin (CODE '-')", param_hint="CODE"
        )
    return sys.stdin.read()


def _stream(output: ExecutionOutput) -> None:
    """Print one output as it arrives: streams to their file, text displays to stdout.

    The program's text passes through `program_output`: colours only on a terminal, every
    other control sequence (screen clears, OSC hyperlinks, clipboard, titles, BEL) escaped.
    """
    from jupyter_sandbox.types.execution import ErrorOutput, StreamOutput

    if isinstance(output, StreamOutput):
        stream = sys.stdout if output.name == "stdout" else sys.stderr
        text = output.text if isinstance(output.text, str) else str(output.text)
    elif isinstance(output, ErrorOutput):
        sys.stdout.flush()
        stream = sys.stderr
        text = "\n".join(map(str, output.traceback)) or f"{output.ename}: {output.evalue}"
        text += "\n"
    else:
        stream = sys.stdout
        plain = output.data.get("text/plain")
        if not isinstance(plain, str):
            kinds = ", ".join(sorted(output.data)) or "no data"
            plain = f"<{output.type}: {kinds}>"
        text = f"{plain}\n"
    stream.write(program_output(text, colors=stream.isatty()))
    stream.flush()


@app.command("exec")
def exec_(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id.")],
    code: Annotated[
        str | None,
        typer.Argument(help="Python code; '-' or nothing reads it from stdin.", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Read the code from this file.", dir_okay=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.001,
            max=MAX_TIMEOUT_SECONDS,
            help="Seconds before the run is interrupted (at most a day).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run code in a sandbox's kernel, streaming its output; exit 1 if it fails."""
    try:
        timeout = check_seconds(timeout, "timeout")  # click's range lets NaN through
    except BadRequestError as exc:
        raise typer.BadParameter(exc.message, param_hint="--timeout") from None
    source = _read_code(code, file)
    with _client(ctx) as client:
        try:
            execution = client.containers.execute(
                container_id,
                source,
                timeout=timeout,
                on_output=None if as_json else _stream,
            )
        finally:
            for stream in (sys.stdout, sys.stderr):
                if stream.isatty():  # end any colour the program left on
                    stream.write(RESET)
                    stream.flush()
    if as_json:
        _print_json(execution)
    elif execution.status in ("timeout", "died"):
        print_error(execution.message or execution.status)
    if execution.status != "ok":
        raise typer.Exit(1)


@app.command()
def gc(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Expire overdue sandboxes and remove orphans a crash left behind."""
    with _client(ctx) as client:
        expired, report = client.gc()
    if as_json:
        _print_json({"expired": expired, **dict(report.items())})
        return
    lines = [f"expired {item}" for item in expired] + report.lines()
    typer.echo("\n".join(lines) if lines else "Nothing to clean up.")
