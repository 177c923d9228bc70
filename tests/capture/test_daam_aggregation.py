"""``aggregate(method="daam")`` is DAAM 0.2's global heat map (issue 19), on a case where it and
cfviz's default aggregation differ: a 384 px image on a 768 px model (DAAM drops the 12x12 maps,
not 8x8), layers of different head counts (DAAM weighs (layer, head) pairs), a mid block (DAAM
leaves it out) and two steps (DAAM sums them).

The reference below follows DAAM's own loop (daam/trace.py at v0.2.0): a running sum per
(factor, layer, head), each bicubic to sqrt(latent_hw) and clamped, then the mean of them all.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.daam import daam_factor, daam_layers
from cfviz.errors import CaptureError

#: name -> (side, heads): SD2's layout at 384 px (latent 48), heads as SD2's 5/10/20 pattern, smaller
LAYOUT = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2": (48, 2),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2": (24, 4),
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2": (12, 8),
    "mid_block.attentions.0.transformer_blocks.0.attn2": (6, 8),
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2": (12, 8),
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2": (24, 4),
    "up_blocks.3.attentions.0.transformer_blocks.0.attn2": (48, 2),
}
K = 3  # tokens


def _cache(heads: str = "all", floor: float = 0.0) -> CaptureCache:
    g = torch.Generator().manual_seed(0)
    attention = {}
    for name, (side, h) in LAYOUT.items():
        per = {}
        for step in (0, 1):
            # (B, H, K, h, w), positive like probabilities (rough: bicubic undershoots, and DAAM clamps)
            probs = floor + torch.rand(1, h, K, side, side, generator=g)
            per[step] = probs if heads == "all" else probs.mean(1)
        attention[name] = per
    steps = [StepInfo(s, 900.0 - 100 * s, (0,), 1, (48, 48)) for s in (0, 1)]
    return CaptureCache(layers=list(LAYOUT), blocks=[], tokens=None, heads=heads, attention=attention, steps=steps,
                        layer_heads={n: h for n, (_, h) in LAYOUT.items()})


def _daam_reference(cache: CaptureCache, model_size: int) -> torch.Tensor:
    latent_hw = 4096 if model_size in (512, 1024) else 9216
    heat: dict[tuple[int, int, int], torch.Tensor] = {}
    located = [n for n in cache.attention if n.startswith(("up_blocks", "down_blocks"))]  # no mid block
    for step in (0, 1):
        for layer_idx, name in enumerate(located):
            probs = cache.attention[name][step][0]  # (H, K, h, w), the conditional row
            factor = int(math.sqrt(latent_hw // (probs.shape[-1] * probs.shape[-2])))
            if factor != 8:
                for head_idx, m in enumerate(probs):
                    key = (factor, layer_idx, head_idx)
                    heat[key] = heat[key] + m if key in heat else m.clone()
    x = int(math.sqrt(latent_hw))
    merges = [F.interpolate(m.unsqueeze(1), size=(x, x), mode="bicubic").clamp_(min=0) for m in heat.values()]
    return torch.stack(merges, 0).mean(0)[:, 0]  # (K, x, x)


def test_daam_drops_by_factor_of_the_configured_size_not_by_resolution():
    cache = _cache()
    d2, mid, u1 = (n for n in LAYOUT if n.startswith(("mid", "down_blocks.2", "up_blocks.1")))
    assert daam_factor(12 * 12, 768) == 8 and daam_factor(8 * 8, 512) == 8
    assert set(daam_layers(cache, 768)) == set(LAYOUT) - {mid, d2, u1}  # 384 px on SD2-v: 12x12 dropped
    assert set(daam_layers(cache, 512)) == set(LAYOUT) - {mid}  # 384 px on a 512 px model: none dropped


@pytest.mark.parametrize("model_size", [768, 512])
def test_daam_aggregation_equals_daams_loop_and_differs_from_the_default(model_size):
    cache = _cache()
    got = cache.aggregate(method="daam", model_size=model_size)
    want = _daam_reference(cache, model_size)
    side = 96 if model_size == 768 else 64
    assert got.dims == ("batch", "token", "h", "w") and got.data.shape == (1, K, side, side)
    torch.testing.assert_close(got.data[0], want, rtol=1e-5, atol=1e-6)
    ours = cache.aggregate(size=side, mode="bicubic").data[0]  # mean over layers of head means, steps averaged
    assert (ours - want / 2).abs().max() > 1e-2  # the definitions differ here


def test_daam_aggregation_of_head_means_weighs_layers_by_their_heads():
    """``heads="mean"`` caches know each layer's head count: the (layer, head) weighting is DAAM's. (The
    clamp acts on head means then: the maps here never undershoot zero, so the two agree.)"""
    full, means = _cache("all", floor=1.0), _cache("mean", floor=1.0)
    got = means.aggregate(method="daam", model_size=768).data
    torch.testing.assert_close(got, full.aggregate(method="daam", model_size=768).data, rtol=1e-5, atol=1e-5)
    means.layer_heads = {}
    with pytest.raises(CaptureError, match="head count"):
        means.aggregate(method="daam", model_size=768)


def test_daam_aggregation_validates_its_arguments():
    cache = _cache()
    with pytest.raises(CaptureError, match="configured image size"):
        cache.aggregate(method="daam")
    with pytest.raises(CaptureError, match="as DAAM does"):
        cache.aggregate(method="daam", model_size=512, size=64)
    with pytest.raises(CaptureError, match="'mean' .* or 'daam'"):
        cache.aggregate(method="DAAM")


def test_capture_records_the_model_size_and_heads(pipe, unet_inputs):
    import cfviz

    x, emb = unet_inputs
    with torch.no_grad(), cfviz.capture(pipe, heads="all", dtype=torch.float32, rows="all") as cap:
        pipe.unet(x, 400, encoder_hidden_states=emb)
    cache = cap.cache
    assert cache.model_size == pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert cache.layer_heads == cache.head_counts()
    got = cache.aggregate(method="daam")
    assert got.data.shape[-1] == (64 if cache.model_size in (512, 1024) else 96)
