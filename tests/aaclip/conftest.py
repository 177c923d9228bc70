"""Fixtures for the AA-CLIP tests: a small textures data set (64 px) and the tiny CLIP."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def textures(tmp_path_factory):
    """Textures test split: 2 categories x (2 good + 4 defects), 64 px, generated in a temp folder."""
    from cfviz.data import open_dataset

    root = tmp_path_factory.mktemp("textures")
    return open_dataset("textures", root, image_size=64, n_train=1, n_test_good=2, n_per_defect=1,
                        categories_generated=("brick", "grass"))


@pytest.fixture
def bundle():
    """A fresh tiny CLIP (seed 0): training must not leak between tests through a shared model."""
    from cfviz.models import tiny_clip

    return tiny_clip(seed=0)
