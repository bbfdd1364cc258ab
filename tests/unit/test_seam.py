"""The seam between core and where sandboxes run: core imports no concrete backend, the
Docker backend has every member of the protocol, backends are found by name, and the
reconcile report merges and prints every field."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends import kernel
from jupyter_sandbox.backends.base import CHANNELS, Backend, KernelEndpoint
from jupyter_sandbox.backends.docker_backend import DockerBackend
from jupyter_sandbox.backends.registry import build_backend
from jupyter_sandbox.core.reconcile import ReconcileReport
from jupyter_sandbox.settings import Settings

CORE = Path(__file__).parents[2] / "src" / "jupyter_sandbox" / "core"
CONCRETE = (
    "docker",
    "jupyter_sandbox.backends.runtime",
    "jupyter_sandbox.backends.docker_backend",
    "jupyter_sandbox.backends.egress",
    "jupyter_sandbox.backends.egress_network",
    "jupyter_sandbox.backends.engine_files",
    "jupyter_sandbox.backends.host_files",
    "jupyter_sandbox.backends.disk",
    "jupyter_sandbox.backends.deadline_file",
)


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_concrete_backend(path: Path) -> None:
    bad = [
        name
        for name in _imports(path)
        if any(name == c or name.startswith(f"{c}.") for c in CONCRETE)
    ]
    assert bad == [], f"{path.name} imports {bad}"


def test_the_docker_backend_has_every_member_of_the_protocol() -> None:
    members = {name for name, _ in inspect.getmembers(Backend) if not name.startswith("_")} | set(
        Backend.__annotations__
    )
    missing = sorted(m for m in members if not hasattr(DockerBackend, m))
    assert missing == []
    for name in members - set(Backend.__annotations__):
        ours = inspect.signature(getattr(DockerBackend, name))
        theirs = inspect.signature(getattr(Backend, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_an_unknown_backend_name_is_refused_naming_the_param(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError) as caught:
        build_backend("nonsense", Settings(home=tmp_path))
    assert caught.value.param == "backend"
    assert "docker" in caught.value.message


def test_the_ipc_endpoint_is_the_connection_file_the_kernel_reads() -> None:
    endpoint = KernelEndpoint(
        transport="ipc",
        ip="/run/x/k",
        ports={name: i + 1 for i, name in enumerate(CHANNELS)},
        key="ab" * 32,
        folder=Path("/run/x"),
        uid=1000,
    )
    assert endpoint.connection_info() == kernel.connection_info("/run/x/k", "ab" * 32)
    curved = KernelEndpoint(
        transport="tcp",
        ip="10.0.0.5",
        ports=endpoint.ports,
        key="k",
        curve_server_key="S" * 40,
        curve_public_key="P" * 40,
        curve_secret_key="X" * 40,
    )
    info = curved.connection_info()
    assert info["curve_server_key"] == "S" * 40
    assert "X" * 40 not in repr(curved)
    assert "X" * 40 not in str(info)


def test_reconcile_reports_merge_and_print_every_field() -> None:
    first = ReconcileReport(marked=["a"], storage=["s1"], uploads=["a/u"])
    second = ReconcileReport(
        marked=["b"], removed=["c"], socket_dirs=["d"], egress=["x"], blobs=["files/f"]
    )
    merged = first.merge(second)
    assert merged.marked == ["a", "b"]
    assert [name for name, _ in merged.items()] == [
        "marked", "removed", "socket_dirs", "storage", "egress", "uploads", "blobs",
    ]  # fmt: skip
    assert all(entries for _, entries in merged.items())
    assert len(merged.lines()) == 8
    assert not ReconcileReport()
    assert merged
