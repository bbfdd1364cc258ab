"""The layers of docs/architecture.md hold: no import runs back up a layer, no two modules
import each other (directly or round a circle), core knows no surface and no concrete backend,
and every module the page names exists.

Imports are read from the source (every `import`, `TYPE_CHECKING` ones and those inside a
function included: a layer that names another for its types still depends on it) and followed
through the package, so a chain core → backend module → docker counts as core importing docker.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from collections.abc import Collection
from pathlib import Path

import pytest

import jupyter_sandbox

PACKAGE = Path(jupyter_sandbox.__file__).parent
REPOSITORY = Path(__file__).parents[2]
ARCHITECTURE = REPOSITORY / "docs" / "architecture.md"

ROOT = "jupyter_sandbox"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_exceptions _version _options _boundary _terminal types",),  # the leaves
    ("backends settings testing",),  # settings reads backends/kernel_recipe.py (the image tag)
    ("core",),
    ("client",),
    ("jupyter", "code_interpreter"),
    ("server", "mcp_server"),
    ("cli",),
)
"""The layers, lowest first (docs/architecture.md draws the same). A layer holds blocks (a
string of names under the package; a package covers its modules). A module may import its
own block and the layers below it; blocks of one layer (sibling surfaces) import neither each
other nor anything above. The root package, the public facade, is above everything: no module
imports it."""

SURFACES = (
    ROOT,  # the public facade: `from jupyter_sandbox import Client`
    *(f"{ROOT}.{name}" for layer in LAYERS[3:] for block in layer for name in block.split()),
)
"""What sits above core (architecture.md, "surfaces"); a package here covers its modules."""

ENGINE_LIBRARIES = ("docker",)
"""Libraries only a concrete backend may use."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def package_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_names(path: Path, name: str, modules: Collection[str]) -> set[str]:
    """The absolute names module `name` (at `path`) imports: `from x import y` gives `x.y`
    when that is a module of the package, else `x`."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def with_parents(name: str) -> list[str]:
    """`jupyter_sandbox.a.b` → `jupyter_sandbox.a`, `jupyter_sandbox.a.b`: importing a module
    runs its packages' `__init__`; the root's, the public facade, is left out (every module
    would reach `Client` through it), so only naming the root itself counts."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(1, len(parts))] or [name]


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module → what it imports: package modules, and the top-level name of anything else.

    The packages an import runs on the way (`a` for `a.b`) count, except the importer's own:
    they are being imported already when it runs (`client/files.py` importing
    `client/_services.py` does not import `client/__init__.py` again). Naming its own package
    explicitly (`from jupyter_sandbox.client import Client` in `client/files.py`) counts."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for imported in imported_names(path, name, modules):
            if imported.split(".")[0] != ROOT:
                edges.add(imported.split(".")[0])
                continue
            edges.update(
                p
                for p in with_parents(imported)
                if p in modules and p != name and (p == imported or not is_within(name, p))
            )
        graph[name] = edges
    return graph


def is_within(name: str, package: str) -> bool:
    """Whether module `name` is `package` or lies in it."""
    return name == package or name.startswith(package + ".")


def chains_to(graph: dict[str, set[str]], start: str, forbidden: tuple[str, ...]) -> list[str]:
    """The import chains from `start` to each forbidden module it reaches (shortest first)."""

    def is_forbidden(name: str) -> bool:
        # The root package is forbidden by its exact name; a package prefix covers its modules.
        return name in forbidden or any(name.startswith(f + ".") for f in forbidden if f != ROOT)

    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    found: list[str] = []
    while queue:
        current = queue.popleft()
        for imported in sorted(graph.get(current, ())):
            if imported in came_from:
                continue
            came_from[imported] = current
            if is_forbidden(imported):
                chain = [imported]
                while (step := came_from[chain[-1]]) is not None:
                    chain.append(step)
                found.append(" → ".join(reversed(chain)))
            elif imported in graph:
                queue.append(imported)
    return found


CORE = sorted(name for name in package_modules() if name.startswith("jupyter_sandbox.core"))


