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
    _fail,
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
    from jupyter_sandbox.backends.cluster_stack import ClusterStack

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
DEFAULT_BACKEND = "swarm"
"""What the cluster's servers run sandboxes on unless `cluster up --backend` says otherwise:
the Swarm backend (`backends/swarm_backend.py`); `docker` runs them on this host's engine."""


def _cluster(ctx: typer.Context, engine: docker.DockerClient, name: str) -> LocalCluster:
    from jupyter_sandbox.backends.cluster_nodes import LocalCluster

    return LocalCluster(engine, name, home=_settings(ctx).home)


def _stack(ctx: typer.Context, cluster: LocalCluster) -> ClusterStack:
    from jupyter_sandbox.backends.cluster_stack import ClusterStack

    return ClusterStack(cluster, _settings(ctx))


def _progress(line: str) -> None:
    sys.stderr.write(f"==> {line}\n")
    sys.stderr.flush()


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
    servers: Annotated[
        int,
        typer.Option("--servers", min=1, max=8, help="API servers (`serve`) on the store."),
    ] = 1,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Where the servers run sandboxes: swarm (the nodes) or docker (this host's "
            "engine).",
        ),
    ] = DEFAULT_BACKEND,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print base_url, api_key, nodes, env and servers as JSON."),
    ] = False,
) -> None:
    """Start the nodes, form a Swarm, load the sandbox images into every node, then start
    PostgreSQL and the API servers, and print what a client needs."""
    from jupyter_sandbox.backends.cluster_images import copy_images
    from jupyter_sandbox.backends.cluster_postgres import server_bin
    from jupyter_sandbox.backends.cluster_stack import check_backend
    from jupyter_sandbox.backends.node_image import build_node_image
    from jupyter_sandbox.backends.runtime.docker import connect_engine
    from jupyter_sandbox.cli.image import _build_progress

    with _errors():
        check_backend(backend)
        if server_bin() is None:
            _fail(
                "cluster up needs Debian's PostgreSQL server for the shared store: "
                "apt-get install postgresql-15 (no service needs to run)",
                2,
            )
        settings = _settings(ctx)
        engine = connect_engine()
        try:
            cluster = _cluster(ctx, engine, name)
            stack = _stack(ctx, cluster)
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
            try:
                with cluster.timings.measure("store and servers"):
                    stack.up(servers, backend, _progress)
            except BaseException:
                stack.down()
                cluster.down()
                raise
        finally:
            engine.close()
    _report(cluster, stack, as_json)


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


def _report(cluster: LocalCluster, stack: ClusterStack, as_json: bool) -> None:
    nodes = [
        {"name": n.name, "role": n.role, "address": n.address, "docker_host": n.docker_host}
        for n in cluster.nodes()
    ]
    servers = [{"url": s.url, "pid": s.pid} for s in stack.state().servers]
    summary: dict[str, Any] = {
        "base_url": f"{servers[0]['url']}/v1",
        "api_key": stack.api_key,
        "nodes": nodes,
        "env": stack.env(),
        "servers": servers,
    }
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in cluster.timings.steps.items())
    sys.stderr.write(f"timings: {steps}\n")
    if as_json:
        _print_json(summary)
        return
    for node in nodes:
        typer.echo(f"{node['name']}  {node['role']:<7}  {node['docker_host']}")
    for server in servers:
        typer.echo(f"API server  {server['url']}/v1  pid {server['pid']}")
    for variable, value in summary["env"].items():
        typer.echo(f"export {variable}={value}")
    typer.echo(f"export OPENAI_BASE_URL={summary['base_url']}")
    typer.echo(f"export OPENAI_API_KEY=$(cat {stack.api_key_file})")


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
    """Show the API servers (url, pid, alive), the store, and the nodes: role, state, Swarm
    availability and sandboxes on each."""
    from jupyter_sandbox.backends.cluster_status import node_report
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        engine = connect_engine()
        try:
            cluster = _cluster(ctx, engine, name)
            rows = node_report(cluster)
            state = _stack(ctx, cluster).state()
        finally:
            engine.close()
    servers = [{"url": s.url, "pid": s.pid, "alive": s.alive} for s in state.servers]
    postgres = state.postgres.__dict__ if state.postgres is not None else None
    if as_json:
        _print_json(
            {
                "servers": servers,
                "postgres": postgres,
                "backend": state.backend,
                "nodes": [row._asdict() for row in rows],
            }
        )
        return
    if not rows and not servers:
        typer.echo(f"no cluster named {name!r}")
        return
    if servers:
        table = Table("API SERVER", "PID", "ALIVE", box=None)
        for server in servers:
            table.add_row(f"{server['url']}/v1", str(server["pid"]), str(server["alive"]).lower())
        _print_table(table)
    if postgres is not None:
        alive = "alive" if postgres["alive"] else "stopped"
        typer.echo(f"store {postgres['url']} ({alive}), backend {state.backend}")
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
    """Stop the API servers and PostgreSQL, and remove every container, network and volume
    the cluster made (its servers' sandboxes too), and its folder."""
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    with _errors():
        engine = connect_engine()
        try:
            cluster = _cluster(ctx, engine, name)
            stack = _stack(ctx, cluster)
            removed = stack.stop_servers()
            removed += _end_sandboxes(cluster, stack)
            removed += stack.down()
            removed += cluster.down()
        finally:
            engine.close()
    for item in removed:
        typer.echo(f"removed {item}")
    if not removed:
        typer.echo(f"no cluster named {name!r}")


def _end_sandboxes(cluster: LocalCluster, stack: ClusterStack) -> list[str]:
    """With the `docker` backend the servers' sandboxes hold host-side storage (mounted disk
    images, socket folders): remove their containers, then let a Client on the servers' store
    reconcile (`gc`), which ends each record and tears its storage down as any end does."""
    from jupyter_sandbox.backends.cluster_errors import engine_errors
    from jupyter_sandbox.backends.cluster_nodes import CLUSTER
    from jupyter_sandbox.backends.labels import MANAGED
    from jupyter_sandbox.client import Client

    state = stack.state()
    if state.backend != "docker" or state.postgres is None or not state.postgres.alive:
        return []  # the Swarm backend's sandboxes live in the nodes, which go whole
    selector: dict[str, str | list[str] | bool] = {
        "label": [f"{CLUSTER}={cluster.name}", f"{MANAGED}=true"]
    }
    with engine_errors():
        for container in cluster.engine.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
    client = Client(settings=stack.server_settings())
    try:
        _, report = client.gc()  # the start-up pass's findings included
    finally:
        client.close()
    return [f"sandbox {sandbox}" for sandbox in sorted(set(report.marked))]
