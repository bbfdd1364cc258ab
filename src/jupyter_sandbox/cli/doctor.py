"""`jupyter-sandbox doctor`: check the Docker engine, the kernel image and the disk cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from jupyter_sandbox._exceptions import APIConnectionError
from jupyter_sandbox.cli._common import (
    JsonOption,
    _console,
    _errors,
    _print_json,
    _settings,
    app,
    inert,
)

if TYPE_CHECKING:
    from jupyter_sandbox.cli.doctor_checks import Check
    from jupyter_sandbox.settings import Settings

__all__ = ["disk_check", "doctor"]

_LEVEL_STYLE = {"ok": "green", "info": "blue", "warn": "yellow", "fail": "bold red"}


def disk_check(settings: Settings) -> Check:
    """The doctor's line on the disk cap: which mechanism, or plainly that there is none."""
    from jupyter_sandbox.backends.disk import describe
    from jupyter_sandbox.cli.doctor_checks import Check

    mechanism, detail, capped = describe(settings)
    if not capped and settings.disk_mechanism == "loop":
        return Check("disk cap", "fail", f"{mechanism}: {detail}")  # creates would fail
    return Check("disk cap", "ok" if capped else "warn", f"{mechanism}: {detail}")


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the Docker engine, images and disk cap; flag unsafe versions.

    Exits 1 on a FAIL (anything that stops a sandbox being created, such as a missing kernel
    image or runtime, and an unsafe engine), 3 when the engine is unreachable."""
    from jupyter_sandbox.backends.egress_image import egress_image_status
    from jupyter_sandbox.backends.gvisor import runsc_installed
    from jupyter_sandbox.backends.images import image_status
    from jupyter_sandbox.backends.runtime.docker import connect_engine, is_local_engine
    from jupyter_sandbox.cli import doctor_checks as checks

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
                    engine.info(),
                    engine.version(),
                    runtime=settings.runtime,
                    runsc_installed=runsc_installed() if is_local_engine() else None,
                )
                status = image_status(engine, settings.image)
                egress = egress_image_status(engine, settings.egress_image)
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
        results.append(checks.check_egress_image(egress.tag, exists=egress.exists))
    results.append(disk_check(settings))
    from jupyter_sandbox.backends.store import store_location

    results.append(checks.Check("store", "info", store_location(settings)))
    code = code or checks.exit_code(results)
    summary = checks.missing(results)
    if as_json:
        _print_json({"checks": [c.to_dict() for c in results], "ok": code == 0, "missing": summary})
    else:
        console = _console()
        width = max(len(check.name) for check in results)
        for check in results:
            style = _LEVEL_STYLE[check.level]
            console.print(
                f"{check.name:<{width}}  [{style}]{check.level.upper():<4}[/]  "
                f"{escape(inert(check.detail, keep=chr(10)))}",
                soft_wrap=True,
            )
        if summary:
            _console(stderr=True).print(f"[bold red]{escape(summary)}[/]", soft_wrap=True)
    if code:
        raise typer.Exit(code)
