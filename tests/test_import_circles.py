"""No import circles inside the packages that issue 22 has cleaned (any import counts, also in functions).

An import circle means two modules are one concern, or a third small module is missing. The check
reads the source (no import runs); widen ``PACKAGES`` as more packages lose their circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cfviz.analysis", "cfviz.clip.aaclip", "cfviz.diffusion", "cfviz.metrics", "cfviz.models")


def _graph() -> dict[str, set[str]]:
    """``{module: modules of cfviz it imports}``; package ``__init__`` files are left out (they only re-export)."""
    files = {p: ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "cfviz").rglob("*.py")
             if p.name != "__init__.py"}
    modules = set(files.values())
    graph: dict[str, set[str]] = {}
    for path, me in files.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(me.split(".")[:-node.level] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != me:
                    out.add(name)
        graph[me] = out
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_inside(package: str) -> None:
    graph = _graph()
    inside = [m for m in graph if m.startswith(package + ".")]
    circles = sorted({" <-> ".join(sorted((a, b))) for a in inside for b in graph[a]
                      if b.startswith(package + ".") and _reaches(graph, b, a)})
    assert not circles, f"import circles in {package}: {circles}"
