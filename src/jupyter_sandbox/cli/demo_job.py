"""`jupyter-sandbox demo`: build the image if needed, run code with a plot, clean up.

The demo leaves nothing behind: the sandbox is deleted in a `finally`, creation and
deletion finish even if Ctrl-C (or SIGTERM) arrives during them, and the sandbox is
created with a short hard lifetime, so even a SIGKILLed demo ends within minutes.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    Execution,
    StreamOutput,
)

if TYPE_CHECKING:
    from jupyter_sandbox.client import Client
    from jupyter_sandbox.settings import Settings

__all__ = ["DEMO_ANALYSIS", "DEMO_PLOT", "PLOT_FILE", "deferred_interrupts", "run_demo"]

PLOT_FILE = "sandbox-demo-plot.png"
DEMO_NAME = "jupyter-sandbox-demo"
DEMO_LIFETIME_SECONDS = 600
"""A hard stop inside the container, in case this process is killed before it cleans up."""
_EXECUTE_TIMEOUT = 120.0

DEMO_ANALYSIS = """\
import numpy as np
import pandas as pd

rng = np.random.default_rng(42)
days = pd.date_range("2025-01-01", periods=90, freq="D")
df = pd.DataFrame(
    {"visitors": rng.poisson(200, len(days)) + np.arange(len(days)) * 3}, index=days
)
df["7-day mean"] = df["visitors"].rolling(7).mean()
print("numpy", np.__version__, "| pandas", pd.__version__)
print("sum of 1..100 =", np.arange(1, 101).sum())
print(df["visitors"].describe().round(1).to_string())
"""
"""First run: numbers with numpy and pandas; `df` stays in the kernel for the next run."""

DEMO_PLOT = """\
%matplotlib inline
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.5))
df.plot(ax=ax, title="Visitors per day (computed in the sandbox)")
ax.set_ylabel("visitors")
fig.tight_layout()
fig.savefig("/mnt/data/plot.png", dpi=100)
plt.show()
import os
print("files in /mnt/data:", sorted(os.listdir("/mnt/data")))
df["visitors"].max()
"""
"""Second run: a matplotlib plot saved in the sandbox and shown as image/png display data."""

RESULT_FILE = "sandbox-demo-summary.csv"
DEMO_INPUT = (
    b"weekday,boost\nMon,1.00\nTue,1.05\nWed,1.10\nThu,1.05\nFri,1.20\nSat,0.80\nSun,0.70\n"
)
DEMO_FILES = """\
boost = pd.read_csv("/mnt/data/weekdays.csv").set_index("weekday")["boost"]
weekly = df["visitors"].groupby(df.index.strftime("%a")).mean().round(1).to_frame("mean")
weekly["boosted"] = (weekly["mean"] * boost.reindex(weekly.index)).round(1)
weekly.to_csv("/workspace/summary.csv")
print(weekly.to_string())
"""
"""Third run: reads a file uploaded into /mnt/data, writes a result the host downloads."""


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise KeyboardInterrupt.

    Used around creation and deletion so a Ctrl-C cannot leave a half-made sandbox.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so `finally` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ensure_image(settings: Settings, console: Console) -> None:
    """Build the kernel image if it is missing (first run only)."""
    from jupyter_sandbox.backends.images import RichBuildProgress, build_image, image_status
    from jupyter_sandbox.backends.runtime.docker import connect_engine

    engine = connect_engine()
    try:
        status = image_status(engine, settings.image)
        if status.exists:
            if not status.up_to_date:
                console.print(
                    f"[yellow]note:[/] {settings.image} is out of date; "
                    "`jupyter-sandbox image build` refreshes it"
                )
            return
        console.print(f"Building the kernel image {settings.image} (first run only)")
        started = time.monotonic()
        with RichBuildProgress(console) as progress:
            built = build_image(engine, tag=settings.image, progress=progress)
        size = f", {built.size_bytes / 1e6:.0f} MB" if built.size_bytes else ""
        console.print(f"Built {built.tag} in {time.monotonic() - started:.0f} s{size}")
    finally:
        engine.close()


def _stream_panel(text: str, title: str, style: str) -> Panel:
    return Panel(Text(text.rstrip("\n")), title=title, title_align="left", border_style=style)


def _render(execution: Execution, console: Console, save_dir: Path) -> list[Path]:
    """Show an execution's outputs as panels; save PNG displays; return the saved files."""
    saved: list[Path] = []
    for output in execution.outputs:
        if isinstance(output, StreamOutput):
            style = "green" if output.name == "stdout" else "yellow"
            console.print(_stream_panel(output.text, output.name, style))
        elif isinstance(output, DisplayDataOutput | ExecuteResultOutput):
            png = output.data.get("image/png")
            if isinstance(png, str):
                path = save_dir / (
                    PLOT_FILE if not saved else f"sandbox-demo-plot-{len(saved)}.png"
                )
                path.write_bytes(base64.b64decode(png))
                saved.append(path)
                body = Text(
                    f"image/png, {path.stat().st_size / 1024:.0f} KB, saved to ./{path.name}"
                )
                console.print(
                    Panel(body, title="display_data", title_align="left", border_style="magenta")
                )
            elif "text/plain" in output.data:
                title = "result" if isinstance(output, ExecuteResultOutput) else "display_data"
                console.print(_stream_panel(str(output.data["text/plain"]), title, "cyan"))
        elif isinstance(output, ErrorOutput):
            console.print(
                Panel(
                    Text.from_ansi(
                        "\n".join(output.traceback) or f"{output.ename}: {output.evalue}"
                    ),
                    title=f"error: {output.ename}",
                    title_align="left",
                    border_style="red",
                )
            )
    if execution.message:
        console.print(f"[red]{execution.status}:[/] {execution.message}")
    return saved


