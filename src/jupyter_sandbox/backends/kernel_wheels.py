"""The kernel image's PyPI wheels (`image_recipe/wheels.txt`), downloaded on the host.

The build stays offline on the engine's side: the host runs `pip download` (hash-checked,
binary only, for the image's CPython and architecture) into a cache folder, and the wheels
travel in the build context, where pip installs them with `--no-index`.
"""

from __future__ import annotations

import hashlib
import platform
import re
import subprocess
import sys
from pathlib import Path

from jupyter_sandbox._exceptions import APIError

IMAGE_PYTHON = "3.11"
"""The CPython of the image's Debian release (bookworm)."""
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})$")
_PLATFORMS = {
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"),
    "aarch64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64"),
}


class WheelDownloadError(APIError):
    """The wheels could not be downloaded or did not match their pinned hashes."""


def parse_wheels(text: str) -> dict[str, tuple[str, str]]:
    """`{name: (version, sha256)}` from `wheels.txt` (`name==version --hash=sha256:...`)."""
    pins: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        line = line.partition("#")[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"wheels.txt: not `name==version --hash=sha256:<hex>`: {line!r}")
        pins[match[1]] = (match[2], match[3])
    return pins


def download(requirements: bytes, folder: Path) -> dict[str, bytes]:
    """The pinned wheels, by file name, downloaded into `folder` unless already there.

    Raises:
        WheelDownloadError: pip failed (no index reachable) or a hash did not match.
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected = {sha for _, sha in parse_wheels(requirements.decode()).values()}
    found = _cached(folder, expected)
    if set(found.values()) != expected:
        _pip_download(requirements, folder)
        found = _cached(folder, expected)
    missing = expected - set(found.values())
    if missing:
        raise WheelDownloadError(
            f"pip downloaded wheels that do not match wheels.txt ({len(missing)} hash(es))"
        )
    return {name: (folder / name).read_bytes() for name in found}


def _cached(folder: Path, expected: set[str]) -> dict[str, str]:
    hashes = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.whl")
    }
    return {name: sha for name, sha in hashes.items() if sha in expected}


def _pip_download(requirements: bytes, folder: Path) -> None:
    machine = platform.machine()
    platforms = _PLATFORMS.get(machine)
    if platforms is None:
        raise WheelDownloadError(f"no wheel platform known for this machine ({machine})")
    pins = folder / "wheels.txt"
    pins.write_bytes(requirements)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "--python-version", IMAGE_PYTHON, "--implementation", "cp",
        "--abi", f"cp{IMAGE_PYTHON.replace('.', '')}", "--abi", "abi3", "--abi", "none",
        *(arg for name in platforms for arg in ("--platform", name)),
        "--dest", str(folder), "-r", str(pins),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise WheelDownloadError(
            "cannot download the kernel image's wheels from PyPI (pip download failed):\n"
            + result.stderr[-2000:]
        )
