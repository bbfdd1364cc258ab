"""File transfer benchmark: uploads and downloads of 1 MB, 100 MB and 1 GB, beside `docker cp`.

In one run, into one sandbox per storage mode: our client on the capped disk (loop mode, host
writes the mounted image directly), our client on plain volumes (Docker's archive API with an
uncompressed tar stream), and `docker cp` into the same sandbox. Prints MB/s (median of the
rounds; 1 MB = 10^6 bytes). Usage: `python benchmarks/files.py [--rounds 3] [--sizes 1,100,1000]`.

Then the Files API's stored files (`client.files`, issue 15): a `--stored` MiB file (default
50) uploaded and downloaded through an embedded client whose blobs are files in the state
folder (the SQLite store) and one whose blobs are chunked rows of a PostgreSQL store (a
throwaway server from tests/pg_cluster.py, on this host; `--store-url` names another).
`--stored-only` runs just that part.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_sandbox import Client

LABEL = {"org.jupyter-sandbox.test": "benchmark-files"}


def make_source(folder: Path, megabytes: int) -> Path:
    path = folder / f"src-{megabytes}.bin"
    block = os.urandom(2**20)
    with path.open("wb") as sink:
        remaining = megabytes * 10**6
        while remaining:
            chunk = block[: min(len(block), remaining)]
            sink.write(chunk)
            remaining -= len(chunk)
    return path


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(2**20):
            sha.update(chunk)
    return sha.hexdigest()


def timed_run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def ours(
    client: Client, container_id: str, source: Path, target: Path, rounds: int
) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for index in range(rounds):
        path = f"/mnt/data/ours-{index}.bin"
        made: list[str] = []
        started = time.perf_counter()
        made.append(client.containers.files.create(container_id, file=source, path=path).id)
        ups.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.containers.files.content.retrieve(container_id, made[0]).write_to_file(target)
        downs.append(time.perf_counter() - started)
        assert target.stat().st_size == source.stat().st_size
        client.containers.files.delete(container_id, made[0])
    return ups, downs


def docker_cp(
    container_id: str, source: Path, target: Path, rounds: int
) -> tuple[list[float], list[float]]:
    name = f"jsbx-{container_id}"
    ups, downs = [], []
    for index in range(rounds):
        inside = f"{name}:/mnt/data/cp-{index}.bin"
        ups.append(timed_run(["docker", "cp", str(source), inside]))
        target.unlink(missing_ok=True)
        downs.append(timed_run(["docker", "cp", inside, str(target)]))
        assert target.stat().st_size == source.stat().st_size
        subprocess.run(["docker", "exec", name, "rm", f"/mnt/data/cp-{index}.bin"], check=True)
    return ups, downs


def rate(megabytes: float, seconds: list[float]) -> str:
    median = statistics.median(seconds)
    return f"{megabytes / median:8.0f} MB/s ({median * 1000:7.1f} ms)"


def stored_files(
    client: Client, source: Path, target: Path, rounds: int
) -> tuple[list[float], list[float]]:
    """Upload to and download from `client.files` (the blob store only: no sandbox)."""
    ups, downs = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        made = client.files.create(file=source, purpose="user_data")
        ups.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.files.content.retrieve(made.id).write_to_file(target)
        downs.append(time.perf_counter() - started)
        assert digest(target) == digest(source)
        client.files.delete(made.id)  # the next upload stores the bytes again
    return ups, downs


def stored_rows(
    folder: Path, mebibytes: int, rounds: int, store_url: str | None
) -> list[tuple[str, str, str]]:
    """The stored-files figures: state-folder blobs beside PostgreSQL chunks, one run."""
    source = make_source(folder, 0)
    with source.open("wb") as sink:
        for _ in range(mebibytes):
            sink.write(os.urandom(2**20))
    target = folder / "stored-out.bin"
    megabytes = mebibytes * 2**20 / 10**6
    cluster = None
    if store_url is None:
        from tests.pg_cluster import PostgresCluster, server_bin

        bin_dir = server_bin()
        if bin_dir is None:
            raise SystemExit("PostgreSQL server binaries (initdb) are missing: pass --store-url")
        cluster = PostgresCluster(bin_dir)
        store_url = cluster.database()
    rows: list[tuple[str, str, str]] = []
    try:
        stores: list[tuple[str, dict[str, Any]]] = [
            ("SQLite store, blobs in the state folder", {}),
            ("PostgreSQL store, chunked bytea rows", {"store_url": store_url}),
        ]
        for channel, options in stores:
            client = Client(home=folder / f"home-{len(rows)}", extra_labels=LABEL, **options)
            try:
                up, down = stored_files(client, source, target, rounds)
            finally:
                client.close()
            rows.append(
                (f"{mebibytes} MiB", channel, f"{rate(megabytes, up)}  {rate(megabytes, down)}")
            )
    finally:
        if cluster is not None:
            cluster.destroy()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,100,1000", help="megabytes, comma separated")
    parser.add_argument("--stored", type=int, default=50, help="MiB of the stored-files run")
    parser.add_argument("--stored-only", action="store_true", help="only the stored-files run")
    parser.add_argument("--store-url", default=None, help="a PostgreSQL store to measure")
    args = parser.parse_args()
    sizes = [] if args.stored_only else [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        folder = Path(work)
        stored = stored_rows(folder, args.stored, args.rounds, args.store_url)
        if not sizes:
            print_rows([], stored)
            return
        home = folder / "home"
        loop = Client(home=home, extra_labels=LABEL, file_size_limit=2 * 10**9)
        volume = Client(
            home=home, extra_labels=LABEL, file_size_limit=2 * 10**9, disk_mechanism="volume"
        )
        rows: list[tuple[str, str, str]] = []
        try:
            capped = loop.containers.create(name="bench-loop")
            plain = volume.containers.create(name="bench-volume")
            for megabytes in sizes:
                source = make_source(folder, megabytes)
                target = folder / "out.bin"
                rounds = args.rounds if megabytes < 1000 else max(1, args.rounds - 1)
                up, down = ours(loop, capped.id, source, target, rounds)
                assert digest(target) == digest(source)
                rows.append(
                    (
                        f"{megabytes} MB",
                        "ours, capped disk (host mount)",
                        f"{rate(megabytes, up)}  {rate(megabytes, down)}",
                    )
                )
                up, down = ours(volume, plain.id, source, target, rounds)
                assert digest(target) == digest(source)
                rows.append(
                    (
                        f"{megabytes} MB",
                        "ours, volumes (archive API)",
                        f"{rate(megabytes, up)}  {rate(megabytes, down)}",
                    )
                )
                up, down = docker_cp(capped.id, source, target, rounds)
                rows.append(
                    (
                        f"{megabytes} MB",
                        "docker cp (same sandbox)",
                        f"{rate(megabytes, up)}  {rate(megabytes, down)}",
                    )
                )
                source.unlink()
                target.unlink(missing_ok=True)
        finally:
            for client in (loop, volume):
                for container in client.containers.list():
                    client.containers.delete(container.id)
                client.close()
    print_rows(rows, stored)


def print_rows(rows: list[tuple[str, str, str]], stored: list[tuple[str, str, str]]) -> None:
    print(f"{'size':<8} {'channel':<32} {'upload':<28}  {'download':<28}")
    for size, channel, figures in rows:
        print(f"{size:<8} {channel:<32} {figures}")
    print(f"\n{'size':<8} {'stored files (client.files)':<40} {'upload':<28}  {'download':<28}")
    for size, channel, figures in stored:
        print(f"{size:<8} {channel:<40} {figures}")


if __name__ == "__main__":
    main()
