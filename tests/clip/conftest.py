"""Fixtures for the cfviz.clip tests: one shared tiny CLIP and seeded image batches."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_bundle():
    """One tiny CLIP (seed 0, random weights) shared by read-only tests."""
    from cfviz.models.clip import tiny_clip

    return tiny_clip(seed=0)


@pytest.fixture(scope="session")
def images():
    """Three CLIP-sized images (standard normal, like normalised pixels), seed 0."""
    import torch

    return torch.randn(3, 3, 240, 240, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def references():
    """Two reference images, seed 1."""
    import torch

    return torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1))
