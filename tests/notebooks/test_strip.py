"""Notebooks are stripped of outputs automatically: a git clean filter that ``make`` sets up.

JupyterLab's autosave writes outputs into a notebook after Run All; the filter strips them when
the notebook is staged, so a commit never carries them (and the no-outputs test stays green).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cfviz import notebooks as nbs

ROOT = Path(__file__).resolve().parents[2]


def _dirty(path: Path) -> str:
    """Notebook 02 as JupyterLab leaves it after Run All: outputs, counts, timing, widget state."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-29T10:00:00Z"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return json.dumps(nb, indent=1)


def test_strip_removes_outputs_and_is_idempotent(tmp_path: Path) -> None:
    clean = (ROOT / "notebooks" / "02_attention_explorer.ipynb").read_text(encoding="utf-8")
    dirty = _dirty(ROOT / "notebooks" / "02_attention_explorer.ipynb")
    (tmp_path / "x.ipynb").write_text(dirty, encoding="utf-8")
    assert nbs.output_problems(tmp_path / "x.ipynb")
    once = nbs.strip_text(dirty)
    (tmp_path / "x.ipynb").write_text(once, encoding="utf-8")
    assert nbs.output_problems(tmp_path / "x.ipynb") == []
    assert "widgets" not in json.loads(once)["metadata"] and '"execution"' not in once
    assert nbs.strip_text(once) == once  # idempotent
    assert once == clean  # stripping gives back the committed file, byte for byte
    assert nbs.strip_text(clean) == clean  # a clean notebook passes through untouched


def test_strip_command_in_place_and_as_a_filter(tmp_path: Path) -> None:
    dirty = _dirty(ROOT / "notebooks" / "02_attention_explorer.ipynb")
    f = tmp_path / "x.ipynb"
    f.write_text(dirty, encoding="utf-8")
    assert nbs.main(["strip", str(f)]) == 0 and nbs.output_problems(f) == []
    out = subprocess.run([sys.executable, "-m", "cfviz.notebooks", "strip"], input=dirty.encode(),
                         capture_output=True, check=True).stdout.decode()
    assert out == f.read_text(encoding="utf-8")
    assert nbs.main([]) == 2  # no subcommand: usage


def _make_filter_command() -> str:
    """The clean-filter command the Makefile's install recipe configures, with this interpreter."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"git config filter\.cfviz-strip\.clean '([^']+)'", text)
    assert m, "the Makefile does not set up the cfviz-strip git filter"
    return m.group(1).replace("$(abspath $(PY))", sys.executable)


def test_make_sets_up_the_filter_that_gitattributes_names(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    attributes = (ROOT / ".gitattributes").read_text(encoding="utf-8")
    assert re.search(r"^notebooks/\*\.ipynb\s+filter=cfviz-strip\s*$", attributes, re.M)
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    (repo / "notebooks" / "02.ipynb").write_text(_dirty(ROOT / "notebooks" / "02_attention_explorer.ipynb"))

    def run(*args: str) -> str:
        return subprocess.run([git, "-C", str(repo), *args], capture_output=True, check=True, text=True).stdout
    run("init", "-q")
    run("config", "filter.cfviz-strip.clean", _make_filter_command())
    run("add", ".gitattributes", "notebooks/02.ipynb")
    staged = run("show", ":notebooks/02.ipynb")
    (tmp_path / "staged.ipynb").write_text(staged)
    assert nbs.output_problems(tmp_path / "staged.ipynb") == []  # what a commit would carry
    assert nbs.output_problems(repo / "notebooks" / "02.ipynb")  # the working copy keeps its outputs
