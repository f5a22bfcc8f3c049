"""The package's shape: no import cycle between its modules, imports that point one way, and an
installation that holds only ``mango`` packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
#: the layers, lowest first: a module may import only from its own layer or a lower one
LAYERS = ("flows", "models", "tasks", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``mango`` modules it imports (anywhere in the file, lazy imports included);
    ``from package import name`` counts the submodule when ``name`` is one."""
    paths = {module_name(p): p for p in sorted((SRC / "mango").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in paths else base)
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert "mango.flows.block" in graph["mango.models.fusion.flow"] or any(
        e.startswith("mango.flows") for e in graph["mango.models.fusion.flow"]
    )
    assert len(graph) > 100


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_one_way() -> None:
    def layer(module: str) -> int | None:
        part = module.split(".")[1] if module.count(".") else ""
        return LAYERS.index(part) if part in LAYERS else None

    wrong = [
        (source, target)
        for source, targets in import_graph().items()
        for target in targets
        if layer(source) is not None and layer(target) is not None and layer(target) > layer(source)  # type: ignore[operator]
    ]
    assert not wrong, wrong


def test_flows_is_pure_math() -> None:
    outside = {
        (source, target)
        for source, targets in import_graph().items()
        if source.startswith("mango.flows")
        for target in targets
        if not target.startswith("mango.flows")
    }
    assert not outside, outside


def test_installation_holds_only_mango_packages() -> None:
    """``pip install .`` finds its packages under ``src/`` only, and they are all ``mango``."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = re.search(r"\[tool\.setuptools\.packages\.find\]\n((?:[^\[\n].*\n)*)", pyproject)
    assert section is not None
    assert 'where = ["src"]' in section.group(1), section.group(1)
    packages = find_packages(where=str(SRC), include=["mango*"])
    assert "mango.bench" in packages and "mango.demo" in packages
    assert all(p == "mango" or p.startswith("mango.") for p in packages), packages
