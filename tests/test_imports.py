"""The package has no import cycles, and the registry module imports nothing back from crt.

The graph holds every `import crt...` / `from crt... import ...` statement of every module under crt/,
at module level or inside functions (a deferred import that closes a loop is still a cycle). A package's
implicit import of its own __init__ is not an edge. Run directly: `python tests/test_imports.py`.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "crt"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the crt modules it imports (a `from a.b import c` names a.b.c when that is a module)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "crt.registry" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_finder_sees_a_cycle() -> None:
    """The check can fail: a deferred import inside a function closing a loop is found."""
    graph = import_graph()
    graph["crt.registry"].add("crt.losses.classification")  # as if registry imported a component back
    cycle = find_cycle(graph)
    assert cycle is not None and "crt.registry" in cycle


def test_registry_is_a_leaf() -> None:
    assert import_graph()["crt.registry"] <= {"crt.errors"}


if __name__ == "__main__":
    cycle = find_cycle(import_graph())
    print("import cycle: " + " -> ".join(cycle) if cycle else "no import cycles")
    raise SystemExit(1 if cycle else 0)
