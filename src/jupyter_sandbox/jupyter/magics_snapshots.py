"""`%sandbox snapshot`, `%sandbox fork` and `%sandbox snapshots` (issue 18): parse, call the
Python API, render. The magics class delegates to these."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from jupyter_sandbox._terminal import inert
from jupyter_sandbox.types.snapshot import Snapshot

if TYPE_CHECKING:
    from jupyter_sandbox.jupyter._magics_state import MagicsState


def add_commands(commands: Any) -> None:
    """Add the three subcommands to `%sandbox`'s parser."""
    snapshot = commands.add_parser("snapshot", help="snapshot the sandbox in use")
    snapshot.add_argument("--name", default=None, help="a label of your own")
    fork = commands.add_parser("fork", help="create a sandbox from a snapshot and use it")
    fork.add_argument("snapshot", metavar="SNAPSHOT", nargs="?", help="snap_... id")
    fork.add_argument("--name", default=None, help="name of the new sandbox (default: fork)")
    listing = commands.add_parser("snapshots", help="list a sandbox's snapshots")
    listing.add_argument("id", metavar="ID", nargs="?")


def describe(snapshot: Snapshot) -> str:
    """One line: id, size, what it holds, what it left out."""
    report = snapshot.report
    skipped = ", ".join(inert(f"{s.name} ({s.type})") for s in report.skipped)
    return (
        f"{snapshot.id}  {snapshot.bytes / 2**20:.1f} MiB  {len(report.variables)} variables, "
        f"{len(report.imports)} imports, {report.files} files"
        + (f"; skipped: {skipped}" if skipped else "")
    )


def do_snapshot(magics: MagicsState, args: argparse.Namespace) -> None:
    """`%sandbox snapshot`."""
    container_id = magics._require_current("snapshot")
    snapshot = magics.client.containers.snapshots.create(container_id, name=args.name)
    print(f"Snapshot {describe(snapshot)}")  # noqa: T201


def do_fork(magics: MagicsState, args: argparse.Namespace) -> None:
    """`%sandbox fork`: the new sandbox becomes the one in use; the source runs on."""
    snapshot_id = args.snapshot
    if snapshot_id is None:
        source = magics._require_current("fork")
        taken = list(magics.client.containers.snapshots.list(source))
        snapshot = taken[-1] if taken else magics.client.containers.snapshots.create(source)
        snapshot_id = snapshot.id
    container = magics.client.containers.create(name=args.name or "fork", snapshot_id=snapshot_id)
    restored = (container.model_extra or {}).get("restored") or {}
    magics.current = container.id
    print(  # noqa: T201
        f"Forked {snapshot_id} into sandbox {container.id} ({inert(container.name)}); now in "
        f"use. Restored {len(restored.get('variables', []))} variables."
    )
    failed = restored.get("failed") or []
    if failed:
        names = ", ".join(inert(str(f.get("name"))) for f in failed)
        print(f"Not restored: {names}")  # noqa: T201


def do_snapshots(magics: MagicsState, args: argparse.Namespace) -> None:
    """`%sandbox snapshots`."""
    container_id = args.id or magics._require_current("snapshots")
    found = list(magics.client.containers.snapshots.list(container_id))
    if not found:
        print(f"No snapshots of {container_id}. Take one with %sandbox snapshot.")  # noqa: T201
    for snapshot in found:
        print(describe(snapshot))  # noqa: T201
