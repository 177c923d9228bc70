"""Tiny offline denoisers of every family (cfviz.models.families), shared by the family tests."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_models():
    """Every tiny denoiser of cfviz.models.families, by name (seed 0)."""
    from cfviz.models.families import TINY_DENOISERS, tiny_denoiser

    return {name: tiny_denoiser(name, seed=0) for name in TINY_DENOISERS}


@pytest.fixture()
def hook_count():
    """Number of forward (pre-)hooks registered anywhere in a module."""
    def count(module: torch.nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    return count
