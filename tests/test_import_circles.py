"""No import circles in the library (any import counts, also in functions).

An import circle means two modules are one concern, or a third small module is missing. The check
reads the source (no import runs). ``PENDING`` leaves aside the circles whose two modules both lie in
a package issue 22 has not cleaned yet; empty it when that package is done.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PENDING: tuple[str, ...] = ()


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules of cfviz it imports}``; package ``__init__`` files are left out (they only re-export)."""
    files = {p: ".".join(p.relative_to(root).with_suffix("").parts) for p in (root / "cfviz").rglob("*.py")
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


def test_no_import_circle() -> None:
    graph = _graph()
    circles = sorted({" <-> ".join(sorted((a, b))) for a in graph for b in graph[a] if _reaches(graph, b, a)
                      and not (a.startswith(PENDING) and b.startswith(PENDING))})
    assert not circles, f"import circles: {circles}"


def test_the_check_sees_circles_through_functions_and_relative_imports(tmp_path) -> None:
    pkg = tmp_path / "cfviz" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from cfviz.pkg import a\n")
    graph = _graph(tmp_path)
    assert graph == {"cfviz.pkg.a": {"cfviz.pkg.b"}, "cfviz.pkg.b": {"cfviz.pkg.a"}}