def _run(
    client: Client, code: str, title: str, console: Console, save_dir: Path, container_id: str
) -> tuple[Execution, list[Path]]:
    console.print(Panel(Text(code.rstrip("\n"), style="dim"), title=title, title_align="left"))
    with console.status("Running…"):
        execution = client.containers.execute(container_id, code, timeout=_EXECUTE_TIMEOUT)
    saved = _render(execution, console, save_dir)
    console.print(f"[dim]{execution.status} in {execution.duration:.2f} s[/]")
    return execution, saved


def _move_files(client: Client, container_id: str, console: Console, save_dir: Path) -> bool:
    """Upload a CSV, let the kernel use it, download the result file; True if it all worked."""
    uploaded = client.containers.files.create(
        container_id, file=("weekdays.csv", DEMO_INPUT), path="/mnt/data/weekdays.csv"
    )
    console.print(f"Uploaded [bold]{uploaded.path}[/] ({uploaded.bytes} bytes)")
    title = "a file in, a result file out"
    execution, _ = _run(client, DEMO_FILES, title, console, save_dir, container_id)
    if execution.status != "ok":
        return False
    listed = client.containers.files.list(container_id)
    result = next((f for f in listed if f.path == "/workspace/summary.csv"), None)
    if result is None:
        console.print("[red]the sandbox wrote no /workspace/summary.csv[/]")
        return False
    target = save_dir / RESULT_FILE
    client.containers.files.content.retrieve(container_id, result.id).write_to_file(target)
    console.print(f"Downloaded {result.path} ({result.source}) to [bold]./{target.name}[/]")
    return True


def run_demo(
    *, settings: Settings, console: Console | None = None, save_dir: Path | None = None
) -> int:
    """Run the demo; return the exit code (0 when every step worked).

    Raises:
        JupyterSandboxError: the engine is unreachable, the build or the sandbox failed.
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after the sandbox was deleted.
    """
    from jupyter_sandbox.client import Client

    console = console or Console()
    save_dir = save_dir or Path.cwd()
    timings: list[tuple[str, float]] = []
    total_started = time.monotonic()
    with _sigterm_as_interrupt():
        _ensure_image(settings, console)
        client = Client(settings=settings)
        container_id: str | None = None
        saved: list[Path] = []
        failed = False
        try:
            started = time.monotonic()
            with console.status("Creating a sandbox…"), deferred_interrupts():
                container = client.containers.create(
                    name=DEMO_NAME,
                    expires_after={"anchor": "last_active_at", "minutes": 5},
                    lifetime_seconds=DEMO_LIFETIME_SECONDS,
                )
                container_id = container.id
            timings.append(("create sandbox", time.monotonic() - started))
            console.print(
                f"Sandbox [bold]{container.id}[/] {container.status} in {timings[-1][1]:.2f} s "
                f"(memory {container.memory_limit}, network {container.network_policy['type']})"
            )
            runs = [
                ("numbers with numpy and pandas", DEMO_ANALYSIS),
                ("a plot with matplotlib (the kernel keeps `df`)", DEMO_PLOT),
            ]
            for title, code in runs:
                execution, files = _run(client, code, title, console, save_dir, container.id)
                timings.append((title.split(" (")[0], execution.duration))
                saved += files
                if execution.status != "ok":
                    failed = True
                    break
            if not failed:
                started = time.monotonic()
                failed = not _move_files(client, container.id, console, save_dir)
                timings.append(("a file in, a result out", time.monotonic() - started))
        finally:
            if container_id is not None:
                started = time.monotonic()
                with console.status("Deleting the sandbox…"), deferred_interrupts():
                    client.containers.delete(container_id)
                timings.append(("delete sandbox", time.monotonic() - started))
                console.print(f"Deleted sandbox {container_id}")
            client.close()
    timings.append(("total", time.monotonic() - total_started))
    table = Table(title="Timing", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in timings:
        table.add_row(step, f"{seconds:.2f}")
    console.print(table)
    if saved:
        console.print(f"Plot saved to [bold]./{saved[0].name}[/]")
    elif not failed:
        console.print("[red]no image/png came back from the sandbox[/]")
        return 1
    return 1 if failed else 0
