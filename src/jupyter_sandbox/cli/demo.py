"""`jupyter-sandbox demo`: a guided first run in a throwaway sandbox."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from jupyter_sandbox.cli._common import _errors, _settings, app

__all__ = ["demo"]


@app.command()
def demo(ctx: typer.Context) -> None:
    """Build the image if needed, run numpy/pandas/matplotlib in a sandbox, then delete it."""
    from jupyter_sandbox.cli.demo_job import run_demo

    with _errors():
        # Panels fill the width: keep them readable when the output is piped or logged.
        console = Console(width=None if sys.stdout.isatty() else 100, highlight=False)
        code = run_demo(settings=_settings(ctx), console=console)
    if code:
        raise typer.Exit(code)
