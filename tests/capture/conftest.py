import pytest
import torch


@pytest.fixture(scope="session")
def pipe():
    from cfviz.models.diffusion import tiny_inpaint_pipeline

    return tiny_inpaint_pipeline(seed=0)


@pytest.fixture()
def unet_inputs(pipe):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 16, 24, generator=g)
    emb = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    return x, emb


@pytest.fixture()
def hook_count():
    """Number of forward (pre-)hooks registered anywhere in a module."""
    def count(module: torch.nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    return count
