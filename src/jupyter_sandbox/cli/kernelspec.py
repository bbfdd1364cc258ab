"""`jupyter sandbox kernelspec install`: write a kernelspec whose kernels run in sandboxes.

A typer app of its own, mounted on the main CLI as `kernelspec`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from jupyter_sandbox._exceptions import APIConnectionError, BadRequestError
from jupyter_sandbox._options import MEMORY_HELP, NETWORK_HELP
from jupyter_sandbox.cli._common import app
from jupyter_sandbox.cli._help import PlainTyper
from jupyter_sandbox.jupyter.kernelspec import DEFAULT_DISPLAY_NAME, DEFAULT_LIFETIME, DEFAULT_NAME

__all__ = ["kernelspec_app"]

kernelspec_app = PlainTyper(
    help="Install Jupyter kernelspecs whose kernels run in sandboxes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(kernelspec_app, name="kernelspec")


@kernelspec_app.command("install")
def install_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Kernelspec name.")] = DEFAULT_NAME,
    display_name: Annotated[
        str, typer.Option("--display-name", help="Name shown in JupyterLab's launcher.")
    ] = DEFAULT_DISPLAY_NAME,
    memory: Annotated[str, typer.Option("--memory", help=MEMORY_HELP)] = "1g",
    network: Annotated[str, typer.Option("--network", help=NETWORK_HELP + ".")] = "disabled",
    lifetime: Annotated[
        int, typer.Option("--lifetime", help="Hard lifetime of each kernel's sandbox, seconds.")
    ] = DEFAULT_LIFETIME,
    image: Annotated[
        str | None, typer.Option("--image", help="Kernel image (default: the built one).")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="OCI runtime of each kernel's sandbox: runc or runsc (gVisor); checked with "
            "the Docker engine. Default: the root --runtime, else the server's settings.",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        bool, typer.Option("--user", help="Install for this user only (jupyter --data-dir).")
    ] = False,
    sys_prefix: Annotated[
        bool, typer.Option("--sys-prefix", help="Install into this Python's prefix (a venv).")
    ] = False,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Install under PREFIX/share/jupyter/kernels.")
    ] = None,
) -> None:
    """Write a kernelspec (default "Python 3 (sandbox)") and print where it went."""
    from jupyter_sandbox.jupyter.kernelspec import install

    if sum((user, sys_prefix, prefix is not None)) > 1:
        typer.echo("Error: choose at most one of --user, --sys-prefix, --prefix", err=True)
        raise typer.Exit(2)
    runtime = runtime or (ctx.find_root().obj or {}).get("runtime")
    try:
        folder = install(
            name=name,
            display_name=display_name,
            memory=memory,
            network=network,
            lifetime=lifetime,
            runtime=runtime,
            user=user,
            prefix=sys.prefix if sys_prefix else prefix,
            config={"image": image} if image else None,
        )
    except BadRequestError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except APIConnectionError as exc:
        typer.echo(f"Error: cannot check --runtime {runtime}: {exc.message}", err=True)
        raise typer.Exit(3) from None
    typer.echo(f"Installed kernelspec {name} in {folder}")
