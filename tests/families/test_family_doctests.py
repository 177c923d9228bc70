"""The docstring examples of the family modules run (offline, tiny models)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cfviz.capture.families", "cfviz.models.families", "cfviz.diffusion.families"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
