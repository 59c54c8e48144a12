"""The sandbox's own import graph: no circle between its modules, nothing from Linkdesk.

Read with ``ast`` from the source files, so an import hidden under ``TYPE_CHECKING`` or inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SANDBOX.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SANDBOX.rglob("*.py")}
    return {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            found = visit(target)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def test_graph_sees_the_sandbox_modules() -> None:
    graph = _graph()
    assert "sandbox.state" in graph and "sandbox.app" in graph
    assert "sandbox.state" in graph["sandbox.app"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_sandbox() -> None:
    assert _cycle(_graph()) is None


def test_sandbox_imports_nothing_from_linkdesk() -> None:
    offenders = {
        _module_name(path): sorted(n for n in _imports(path) if n.split(".")[0] == "linkdesk")
        for path in SANDBOX.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
