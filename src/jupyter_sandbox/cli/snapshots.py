"""`jupyter-sandbox snapshots ...` (issue 18): take, list, show and delete snapshots; fork
one with `jupyter-sandbox create --snapshot SNAP`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from jupyter_sandbox.cli._common import (
    JsonOption,
    _client,
    _print_json,
    _print_table,
    _time,
    app,
    shown,
)
from jupyter_sandbox.cli._help import PlainTyper

__all__ = ["snapshots_app"]

snapshots_app = PlainTyper(
    help="Snapshots of a sandbox's files and variables; fork one with `create --snapshot`.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(snapshots_app, name="snapshots")
ContainerArg = Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id.")]
SnapshotArg = Annotated[str, typer.Argument(metavar="SNAPSHOT", help="The snapshot's id.")]


@snapshots_app.command("create")
def snapshots_create(
    ctx: typer.Context,
    container_id: ContainerArg,
    name: Annotated[str | None, typer.Option("--name", help="A label of your own.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Snapshot a sandbox: /mnt/data, /workspace and its kernel's variables."""
    with _client(ctx) as client:
        snapshot = client.containers.snapshots.create(container_id, name=name)
    if as_json:
        _print_json(snapshot)
        return
    report = snapshot.report
    typer.echo(
        f"{snapshot.id}  {snapshot.bytes} bytes  {len(report.variables)} variables, "
        f"{len(report.imports)} imports, {report.files} files"
    )
    for skipped in report.skipped:
        typer.echo(
            f"skipped {shown(skipped.name)} ({shown(skipped.type)}): {shown(skipped.reason)}"
        )


@snapshots_app.command("list")
def snapshots_list(
    ctx: typer.Context, container_id: ContainerArg, as_json: JsonOption = False
) -> None:
    """List a sandbox's snapshots, oldest first."""
    with _client(ctx) as client:
        found = list(client.containers.snapshots.list(container_id))
    if as_json:
        _print_json([s.model_dump(mode="json") for s in found])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "BYTES", "CREATED", "EXPIRES", "VARIABLES", "SKIPPED"):
        table.add_column(column)
    for snapshot in found:
        table.add_row(
            snapshot.id,
            shown(snapshot.name or ""),
            str(snapshot.bytes),
            _time(snapshot.created_at),
            _time(snapshot.expires_at),
            str(len(snapshot.report.variables)),
            str(len(snapshot.report.skipped)),
        )
    _print_table(table)


@snapshots_app.command("get")
def snapshots_get(ctx: typer.Context, container_id: ContainerArg, snapshot_id: SnapshotArg) -> None:
    """Show one snapshot (JSON)."""
    with _client(ctx) as client:
        _print_json(client.containers.snapshots.retrieve(container_id, snapshot_id))


@snapshots_app.command("delete")
def snapshots_delete(
    ctx: typer.Context, container_id: ContainerArg, snapshot_id: SnapshotArg
) -> None:
    """Delete a snapshot."""
    with _client(ctx) as client:
        client.containers.snapshots.delete(container_id, snapshot_id)
    typer.echo(f"deleted {snapshot_id}")
