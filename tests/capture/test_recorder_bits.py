"""Captured maps are bit-identical to the recorder's original computation path (issue 24).

The recorder's speed-ups (borrowed projections, in-place scale/mask/softmax) must not move a bit:
the maps are compared with ``torch.equal`` to a recomputation that follows the original
(cbe98a2) path step by step from each layer's own inputs: ``(q @ k^T) * scale [+ mask]``,
``softmax``, head mean (or every head), the token averaging matrix, the storage dtype.
"""

from __future__ import annotations

import pytest
import torch

import cfviz
from cfviz.capture.session import locate_cross_attention


def _reference_maps(attn, hs, ehs, rows, heads, w, dtype, hw, mask=None):
    """The original recorder path (cbe98a2), written out: out-of-place scale, mask and softmax."""
    if hs.ndim == 4:
        b, c, h, wd = hs.shape
        hs = hs.view(b, c, h * wd).transpose(1, 2)
    q, k = attn.to_q(hs)[rows], attn.to_k(ehs)[rows]
    n = q.shape[0]
    d = k.shape[-1] // attn.heads
    q = q.view(n, -1, attn.heads, d).transpose(1, 2)
    k = k.view(n, -1, attn.heads, d).transpose(1, 2)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * float(attn.scale)
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(dim=-1)
    if heads == "mean":
        maps = torch.bmm(probs.mean(dim=1), w.expand(n, -1, -1))
        maps = maps.transpose(1, 2).reshape(n, -1, *hw)
    else:
        maps = torch.matmul(probs, w.expand(n, -1, -1)[:, None])
        maps = maps.transpose(2, 3).reshape(n, attn.heads, -1, *hw)
    return maps.to(dtype)


@pytest.mark.parametrize("heads, dtype, rows", [("mean", torch.float16, "all"), ("mean", torch.float32, [1]),
                                                ("all", torch.float32, "all"), ("all", torch.float16, [1, 0])])
def test_captured_maps_equal_the_original_path_bit_for_bit(pipe, unet_inputs, heads, dtype, rows):
    unet = pipe.unet
    x, emb = unet_inputs
    layers = locate_cross_attention(unet)
    inputs = {}
    handles = [attn.register_forward_pre_hook(
        lambda m, a, k, _n=n: inputs.__setitem__(_n, (a[0] if a else k["hidden_states"], k["encoder_hidden_states"])),
        with_kwargs=True) for n, attn in layers.items()]
    try:
        with torch.no_grad(), cfviz.capture(unet, tokens=[1, 2, 5], heads=heads, dtype=dtype, rows=rows,
                                            tokenizer=pipe.tokenizer) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    kept = [0, 1] if rows == "all" else rows
    w = cap.cache.tokens.weights("cpu", length=77)
    for name, attn in layers.items():
        with torch.no_grad():
            got = cap.cache.attention[name][0]
            want = _reference_maps(attn, *inputs[name], kept, heads, w, dtype, tuple(got.shape[-2:]))
        assert torch.equal(got, want), name


def test_masked_probabilities_equal_the_original_path_bit_for_bit(pipe):
    """The attention-mask branch (``scores + mask``, now in place) keeps its bits too."""
    from cfviz.capture.processors import attention_probabilities

    attn = next(iter(locate_cross_attention(pipe.unet).values()))
    g = torch.Generator().manual_seed(5)
    hs = torch.randn(2, 24, attn.to_q.in_features, generator=g)
    ehs = torch.randn(2, 77, attn.to_k.in_features, generator=g)
    mask = torch.zeros(2, 77)
    mask[:, 40:] = -10000.0
    with torch.no_grad():
        got, _ = attention_probabilities(attn, hs, ehs, attention_mask=mask)
        m = attn.prepare_attention_mask(mask, 77, 2).view(2, attn.heads, -1, 77)
        q, k = attn.to_q(hs), attn.to_k(ehs)
        d = k.shape[-1] // attn.heads
        q = q.view(2, -1, attn.heads, d).transpose(1, 2)
        k = k.view(2, -1, attn.heads, d).transpose(1, 2)
        want = (torch.matmul(q.float(), k.float().transpose(-1, -2)) * float(attn.scale) + m.float()).softmax(-1)
    assert torch.equal(got, want)
