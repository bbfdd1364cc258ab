"""What every CLI command shares: the Typer apps, the root callback, errors, printing.

The command modules import these at their top; `cli/__init__.py` imports the command
modules so that they register on `app`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jupyter_sandbox._exceptions import (
    APIConnectionError,
    BadRequestError,
    JupyterSandboxError,
    NotFoundError,
)
from jupyter_sandbox._options import parse_network_option
from jupyter_sandbox._terminal import inert, program_output
from jupyter_sandbox._version import __version__
from jupyter_sandbox.cli._help import PlainTyper

if TYPE_CHECKING:
    from jupyter_sandbox.client import Client
    from jupyter_sandbox.settings import Settings
    from jupyter_sandbox.types.container import Container
    from jupyter_sandbox.types.params import NetworkPolicyParam

__all__ = [
    "JsonOption",
    "Order",
    "app",
    "image_app",
    "inert",
    "parse_network",
    "print_container",
    "print_containers",
    "program_output",
    "shown",
]

app = PlainTyper(
    name="jupyter-sandbox",
    help="Hardened Docker sandboxes running Jupyter kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
image_app = PlainTyper(
    help="Build or inspect the kernel image sandboxes run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
# Groups are listed in the order they are added: image, then skills (files.py), kernelspec.
app.add_typer(image_app, name="image")

_WIDE = 200

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Order(str, Enum):
    """Sort order by creation time."""

    asc = "asc"
    desc = "desc"


def _console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr; wide when piped, so tables never wrap ids."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else _WIDE
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def shown(value: object) -> Text:
    """Untrusted text (a sandbox's file name, path, output, error; any name or log line) for
    rich: a `Text`, never parsed as markup (`[/]` cannot crash a table, `[link=...]` is no
    hyperlink), with every terminal control character shown escaped (see `_terminal`).
    Every print of such text in the CLI goes through this, `inert` or `program_output`."""
    return Text(inert(str(value)))


def print_error(message: str) -> None:
    """`error: <message>` in red on stderr; the message is untrusted (newlines kept)."""
    _console(stderr=True).print(
        Text.assemble(("error:", "red"), " ", inert(message, keep="\n")), soft_wrap=True
    )


def _fail(message: str, code: int) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def _exit_code(exc: JupyterSandboxError) -> int:
    if isinstance(exc, BadRequestError | NotFoundError):
        return 2
    if isinstance(exc, APIConnectionError):
        return 3
    return 1


@contextmanager
def _errors() -> Iterator[None]:
    """Turn our errors into `error: ...` on stderr and an exit code, never a traceback."""
    try:
        yield
    except JupyterSandboxError as exc:
        _fail(getattr(exc, "message", None) or str(exc) or type(exc).__name__, _exit_code(exc))
    except ValidationError as exc:
        # Bad settings (JUPYTER_SANDBOX_* variables) are reported by pydantic directly.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        _fail(f"invalid settings: {problems}", 2)
    except SettingsError as exc:
        _fail(f"invalid settings: {exc}", 2)
    except KeyboardInterrupt:
        _console(stderr=True).print("[red]interrupted[/]")
        raise typer.Exit(130) from None


def _home(ctx: typer.Context) -> Path | None:
    home = (ctx.find_root().obj or {}).get("home")
    return Path(home) if home is not None else None


def _overrides(ctx: typer.Context) -> dict[str, Any]:
    """Settings the root options set (`--home`, `--runtime`); the rest come from the env."""
    obj = ctx.find_root().obj or {}
    chosen = {"home": _home(ctx), "runtime": obj.get("runtime")}
    return {name: value for name, value in chosen.items() if value is not None}


def _settings(ctx: typer.Context) -> Settings:
    from jupyter_sandbox.settings import Settings

    return Settings(**_overrides(ctx))


@contextmanager
def _client(ctx: typer.Context) -> Iterator[Client]:
    """A Client on `--home`, closed afterwards, with our errors mapped to exit codes."""
    from jupyter_sandbox.client import Client

    with _errors():
        client = Client(**_overrides(ctx))
        try:
            yield client
        finally:
            client.close()


def _print_table(table: Table) -> None:
    """Print a rich table without the padding rich leaves at the end of each line."""
    console = _console()
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _print_json(value: BaseModel | dict[str, Any] | list[Any]) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2)
    sys.stdout.write(text + "\n")


def _time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _network(policy: dict[str, Any]) -> str:
    if policy.get("type") == "allowlist":
        return "allowlist: " + ", ".join(policy.get("allowed_domains", []))
    return str(policy.get("type", "disabled"))


def print_container(container: Container, *, as_json: bool = False) -> None:
    """One sandbox as `field value` lines, or its JSON object."""
    if as_json:
        _print_json(container)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("id", container.id),
        ("name", container.name),
        ("status", container.status),
        ("memory_limit", container.memory_limit),
        ("network_policy", _network(container.network_policy)),
        ("created_at", _time(container.created_at)),
        ("last_active_at", _time(container.last_active_at)),
        ("expires_after", f"{container.expires_after.minutes} min idle"),
        ("expires_at", _time(container.expires_at)),
    ]
    for key, value in rows:
        table.add_row(key, shown(value))
    _print_table(table)


def print_containers(containers: Iterable[Container]) -> int:
    """Sandboxes as a table; return how many were shown."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("NAME")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("MEMORY", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    table.add_column("LAST ACTIVE", no_wrap=True)
    count = 0
    for container in containers:
        table.add_row(
            container.id,
            shown(container.name),
            container.status,
            container.memory_limit,
            _time(container.created_at),
            _time(container.last_active_at),
        )
        count += 1
    if count:
        _print_table(table)
    return count


def parse_network(value: str) -> NetworkPolicyParam:
    """`--network` (the grammar every surface shares, `_options.parse_network_option`) as a
    network_policy object; a bad spelling is a usage error naming `--network`."""
    try:
        return parse_network_option(value)
    except BadRequestError as exc:
        raise typer.BadParameter(exc.message, param_hint="--network") from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jupyter-sandbox {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="JUPYTER_SANDBOX_HOME",
            help="State folder (store, sockets). Default: the Jupyter data dir's sandbox/.",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            envvar="JUPYTER_SANDBOX_RUNTIME",
            help="OCI runtime of new sandboxes: runc (default) or runsc (gVisor).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Hardened Docker sandboxes running Jupyter kernels, with an OpenAI-shaped API."""
    ctx.obj = {"home": home, "runtime": runtime}
