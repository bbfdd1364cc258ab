"""The file commands: `cp`, `files ID` and `skills create|list|get|delete`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from jupyter_sandbox.cli._common import (
    JsonOption,
    _client,
    _fail,
    _print_json,
    _print_table,
    _time,
    app,
    inert,
    print_error,
    shown,
)
from jupyter_sandbox.cli._help import PlainTyper

__all__ = ["cp", "files", "skills_app"]

skills_app = PlainTyper(
    help="Manage skills: folders with a SKILL.md, installed in sandboxes by id.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(skills_app, name="skills")


def _split(spec: str) -> tuple[str, str] | None:
    """`("cntr_x", "/mnt/data/a")` for `cntr_x:/mnt/data/a`; None for a local path."""
    container_id, sep, path = spec.partition(":")
    if sep and path.startswith("/") and "/" not in container_id and container_id:
        return container_id, path
    return None


@app.command("cp")
def cp(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="LOCAL file, or ID:/mnt/data/x in a sandbox.")],
    target: Annotated[str, typer.Argument(help="ID:/mnt/data/x (or /workspace/...), or LOCAL.")],
) -> None:
    """Copy a file into a sandbox (LOCAL ID:/path) or out of one (ID:/path LOCAL)."""
    inside_source, inside_target = _split(source), _split(target)
    if (inside_source is None) == (inside_target is None):
        _fail("give exactly one side as ID:/mnt/data/... or ID:/workspace/...", 2)
    with _client(ctx) as client:
        if inside_target is not None:
            container_id, path = inside_target
            local = Path(source)
            if path.endswith("/"):
                path += local.name
            made = client.containers.files.create(container_id, file=local, path=path)
            typer.echo(f"{inert(made.path)}\t{made.bytes} bytes\t{made.id}")
            return
        assert inside_source is not None
        container_id, path = inside_source
        found = next(
            (f for f in client.containers.files.list(container_id) if f.path == path), None
        )
        if found is None:
            _fail(f"no file at {path} in {container_id} (links and folders are not copied)", 2)
        local = Path(target)
        if local.is_dir():
            local = local / Path(path).name
        written = client.containers.files.content.retrieve(container_id, found.id).write_to_file(
            local
        )
        typer.echo(f"{inert(str(local))}\t{written} bytes")


@app.command("files")
def files(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id.")],
    as_json: JsonOption = False,
) -> None:
    """List the files under /mnt/data and /workspace of a sandbox (code's files included)."""
    with _client(ctx) as client:
        page = client.containers.files.list(container_id, limit=100)
        found = list(page)
    if page.truncated is not None:
        print_error(f"the listing stopped early ({page.truncated}): some files are not shown")
    if as_json:
        _print_json([f.model_dump(mode="json") for f in found])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("PATH", "BYTES", "SOURCE", "CREATED", "ID"):
        table.add_column(column, justify="right" if column == "BYTES" else "left")
    for item in sorted(found, key=lambda f: f.path):
        table.add_row(
            shown(item.path), str(item.bytes), item.source, _time(item.created_at), item.id
        )
    _print_table(table)


@skills_app.command("create")
def skills_create(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="A folder with a SKILL.md, a .zip, or several files.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Create a skill (its name and description come from SKILL.md's front matter)."""
    with _client(ctx) as client:
        skill = client.skills.create(files=files[0] if len(files) == 1 else files)
    if as_json:
        _print_json(skill)
    else:
        typer.echo(skill.id)


@skills_app.command("list")
def skills_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List skills, newest first."""
    with _client(ctx) as client:
        found = list(client.skills.list(limit=100))
    if as_json:
        _print_json([s.model_dump(mode="json") for s in found])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "DEFAULT", "LATEST", "CREATED", "DESCRIPTION"):
        table.add_column(column)
    for skill in found:
        table.add_row(
            skill.id,
            shown(skill.name),
            shown(skill.default_version),
            shown(skill.latest_version),
            _time(skill.created_at),
            shown(skill.description),
        )
    _print_table(table)


@skills_app.command("get")
def skills_get(
    ctx: typer.Context,
    skill_id: Annotated[str, typer.Argument(metavar="ID", help="The skill's id.")],
) -> None:
    """Show one skill (JSON)."""
    with _client(ctx) as client:
        skill = client.skills.retrieve(skill_id)
    _print_json(skill)


@skills_app.command("delete")
def skills_delete(
    ctx: typer.Context,
    skill_id: Annotated[str, typer.Argument(metavar="ID", help="The skill's id.")],
) -> None:
    """Delete a skill and its versions (sandboxes that have it keep their copy)."""
    with _client(ctx) as client:
        client.skills.delete(skill_id)
    typer.echo(f"deleted {skill_id}")
