"""Code that runs INSIDE a sandbox's kernel, sent as source (`kernel_source`); never run here.

The host never unpickles what a sandbox made: `_jsb_snapshot` pickles the user's namespace
with dill and tars it with the files of /mnt/data and /workspace into one bundle in the
sandbox, which the host only copies as opaque bytes; `_jsb_restore` unpacks such a bundle
in a new sandbox and unpickles it there. Each prints one JSON report after `marker`.

Bundle (an uncompressed tar): `namespace.pkl` (one dill stream, one shared memo, a record
per variable), `index.json` (each record's offsets and the imports), `files/...`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

SNAPSHOT_ENTRY = "_jsb_snapshot"
RESTORE_ENTRY = "_jsb_restore"
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def kernel_source() -> str:
    """This module's source, to define the entry points in a kernel."""
    return (files("jupyter_sandbox.backends") / "snapshot_kernel.py").read_text()


def _jsb_user_names(namespace: dict[str, Any], hidden: dict[str, Any]) -> list[str]:
    """The names a user bound in cells: not private, not IPython's own."""
    return sorted(
        name
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _IPYTHON_NAMES
        and not (name in hidden and hidden[name] is value)
    )


def _jsb_snapshot(bundle: str, roots: list[str], max_bytes: int, marker: str) -> None:
    """Write the bundle for the current kernel's namespace and files; print the report."""
    import importlib
    import json
    import os
    import tarfile
    import types

    from IPython import get_ipython

    dill = importlib.import_module("dill")
    shell = get_ipython()
    namespace: dict[str, Any] = shell.user_ns
    names = _jsb_user_names(namespace, shell.user_ns_hidden)
    records: list[list[Any]] = []
    imports: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    count = 0

    def over_cap(size: int) -> None:
        if size > max_bytes:
            raise RuntimeError(
                f"snapshot larger than the cap of {max_bytes} bytes (snapshot_max_bytes)"
            )

    with open(bundle, "wb") as out:
        out.write(b"\0" * 512)  # namespace.pkl's header, written once its size is known
        pickler = dill.Pickler(out, protocol=5)
        for name in names:
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                imports[name] = value.__name__
                continue
            start = out.tell()
            memo = dict(pickler.memo)
            try:
                pickler.dump((name, value))
            except Exception as exc:  # unpicklable: left out, and named in the report
                out.seek(start)
                out.truncate()
                pickler.memo = memo
                skipped.append(
                    {
                        "name": name[:200],
                        "type": type(value).__name__[:200],
                        "reason": f"{type(exc).__name__}: {exc}"[:500],
                    }
                )
                continue
            records.append([name, start - 512, out.tell() - 512])
            over_cap(out.tell())
        size = out.tell() - 512
        out.write(b"\0" * (-size % 512))
        end = out.tell()
        info = tarfile.TarInfo("namespace.pkl")
        info.size, info.mode = size, 0o600
        header = info.tobuf(tarfile.GNU_FORMAT)
        out.seek(0)
        out.write(header)
        out.seek(end)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
            index = json.dumps({"records": records, "imports": imports}).encode()
            member = tarfile.TarInfo("index.json")
            member.size = len(index)
            archive.addfile(member, _jsb_bytes_io(index))
            for root in roots:
                for folder, subfolders, filenames in os.walk(root):
                    for entry in sorted(subfolders) + sorted(filenames):
                        path = os.path.join(folder, entry)
                        if path == bundle:
                            continue
                        archive.add(path, arcname="files" + path, recursive=False)
                        if os.path.isfile(path) and not os.path.islink(path):
                            count += 1
                        over_cap(out.tell())
    report = {
        "variables": [r[0][:200] for r in records[:2000]],
        "imports": dict(list(imports.items())[:2000]),
        "skipped": skipped[:2000],
        "files": count,
        "truncated": max(len(records), len(imports), len(skipped)) > 2000,
    }
    print(marker + json.dumps(report))  # noqa: T201 (the kernel's stdout is the channel)


def _jsb_bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _jsb_restore(bundle: str, roots: list[str], marker: str) -> None:
    """Unpack a bundle here: files into their folders, then modules and variables."""
    import importlib
    import json
    import os
    import tarfile

    from IPython import get_ipython

    dill = importlib.import_module("dill")
    shell = get_ipython()
    restored: list[str] = []
    imported: list[str] = []
    failed: list[dict[str, str]] = []
    allowed = tuple(root.strip("/") + "/" for root in roots)
    try:
        with tarfile.open(bundle, "r:") as archive:
            pickled = archive.getmember("namespace.pkl")
            index_file = archive.extractfile("index.json")
            index = json.loads(index_file.read()) if index_file is not None else {}
            members = []
            for member in archive:
                name = member.name.removeprefix("files/")
                if member.name.startswith("files/") and name.startswith(allowed):
                    member.name = name
                    members.append(member)
            if hasattr(tarfile, "data_filter"):
                archive.extractall("/", members=members, filter="data")
            else:  # inside the sandbox, as its user: a hostile member lands only here
                archive.extractall("/", members=members)  # noqa: S202
        for name, module in index.get("imports", {}).items():
            try:
                shell.user_ns[name] = importlib.import_module(module)
                imported.append(name)
            except Exception as exc:
                failed.append({"name": name, "type": "module", "reason": repr(exc)[:500]})
        with open(bundle, "rb") as raw:
            unpickler = dill.Unpickler(raw)
            for name, start, _end in index.get("records", []):
                raw.seek(pickled.offset_data + start)
                try:
                    _, value = unpickler.load()
                except Exception as exc:
                    failed.append({"name": name, "type": "unknown", "reason": repr(exc)[:500]})
                    continue
                shell.user_ns[name] = value
                restored.append(name)
    finally:
        os.remove(bundle)
    report = {"variables": restored[:2000], "imports": imported[:2000], "failed": failed[:2000]}
    print(marker + json.dumps(report))  # noqa: T201 (the kernel's stdout is the channel)
