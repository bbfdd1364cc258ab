"""`jupyter-sandbox cluster up|status|down`: a local Swarm of Docker-in-Docker nodes."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from jupyter_sandbox.cli._common import (
    JsonOption,
    _console,
    _errors,
    _print_json,
    _print_table,
    _settings,
    app,
    shown,
)
from jupyter_sandbox.cli._help import PlainTyper

if TYPE_CHECKING:
    import docker

    from jupyter_sandbox.backends.cluster_nodes import LocalCluster

__all__ = ["cluster_app"]

cluster_app = PlainTyper(
    help="Run a local multi-node Swarm cluster (Docker-in-Docker nodes) on this engine.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cluster_app, name="cluster")


def _name(value: str) -> str:
    from jupyter_sandbox.backends.cluster_nodes import check_name

    with _errors():
        return check_name(value)


NameOption = Annotated[
    str,
    typer.Option(
        "--name", callback=_name, help="The cluster's name (several may run side by side)."
    ),
]
PENDING = (
    "not set yet: the cluster runs no `serve` API server (PostgreSQL and `serve` on the "
    "managers are not built); `env` points docker and Client() at the Swarm manager"
)


def _cluster(ctx: typer.Context, engine: docker.DockerClient, name: str) -> LocalCluster:
    from jupyter_sandbox.backends.cluster_nodes import LocalCluster

    return LocalCluster(engine, name, home=_settings(ctx).home)


@cluster_app.command("up")
def cluster_up(
    ctx: typer.Context,
    nodes: Annotated[
        int, typer.Option("--nodes", min=1, max=16, help="How many nodes (the first manages).")
    ] = 3,
    name: NameOption = "local",
    load: Annotated[
        bool,
        typer.Option("--load/--no-load", help="Copy the kernel and egress images into each node."),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print base_url, api_key, nodes and env as JSON.")
    ] = False,
) -> None:
    """Start the nodes, form a Swarm and load the sandbox images into every node."""
    from jupyter_sandbox.backends.cluster_images import copy_images
    from jupyter_sandbox.backends.node_image import build_node_image
    from jupyter_sandbox.backends.runtime.docker import connect_engine
    from jupyter_sandbox.cli.image import _build_progress

    with _errors():
        settings = _settings(ctx)
        engine = connect_engine()
        try:
            cluster = _cluster(ctx, engine, name)
            started = time.monotonic()
            with _build_progress() as progress:
                image = build_node_image(engine, progress=progress)
            cluster.timings.steps["node image"] = round(time.monotonic() - started, 2)
            members = cluster.up(nodes, image)
            if load:
                tags = [settings.image, *_present(engine, [settings.egress_image])]
                clients = {node.name: cluster.client_for(node.address) for node in members}
                try:
                    with _LoadBar() as bar:
                        cluster.timings.steps.update(copy_images(engine, tags, clients, bar))
                except BaseException:
                    cluster.down()  # a cluster without its images is of no use
                    raise
                finally:
                    for client in clients.values():
                        client.close()
        finally:
            engine.close()
    _report(cluster, as_json)


def _present(engine: docker.DockerClient, tags: list[str]) -> list[str]:
    """The tags the engine has (the egress image is optional: allowlists need it)."""
    import docker.errors

    present = []
    for tag in tags:
        try:
            engine.images.get(tag)
            present.append(tag)
        except docker.errors.ImageNotFound:
            sys.stderr.write(f"warning: no {tag} to load: allowlist sandboxes will fail\n")
    return present


def _report(cluster: LocalCluster, as_json: bool) -> None:
    nodes = [
        {"name": n.name, "role": n.role, "address": n.address, "docker_host": n.docker_host}
        for n in cluster.nodes()
    ]
    summary: dict[str, Any] = {
        "base_url": None,
        "api_key": None,
        "nodes": nodes,
        "env": cluster.env(),
        "pending": PENDING,
    }
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in cluster.timings.steps.items())
    sys.stderr.write(f"timings: {steps}\n")
    if as_json:
        _print_json(summary)
        return
    for node in nodes:
        typer.echo(f"{node['name']}  {node['role']:<7}  {node['docker_host']}")
    for variable, value in summary["env"].items():
        typer.echo(f"export {variable}={value}")
    typer.echo(f"base_url, api_key: {PENDING}")


class _LoadBar:
    """A rich byte progress bar for image copies (plain lines when not on a terminal)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=_console(stderr=True),
            disable=not sys.stderr.isatty(),
        )
        self._task: Any = None

    def __enter__(self) -> _LoadBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        if not sys.stderr.isatty():
            sys.stderr.write(f"==> {description}\n")
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)


@cluster_app.command("status")
def cluster_status(
    ctx: typer.Context, name: NameOption = "local", as_json: JsonOption = False
) -> None:
    """Show the nodes: role, state, Swarm availability and sandboxes on each."""
    from jupyter_sandbox.backends.cluster_status import node_report
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        engine = connect_engine()
        try:
            rows = node_report(_cluster(ctx, engine, name))
        finally:
            engine.close()
    if as_json:
        _print_json([row._asdict() for row in rows])
        return
    if not rows:
        typer.echo(f"no cluster named {name!r}")
        return
    table = Table("NODE", "ROLE", "STATE", "SWARM", "ADDRESS", "SANDBOXES", box=None)
    for row in rows:
        table.add_row(
            shown(row.name),
            row.role,
            shown(row.state),
            shown(row.swarm),
            row.address,
            str(row.sandboxes) if row.sandboxes is not None else "-",
        )
    _print_table(table)


@cluster_app.command("down")
def cluster_down(ctx: typer.Context, name: NameOption = "local") -> None:
    """Remove every container, network and volume the cluster made, and its certificates."""
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        engine = connect_engine()
        try:
            removed = _cluster(ctx, engine, name).down()
        finally:
            engine.close()
    for item in removed:
        typer.echo(f"removed {item}")
    if not removed:
        typer.echo(f"no cluster named {name!r}")
