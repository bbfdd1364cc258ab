"""The `jupyter-sandbox` command (also `jupyter sandbox`): parse, call the Client, render.

Exit codes: 0 success; 1 a failed execution, a failed doctor check or any other error;
2 bad input or an unknown id; 3 the Docker engine is unreachable; 130 interrupted.
"""

from __future__ import annotations

import json
import re
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
from rich.markup import escape
from rich.table import Table

from jupyter_sandbox import cli_files
from jupyter_sandbox._exceptions import (
    APIConnectionError,
    BadRequestError,
    JupyterSandboxError,
    NotFoundError,
)
from jupyter_sandbox._version import __version__
from jupyter_sandbox.cli_kernelspec import kernelspec_app

if TYPE_CHECKING:
    from jupyter_sandbox.backends.images import ImageStatus, RichBuildProgress
    from jupyter_sandbox.client import Client
    from jupyter_sandbox.settings import Settings
    from jupyter_sandbox.types.container import Container
    from jupyter_sandbox.types.execution import ExecutionOutput

__all__ = ["app", "main"]

app = typer.Typer(
    name="jupyter-sandbox",
    help="Hardened Docker sandboxes running Jupyter kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
image_app = typer.Typer(
    help="Build or inspect the kernel image sandboxes run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(image_app, name="image")
cli_files.register(app)  # cp, files, skills
app.add_typer(kernelspec_app, name="kernelspec")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
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


def _fail(message: str, code: int) -> NoReturn:
    _console(stderr=True).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
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


def _settings(ctx: typer.Context) -> Settings:
    from jupyter_sandbox.settings import Settings

    home = _home(ctx)
    return Settings(home=home) if home is not None else Settings()


@contextmanager
def _client(ctx: typer.Context) -> Iterator[Client]:
    """A Client on `--home`, closed afterwards, with our errors mapped to exit codes."""
    from jupyter_sandbox.client import Client

    with _errors():
        client = Client(home=_home(ctx))
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
        table.add_row(key, escape(value))
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
            escape(container.name),
            container.status,
            container.memory_limit,
            _time(container.created_at),
            _time(container.last_active_at),
        )
        count += 1
    if count:
        _print_table(table)
    return count


def parse_network(value: str) -> dict[str, Any]:
    """`disabled`, or `allowlist:example.com,*.pypi.org`, as a network_policy object."""
    kind, _, domains = value.partition(":")
    if kind == "disabled" and not domains:
        return {"type": "disabled"}
    if kind == "allowlist":
        return {"type": "allowlist", "allowed_domains": [d for d in domains.split(",") if d]}
    raise typer.BadParameter(
        f"{value!r}: use 'disabled' or 'allowlist:DOMAIN[,DOMAIN...]'", param_hint="--network"
    )


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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Hardened Docker sandboxes running Jupyter kernels, with an OpenAI-shaped API."""
    ctx.obj = {"home": home}


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Descriptive name (required).")],
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Memory limit: 512m, 1g, 2g or 4g.", show_default="1g"),
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
        typer.Option("--network", help="'disabled', or 'allowlist:DOMAIN[,DOMAIN...]'."),
    ] = "disabled",
    as_json: JsonOption = False,
) -> None:
    """Create a sandbox, wait for its kernel and print it."""
    policy = parse_network(network)
    expires = {"anchor": "last_active_at", "minutes": expires_minutes} if expires_minutes else None
    with _client(ctx) as client:
        container = client.containers.create(
            name=name,
            memory_limit=memory,
            network_policy=policy,
            expires_after=expires,
            lifetime_seconds=lifetime,
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
    """Show one sandbox."""
    with _client(ctx) as client:
        container = client.containers.retrieve(container_id)
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
                _console(stderr=True).print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True)
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
    as_json: JsonOption = False,
) -> None:
    """Show a sandbox's logs: with --egress, every request its allowlist allowed or refused."""
    if not egress:
        _fail("only --egress logs exist so far: `jupyter-sandbox logs ID --egress`", 2)
    with _client(ctx) as client:
        decisions = client.containers.egress_log(container_id)
    if as_json:
        _print_json([d.model_dump() for d in decisions])
        return
    table = Table("time", "decision", "method", "host", "port", "status", "reason")
    for d in decisions:
        table.add_row(
            _time(int(d.time)),
            d.decision,
            d.method,
            escape(d.host),
            str(d.port or ""),
            str(d.status or ""),
            escape(d.reason or ""),
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


def _stream(output: ExecutionOutput, *, color: bool) -> None:
    """Print one output as it arrives: streams to their file, text displays to stdout."""
    from jupyter_sandbox.types.execution import ErrorOutput, StreamOutput

    if isinstance(output, StreamOutput):
        stream = sys.stdout if output.name == "stdout" else sys.stderr
        stream.write(output.text)
        stream.flush()
    elif isinstance(output, ErrorOutput):
        text = "\n".join(output.traceback) or f"{output.ename}: {output.evalue}"
        sys.stdout.flush()
        sys.stderr.write((text if color else _ANSI.sub("", text)) + "\n")
        sys.stderr.flush()
    else:
        plain = output.data.get("text/plain")
        if plain is None:
            kinds = ", ".join(sorted(output.data)) or "no data"
            plain = f"<{output.type}: {kinds}>"
        sys.stdout.write(f"{plain}\n")
        sys.stdout.flush()


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
        typer.Option("--timeout", min=0.001, help="Seconds before the run is interrupted."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run code in a sandbox's kernel, streaming its output; exit 1 if it fails."""
    source = _read_code(code, file)
    color = sys.stderr.isatty()
    with _client(ctx) as client:
        execution = client.containers.execute(
            container_id,
            source,
            timeout=timeout,
            on_output=None if as_json else lambda output: _stream(output, color=color),
        )
    if as_json:
        _print_json(execution)
    elif execution.status in ("timeout", "died"):
        _console(stderr=True).print(
            f"[red]error:[/] {escape(execution.message or execution.status)}", soft_wrap=True
        )
    if execution.status != "ok":
        raise typer.Exit(1)


@app.command()
def gc(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Expire overdue sandboxes and remove orphans a crash left behind."""
    with _client(ctx) as client:
        expired, report = client.gc()
    found = {
        "expired": expired,
        "marked": report.marked,
        "removed": report.removed,
        "socket_dirs": report.socket_dirs,
    }
    if as_json:
        _print_json(found)
        return
    labels = {
        "expired": "expired",
        "marked": "marked gone",
        "removed": "removed orphan",
        "socket_dirs": "removed socket folder",
    }
    lines = [f"{labels[key]} {item}" for key, items in found.items() for item in items]
    typer.echo("\n".join(lines) if lines else "Nothing to clean up.")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; loopback unless behind a proxy.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            dir_okay=False,
            help="File of API keys, one `[project:]key` or `[project:]sha256:HEX` a line "
            "(also read: JUPYTER_SANDBOX_API_KEYS).",
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Accept this Host header name (repeatable; '*' for any). Default: the "
            "loopback names when bound to loopback, any otherwise.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    pool_size: Annotated[
        int | None,
        typer.Option(
            "--pool-size",
            min=0,
            max=100,
            help="Warm pool: sandboxes of the default configuration kept started, so such a "
            "create is a claim (also JUPYTER_SANDBOX_POOL_SIZE; default 0, off).",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible HTTP API (use the openai SDK with base_url=.../v1)."""
    from jupyter_sandbox.server import KeyRing
    from jupyter_sandbox.server import serve as run_server

    with _errors():
        settings = _settings(ctx)
        if pool_size is not None:
            settings = settings.model_copy(update={"pool_size": pool_size})
    try:
        keys = KeyRing.from_environment(api_key_file)
    except (OSError, ValueError) as exc:
        _fail(
            f"no usable API keys ({exc}); give --api-key-file or set JUPYTER_SANDBOX_API_KEYS",
            2,
        )
    allowed = None
    if allow_host:
        from jupyter_sandbox.server import default_allowed_hosts

        allowed = {*(default_allowed_hosts(host) or set()), *allow_host}
    _console(stderr=True).print(
        f"serving {len(keys)} key(s) for project(s) {', '.join(keys.projects)} on "
        f"http://{host}:{port}/v1",
        soft_wrap=True,
    )
    with _errors():
        run_server(settings, keys, host=host, port=port, allowed_hosts=allowed, log_level=log_level)


_LEVEL_STYLE = {"ok": "green", "info": "blue", "warn": "yellow", "fail": "bold red"}


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the Docker engine and kernel image; flag unsafe versions. Exit 1 on a FAIL."""
    from jupyter_sandbox import doctor as checks
    from jupyter_sandbox.backends.images import image_status
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        settings = _settings(ctx)
    results: list[checks.Check] = []
    code = 0
    try:
        engine = connect_engine(timeout=10)
    except APIConnectionError as exc:
        results.append(checks.unreachable(exc.message))
        code = 3
    else:
        with _errors():
            try:
                results += checks.engine_checks(
                    engine.info(), engine.version(), runtime=settings.runtime
                )
                status = image_status(engine, settings.image)
            finally:
                engine.close()
        results.append(
            checks.check_image(
                status.tag,
                exists=status.exists,
                up_to_date=status.up_to_date,
                size_bytes=status.size_bytes,
            )
        )
    results.append(cli_files.disk_check(settings))
    results.append(checks.Check("store", "info", str(settings.store_path)))
    code = code or checks.exit_code(results)
    if as_json:
        _print_json({"checks": [c.to_dict() for c in results], "ok": code == 0})
    else:
        console = _console()
        width = max(len(check.name) for check in results)
        for check in results:
            style = _LEVEL_STYLE[check.level]
            console.print(
                f"{check.name:<{width}}  [{style}]{check.level.upper():<4}[/]  "
                f"{escape(check.detail)}",
                soft_wrap=True,
            )
    if code:
        raise typer.Exit(code)


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


@app.command()
def demo(ctx: typer.Context) -> None:
    """Build the image if needed, run numpy/pandas/matplotlib in a sandbox, then delete it."""
    from jupyter_sandbox.demo import run_demo

    with _errors():
        # Panels fill the width: keep them readable when the output is piped or logged.
        console = Console(width=None if sys.stdout.isatty() else 100, highlight=False)
        code = run_demo(settings=_settings(ctx), console=console)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Entry point of the `jupyter-sandbox` script."""
    app(prog_name="jupyter-sandbox")
