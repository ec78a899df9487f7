"""No import circle among the pack's own modules (read with ``ast``, so every import counts, deferred ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("thinkdiff", "nodes", "training", "evaluation")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The pack's modules that ``path`` imports (``from . import x`` resolved to a module where ``x`` is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle ``[a, b, ..., a]`` if there is any (depth-first search with a path stack)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circle_among_the_packs_modules():
    graph = import_graph()
    assert {"training.precompute", "evaluation.cobsat.generate", "nodes.alignment"} <= set(graph)  # the walk sees them
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize(("source", "edge"), [
    ("from .b import x\n", ("pkg.a", "pkg.b")),  # relative
    ("from . import b\n", ("pkg.a", "pkg.b")),  # a sibling module by name
    ("def f():\n    import pkg.b\n", ("pkg.a", "pkg.b")),  # deferred
])
def test_the_walk_sees_each_kind_of_import(tmp_path, monkeypatch, source, edge):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text(source)
    (tmp_path / "pkg" / "b.py").write_text("from .a import y\n")
    modules = {"pkg", "pkg.a", "pkg.b"}
    assert edge[1] in imported_modules(tmp_path / "pkg" / "a.py", modules)
    assert find_cycle({"pkg.a": imported_modules(tmp_path / "pkg" / "a.py", modules),
                       "pkg.b": imported_modules(tmp_path / "pkg" / "b.py", modules)}) == ["pkg.a", "pkg.b", "pkg.a"]
