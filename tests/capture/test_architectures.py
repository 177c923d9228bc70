"""The capture engine on full-size architectures (random weights): SD2-inpainting and SD 1.x UNets."""

import pytest
import torch

import cfviz


def _check(unet, in_channels, context_dim, hook_count):
    x = torch.randn(1, in_channels, 16, 24, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, context_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(x, 261, encoder_hidden_states=emb).sample
        with cfviz.capture(unet, tokens=[1, 2, 3], tokenizer=_tokenizer(), prompt="a photo of",
                           features=["up_blocks.1", "up_blocks.2", "up_blocks.3"]) as cap:
            out = unet(x, 261, encoder_hidden_states=emb).sample
    assert torch.equal(plain, out)
    assert len(cap.layers) == 16  # 6 down + 1 mid + 9 up cross-attention layers in SD 1.x/2.x
    res = {cap.cache.resolution(n) for n in cap.layers}
    assert res == {(16, 24), (8, 12), (4, 6), (2, 3)}
    assert cap.cache.resolution("up_blocks.3") == (16, 24)
    assert hook_count(unet) == 0
    return cap


def _tokenizer():
    from cfviz.models.tokenizer import clip_tokenizer

    return clip_tokenizer()


@pytest.mark.slow
def test_capture_on_full_size_sd2_inpainting_unet(hook_count):
    from cfviz.models.diffusion import sd2_inpaint_unet

    unet = sd2_inpaint_unet(seed=0)
    cap = _check(unet, 9, 1024, hook_count)
    heads = {unet.get_submodule(n).heads for n in cap.layers}
    assert heads == {5, 10, 20}  # SD2's per-block head counts (64-channel heads)


@pytest.mark.slow
def test_capture_on_sd1_text_to_image_unet(hook_count):
    from cfviz.models.diffusion import sd1_unet

    unet = sd1_unet(seed=0)
    cap = _check(unet, 4, 768, hook_count)
    assert {unet.get_submodule(n).heads for n in cap.layers} == {8}
