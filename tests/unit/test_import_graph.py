"""The core's import graph: no circle between modules, and every import points down the layers.

Read from the source (``ast``), every ``import`` and ``from … import`` anywhere in a module,
including those inside functions, so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "linkdesk"

# Lower layers never import higher ones; a layer may import its own and every lower one.
# design.md: the MoneyKit boundary and plain helpers, then the store and the health rules over
# it, then the services (alerts and demo are services of their own), then the webhooks route
# (receiving calls services to apply), then the edges that wire and expose it all.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "linkdesk.errors",
        "linkdesk.validation",
        "linkdesk.settings",
        "linkdesk.auth",
        "linkdesk.connect_log",
        "linkdesk.mail",
    ),
    ("linkdesk.moneykit",),
    ("linkdesk.store", "linkdesk.health"),
    ("linkdesk.services", "linkdesk.alerts", "linkdesk.demo", "linkdesk.read"),
    ("linkdesk.webhooks",),
    (
        "linkdesk.metrics",
        "linkdesk.bootstrap",
        "linkdesk.staff_web",
        "linkdesk.http_security",
        "linkdesk.__main__",
        "linkdesk",
    ),
)
# Never imported by the core: the Streamlit side and the component.
OUTSIDE = ("streamlit", "ui", "app_pages", "components", "sandbox")


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for path in CORE.rglob("*.py")
        if "migrations" not in path.relative_to(CORE).parts
    }


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            if target in modules and target != name:
                edges[name].add(target)
    return edges


def _layer(module: str) -> int:
    best = -1, -1  # (length of the matching prefix, layer)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = len(prefix), rank
    if best[1] < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best[1]


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                    found.append(sorted(component))
    return found


def test_no_import_circle_in_the_core() -> None:
    assert _circles(_graph()) == []


def test_every_import_points_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


def test_the_core_never_imports_the_streamlit_side() -> None:
    reaching_out = sorted(
        f"{_module_name(path)} imports {name}"
        for path in _modules().values()
        for name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] in OUTSIDE
    )
    assert reaching_out == []


@pytest.mark.parametrize(
    ("edges", "circles"),
    [
        ({"a": {"b"}, "b": {"c"}}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_circle_finder_finds_circles(
    edges: dict[str, set[str]], circles: list[list[str]]
) -> None:
    assert _circles(edges) == circles


def test_an_upward_import_is_seen() -> None:
    # The rule itself: services sit below the webhooks route, which applies through them.
    assert _layer("linkdesk.services.worker") < _layer("linkdesk.webhooks.receiver")
    assert _layer("linkdesk.store.health_totals") < _layer("linkdesk.services.connect")
