"""No two modules of the package import each other, directly or through others.

Every import of a visionops module counts, at module level or inside a function, except those
under ``if TYPE_CHECKING:`` (never run) and a module's import of a package it lives in (already
imported by then). ``from visionops.x import y`` counts as an import of ``visionops.x.y`` when
that is a module. A cycle is broken by moving what both modules need down to a module both can
import, not by hiding an import inside a function.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "visionops"


def module_files() -> dict[str, Path]:
    """Each module's dotted name and its file (a package is named by its ``__init__.py``)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements in ``nodes``, at any depth, but in no ``if TYPE_CHECKING:`` body."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, modules: set[str]) -> dict[str, int]:
    """The visionops modules that module ``name`` imports, each with the line of one import."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}
    for node in _import_nodes([ast.parse(path.read_text(), str(path))]):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        for target in targets:
            if target not in modules or target == name or name.startswith(f"{target}."):
                continue  # not ours, itself, or a package it lives in
            found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the import}."""
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The components of modules that reach each other (Tarjan), those of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself inside one component."""
    paths = {start: [start]}
    queue = [start]
    for node in queue:
        for target in sorted(graph[node]):
            if target == start:
                return [*paths[node], start]
            if target in within and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"{start} is in no cycle")


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """The modules of ``component`` and the imports of one cycle through them."""
    files = module_files()
    cycle = shortest_cycle(graph, component[0], set(component))
    steps = [
        f"  {a} imports {b} ({files[a].relative_to(SRC.parent)}:{graph[a][b]})"
        for a, b in itertools.pairwise(cycle)
    ]
    return "\n".join([f"{', '.join(component)} reach each other; one cycle:", *steps])


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    assert not components, "modules that import each other:\n" + "\n".join(
        describe(graph, component) for component in components
    )


def test_the_graph_sees_imports_inside_functions_and_not_under_type_checking() -> None:
    graph = import_graph()
    # cli/__init__.py imports the error types at module level and the tracking checks inside
    # _tracking_refusal; cli/output.py imports TrainResult only for type checkers.
    assert "visionops.errors" in graph["visionops.cli"]
    assert "visionops.tracking.connection" in graph["visionops.cli"]
    assert "visionops.training" not in graph["visionops.cli.output"]
    assert len(graph) > 100  # every module was read


def test_relative_imports_and_imported_submodules_resolve_to_the_module(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import output\n"  # a sibling module
        "from .. import errors, TrainConfig\n"  # a module, and a name of the package face
        "from visionops.cli import main\n"  # the package it lives in: not counted
        "if TYPE_CHECKING:\n"
        "    from visionops.training import TrainResult\n"
        "else:\n"
        "    import visionops.env\n"
        "def handler():\n"
        "    from visionops.tracking.connection import check_command_server\n"
    )
    modules = {
        "visionops",
        "visionops.errors",
        "visionops.env",
        "visionops.cli",
        "visionops.cli.output",
        "visionops.cli.train",
        "visionops.training",
        "visionops.tracking.connection",
    }
    found = imported_modules("visionops.cli.train", path, modules)
    assert sorted(found) == [
        "visionops.cli.output",
        "visionops.env",
        "visionops.errors",
        "visionops.tracking.connection",
    ]
