"""Fixtures for the cfviz.models tests: a private cfviz cache and shared tiny models."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cfviz_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the derived tokenizer files of these tests out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("cfviz_cache")))
        yield


@pytest.fixture(scope="session")
def tiny_pipe():
    """One tiny inpainting pipeline (seed 0) shared by read-only tests."""
    from cfviz.models import tiny_inpaint_pipeline

    return tiny_inpaint_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_clip0():
    """One tiny CLIP (seed 0) shared by read-only tests."""
    from cfviz.models import tiny_clip

    return tiny_clip(seed=0)
