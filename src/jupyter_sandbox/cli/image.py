"""`jupyter-sandbox image build|status`: the kernel image, and how its build shows progress."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from jupyter_sandbox.cli._common import (
    JsonOption,
    _console,
    _errors,
    _print_json,
    _print_table,
    _settings,
    image_app,
)

if TYPE_CHECKING:
    from jupyter_sandbox.backends.images import ImageStatus, RichBuildProgress

__all__ = ["image_build", "image_status_command"]


@image_app.command("build")
def image_build(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if the image is up to date.")
    ] = False,
    from_registry: Annotated[
        str | None,
        typer.Option(
            "--from-registry",
            metavar="BASE",
            help="Base on this registry image (e.g. python:3.12-slim) instead of Debian.",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Image tag.", show_default="jupyter-sandbox-kernel:<version>"),
    ] = None,
    egress: Annotated[
        bool,
        typer.Option(
            "--egress/--no-egress",
            help="Also build the egress proxy image that allowlist network policies need.",
        ),
    ] = True,
) -> None:
    """Build the kernel image and the egress proxy image (each only when its recipe changed)."""
    import time

    from jupyter_sandbox.backends.egress_image import build_egress_image, egress_image_status
    from jupyter_sandbox.backends.images import build_image, image_status
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        tag = tag or _settings(ctx).image
        engine = connect_engine()
        started = time.monotonic()
        try:
            before = image_status(engine, tag)
            with _build_progress() as progress:
                status = build_image(
                    engine, tag=tag, force=force, from_registry=from_registry, progress=progress
                )
            _report_build(status, before.up_to_date and not force, started)
            if egress:
                egress_tag = _settings(ctx).egress_image
                started = time.monotonic()
                before = egress_image_status(engine, egress_tag)
                with _build_progress() as progress:
                    status = build_egress_image(
                        engine, tag=egress_tag, force=force, progress=progress
                    )
                _report_build(status, before.up_to_date and not force, started)
        finally:
            engine.close()


def _report_build(status: ImageStatus, was_up_to_date: bool, started: float) -> None:
    import time

    size = f"{status.size_bytes / 1e6:.0f} MB" if status.size_bytes is not None else "size unknown"
    if was_up_to_date:
        typer.echo(f"{status.tag} is up to date ({size}, recipe {status.recipe_hash})")
    else:
        elapsed = time.monotonic() - started
        typer.echo(f"Built {status.tag} in {elapsed:.0f} s ({size}, recipe {status.recipe_hash})")


class _LineProgress:
    """Build progress as plain lines on stderr, for logs and CI where nothing redraws."""

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self, description: str) -> None:
        sys.stderr.write(f"==> {description}\n")
        sys.stderr.flush()

    def log(self, line: str) -> None:
        """Tool output is too chatty for a log; the build error carries its tail."""


def _build_progress() -> RichBuildProgress | _LineProgress:
    """A live spinner on a terminal, plain step lines otherwise."""
    from jupyter_sandbox.backends.images import RichBuildProgress

    if sys.stderr.isatty():
        return RichBuildProgress(_console(stderr=True))
    return _LineProgress()


@image_app.command("status")
def image_status_command(
    ctx: typer.Context,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Image tag.", show_default="jupyter-sandbox-kernel:<version>"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show whether the kernel image exists and matches this version's recipe."""
    from jupyter_sandbox.backends.images import image_status, recipe_hash
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        tag = tag or _settings(ctx).image
        engine = connect_engine()
        try:
            status = image_status(engine, tag)
        finally:
            engine.close()
        wanted = recipe_hash()
    if as_json:
        _print_json(
            {
                "tag": status.tag,
                "exists": status.exists,
                "up_to_date": status.up_to_date,
                "size_bytes": status.size_bytes,
                "recipe_hash": status.recipe_hash,
                "current_recipe_hash": wanted,
            }
        )
        return
    if not status.exists:
        state = "missing (run `jupyter-sandbox image build`)"
    elif status.up_to_date:
        state = "up to date"
    else:
        state = "out of date (run `jupyter-sandbox image build`)"
    size = f"{status.size_bytes / 1e6:.0f} MB" if status.size_bytes is not None else "-"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in [
        ("tag", status.tag),
        ("status", state),
        ("size", size),
        ("recipe", f"{status.recipe_hash or '-'} (current {wanted})"),
    ]:
        table.add_row(key, escape(value))
    _print_table(table)