def test_the_graph_sees_what_a_surface_imports() -> None:
    """The checks below could pass by reading nothing; here they must find known imports."""
    graph = import_graph()
    assert "jupyter_sandbox.core.containers" in graph["jupyter_sandbox.client"]
    assert "docker" in graph["jupyter_sandbox.backends.runtime.docker"]
    assert chains_to(graph, "jupyter_sandbox.cli", ("docker",))
    assert chains_to(graph, "jupyter_sandbox.jupyter.magics", ("jupyter_sandbox.client",))
    convert = graph["jupyter_sandbox.server.responses.convert"]
    assert "jupyter_sandbox.code_interpreter.adapters" in convert
    # the package a module lies in is not imported again; another package's is
    assert "jupyter_sandbox.client" not in graph["jupyter_sandbox.client.files"]
    assert "jupyter_sandbox.code_interpreter" in convert
    assert not chains_to(graph, "jupyter_sandbox.types.container", SURFACES)
    assert len(CORE) > 10


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_surface(module: str) -> None:
    chains = chains_to(import_graph(), module, SURFACES)
    assert not chains, "core imports a surface:\n" + "\n".join(chains)


def concrete_backends(graph: dict[str, set[str]]) -> tuple[str, ...]:
    """Backend modules that talk to an engine library themselves (the Docker backend's)."""
    return tuple(
        name
        for name, edges in graph.items()
        if name.startswith("jupyter_sandbox.backends") and edges & set(ENGINE_LIBRARIES)
    )


def test_concrete_backends_are_found() -> None:
    found = concrete_backends(import_graph())
    assert "jupyter_sandbox.backends.runtime.docker" in found
    assert "jupyter_sandbox.backends.store" not in found


def test_core_imports_no_concrete_backend() -> None:
    """Issue 13: core reaches the place a sandbox runs only through the backend protocol."""
    graph = import_graph()
    forbidden = (*ENGINE_LIBRARIES, *concrete_backends(graph))
    chains = [chain for module in CORE for chain in chains_to(graph, module, forbidden)]
    assert not chains, "core imports a concrete backend:\n" + "\n".join(chains)


def named_modules(page: str) -> tuple[set[str], set[str]]:
    """The `.py` files a page names anywhere, and the folders its layer map names."""
    files = set(re.findall(r"(?<![\w./<>-])([A-Za-z_][\w/]*\.py)\b", page))
    layers = page.split("## Layers", 1)[1].split("```")[1]
    folders = set(re.findall(r"(?<![\w./<>-])([a-z_][\w/]*/)(?![\w<])", layers))
    return files, folders


def repository_paths() -> tuple[set[str], set[str]]:
    """The files and folders of the repository's code (source, tests, tools), as paths from its
    root; a folder ends with `/`."""
    paths = [
        path
        for top in ("src", "tests", "benchmarks", "examples", "scripts", "kernelspecs")
        if (REPOSITORY / top).is_dir()
        for path in (REPOSITORY / top).rglob("*")
        if "__pycache__" not in path.parts
    ]
    files = {path.relative_to(REPOSITORY).as_posix() for path in paths if path.is_file()}
    folders = {f"{path.relative_to(REPOSITORY).as_posix()}/" for path in paths if path.is_dir()}
    return files, folders


def missing_modules(page: str) -> list[str]:
    """What a page names that the repository does not hold. A name is a path from the package
    (`core/kernels.py`), the repository (`tests/unit/test_layers.py`) or `src/`; a bare
    one (`engine_files.py` beside `backends/transfer.py`) may stand for a deeper path."""
    files, folders = named_modules(page)
    existing, existing_folders = repository_paths()

    def exists(name: str, among: set[str]) -> bool:
        return any(path == name or path.endswith("/" + name) for path in among)

    return sorted(
        [name for name in files if not exists(name, existing)]
        + [name for name in folders if not exists(name, existing_folders)]
    )


