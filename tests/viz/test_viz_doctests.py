"""The docstring examples of cfviz.viz run (offline, fast)."""

from __future__ import annotations

import doctest
import importlib
import tempfile

import pytest

MODULES = ["cfviz.viz", "cfviz.viz.style", "cfviz.viz._common", "cfviz.viz.overlays", "cfviz.viz.grids",
           "cfviz.viz.explore_data", "cfviz.viz.failures", "cfviz.capture.naming",
           "cfviz.viz.clipviz", "cfviz.viz.ablation", "cfviz.viz.gallery",
           "cfviz.viz.score_hist", "cfviz.viz.explorer_export", "cfviz.viz.explorer_tabs", "cfviz.viz.explorer_widgets"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save figures write here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and their mkdtemp() folders too
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
