"""The two packages of issue 22: modules moved out of cfviz.experiments (into cfviz.evaluation, the run
pipeline, and cfviz.analysis), their old names still work.

* ``cfviz.experiments.<module>`` (every form of import) is the module of its new package itself,
  so patching either name patches both, and importing it warns with the new path;
* the names ``cfviz.experiments`` exported before (``compare_results``, ...) import without a warning;
* the project's own code, tests, notebooks and docs name no old path;
* the package docstring lists every module, and the modules' docstring examples run.
"""

from __future__ import annotations

import doctest
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

import cfviz.experiments
from cfviz.utils.lazy import MOVED

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = ("ablations", "block_widths", "compare", "export", "failures", "family_maps", "published", "sensitivity")


def _forget(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Import ``cfviz.experiments.<name>`` afresh in this test (the alias is cached after its first import)."""
    monkeypatch.delitem(sys.modules, f"cfviz.experiments.{name}", raising=False)
    monkeypatch.delattr(cfviz.experiments, name, raising=False)


@pytest.mark.parametrize("name", sorted(old.rsplit(".", 1)[1] for old in MOVED if old.startswith("cfviz.experiments.")))
def test_old_module_path_is_the_new_module_and_warns(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = MOVED[f"cfviz.experiments.{name}"]
    new = importlib.import_module(target)
    statements = {"import": f"import cfviz.experiments.{name} as module",
                  "from package": f"from cfviz.experiments import {name} as module"}
    for form, statement in statements.items():
        _forget(monkeypatch, name)
        scope: dict = {}
        with pytest.warns(DeprecationWarning, match=rf"cfviz\.experiments\.{name} moved to {re.escape(target)}"):
            exec(statement, scope)
        assert scope["module"] is new, form
        assert sys.modules[f"cfviz.experiments.{name}"] is new and cfviz.experiments.__dict__[name] is new
    # one object: a patch through the old name is seen through the new one
    monkeypatch.setattr(f"cfviz.experiments.{name}.__doc__", "patched")
    assert new.__doc__ == "patched"
    assert new.__name__ == new.__spec__.name == target  # the real module keeps its identity
    assert len([m for m in MOVED if m.startswith("cfviz.experiments.")]) == 25  # 17 pipeline + 8 analysis modules


def test_from_old_module_import_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget(monkeypatch, "compare")
    with pytest.warns(DeprecationWarning, match="cfviz.analysis.compare"):
        from cfviz.experiments.compare import load_results
    from cfviz.analysis.compare import load_results as new
    assert load_results is new


def test_analysis_names_of_the_experiments_package_keep_working_without_a_warning() -> None:
    from cfviz.analysis import compare, export

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from cfviz.experiments import compare_results, load_results, matching_export, results_table
    assert not [w for w in caught if "moved to" in str(w.message)]
    assert (compare_results, load_results) == (compare.compare_results, compare.load_results)
    assert (results_table, matching_export) == (export.results_table, export.matching_export)


def _texts() -> list[Path]:
    """The project's code, tests, notebooks and docs (without this file and the alias mechanism)."""
    files = [*ROOT.glob("*.md")]
    for folder in ("cfviz", "tests", "benchmarks", "notebooks", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".md")]
    return [p for p in files if p != Path(__file__).resolve() and p != ROOT / "cfviz" / "utils" / "lazy.py"]


def test_project_names_no_old_module_path() -> None:
    assert {f"cfviz.experiments.{n}" for n in ANALYSIS} <= set(MOVED)
    packages = {old.rpartition(".")[0] for old in MOVED}
    dotted = re.compile("|".join(rf"{re.escape(old)}\b|{re.escape(old.replace('.', '/'))}\.py" for old in MOVED))
    from_package = re.compile(rf"from\s+({'|'.join(map(re.escape, packages))})\s+import\s+\(?([\w\s,]+)")
    found = []
    for path in _texts():
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in dotted.finditer(text)]
        for m in from_package.finditer(text):
            names = {n.split(" as ")[0].strip() for n in m.group(2).split(",")}
            found += [f"{path.relative_to(ROOT)}: from {m.group(1)} import {n}" for n in sorted(names)
                      if f"{m.group(1)}.{n}" in MOVED]
    assert not found, "old module paths (import from the new ones):\n" + "\n".join(found)


def test_package_docstring_lists_every_module() -> None:
    import cfviz.analysis

    modules = {p.stem for p in (ROOT / "cfviz" / "analysis").glob("*.py") if p.stem != "__init__"}
    assert modules == set(ANALYSIS)
    assert all(f"``{m}``" in cfviz.analysis.__doc__ for m in modules)
    for name in cfviz.analysis.__all__:
        assert getattr(cfviz.analysis, name) is not None


@pytest.mark.parametrize("name", ["cfviz.utils.lazy", *(f"cfviz.analysis.{n}" for n in ANALYSIS)])
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