def test_a_page_naming_a_missing_module_is_caught() -> None:
    page = (
        "a `core/nope.py`\n## Layers\n```\ncore/containers.py gone/ server/\n```\n"
        "x/ `runtime/docker.py` `jupyter_sandbox/settings.py` `tests/unit/test_layers.py`"
    )
    assert named_modules(page) == (
        {
            "core/nope.py",
            "core/containers.py",
            "runtime/docker.py",
            "jupyter_sandbox/settings.py",
            "tests/unit/test_layers.py",
        },
        {"gone/", "server/"},
    )
    assert missing_modules(page) == ["core/nope.py", "gone/"]


def test_every_module_named_in_the_architecture_exists() -> None:
    page = ARCHITECTURE.read_text()
    files, folders = named_modules(page)
    assert {"core/containers.py", "backends/runtime/docker.py"} <= files
    assert {"server/", "cli/", "types/"} <= folders
    missing = missing_modules(page)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


Place = tuple[int, int]
"""A module's layer (index in `LAYERS`) and block (index in the layer)."""


def place(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> Place | None:
    """Where `module` sits: the block naming the longest prefix of it; the root package sits
    above every layer; None when no block names it."""
    if module == ROOT:
        return (len(layers), 0)
    found: tuple[int, Place] | None = None
    for level, layer in enumerate(layers):
        for index, block in enumerate(layer):
            for name in block.split():
                prefix = f"{ROOT}.{name}"
                if is_within(module, prefix) and (found is None or len(prefix) > found[0]):
                    found = (len(prefix), (level, index))
    return None if found is None else found[1]


def upward_imports(
    graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[str]:
    """Every import of a package module that leaves its block for a layer not below it."""
    found = []
    for module, edges in sorted(graph.items()):
        source = place(module, layers)
        for imported in sorted(edges):
            target = place(imported, layers) if imported.startswith(ROOT) else None
            if source is None or target is None or target == source:
                continue
            if target[0] >= source[0]:
                found.append(f"{module} → {imported}")
    return found


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The package's modules that import each other round a circle, one sorted list per circle
    (Tarjan's strongly connected components, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, edges = work[-1]
            step = next((e for e in edges if e in graph), None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in sorted(package_modules()) if place(name) is None]
    assert not unplaced, f"add these modules to a block of LAYERS: {unplaced}"


def test_the_layer_checks_can_fail() -> None:
    """A circle, an import up a layer and one between sibling surfaces are all caught."""
    layers = (("types",), ("core",), ("client",), ("jupyter", "server"))
    graph = {
        f"{ROOT}.types.a": {f"{ROOT}.types.b", "pydantic"},
        f"{ROOT}.types.b": set(),
        f"{ROOT}.core.x": {f"{ROOT}.core.y", f"{ROOT}.types.a"},
        f"{ROOT}.core.y": {f"{ROOT}.core.z"},
        f"{ROOT}.core.z": {f"{ROOT}.core.x", f"{ROOT}.client"},
        f"{ROOT}.client": {f"{ROOT}.core.x"},
        f"{ROOT}.jupyter.m": {f"{ROOT}.server.app", f"{ROOT}.client"},
        f"{ROOT}.server.app": {ROOT},
    }
    assert import_circles(graph) == [
        [f"{ROOT}.client", f"{ROOT}.core.x", f"{ROOT}.core.y", f"{ROOT}.core.z"]
    ]
    assert upward_imports(graph, layers) == [
        f"{ROOT}.core.z → {ROOT}.client",
        f"{ROOT}.jupyter.m → {ROOT}.server.app",
        f"{ROOT}.server.app → {ROOT}",
    ]
    assert place(f"{ROOT}.cli.demo") == (len(LAYERS) - 1, 0)
    assert place(f"{ROOT}.backends.runtime.docker") == place(f"{ROOT}.settings") == (1, 0)


def test_no_import_runs_up_a_layer() -> None:
    found = upward_imports(import_graph())
    assert not found, "imports that run up a layer (see LAYERS):\n" + "\n".join(found)


def test_no_import_circle() -> None:
    """Issue 13: no two modules import each other, directly or round a circle (for its types
    too: break one with a Protocol of what the lower module uses, as `client/_services.py`)."""
    circles = import_circles(import_graph())
    assert not circles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in circles)
