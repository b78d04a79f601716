"""Imports inside ``signalbus/`` run one way: no module imports another that imports it.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING``
alike (a lazy import hides a cycle, it does not remove it). The graph is read from the
source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import signalbus

ROOT = Path(signalbus.__file__).parent
EXCLUDED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The signalbus module ``name`` is (or is inside), if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # "from . import x" and "from .pkg import sub" name modules too
                targets = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
            for target in targets:
                resolved = _resolve(target, modules)
                # a module's own packages are imported before it, whatever it says
                # ("from . import sql" names its package): not an edge of the flow
                if resolved is not None and resolved != name \
                        and not name.startswith(resolved + "."):
                    edges.add(resolved)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's modules, found by a depth-first walk (one path per cycle)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in EXCLUDED:
                continue
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node not in EXCLUDED:
            visit(node)
    return found


def test_the_graph_sees_the_modules_and_their_imports():
    graph = import_graph()
    assert "signalbus.capture.listeners" in graph
    assert "signalbus.capture.frames" in graph["signalbus.capture.listeners"]
    assert "signalbus.runtime" in graph["signalbus.bus"]


def test_no_import_cycle_among_signalbus_modules():
    assert _cycles(import_graph()) == []


def test_capture_does_not_know_delivery_nor_flask():
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("signalbus.capture"):
            assert not edges & {"signalbus.delivery", "signalbus.runtime", "signalbus.bus",
                                "signalbus.flask", "signalbus.plugins", "signalbus.outbox"}, name


def test_frames_need_no_database():
    assert import_graph()["signalbus.capture.frames"] <= {"signalbus.events"}


def test_the_walk_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
