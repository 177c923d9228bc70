"""The recorder borrows each cross-attention layer's key projection as it borrows its query.

Under capture every ``attn2.to_k`` runs once per call (the recorder adds no second projection of
the text), the maps stay those of an independent recomputation, and a processor that projects
the key some other way (or only part of the text) still gets exact maps: the recorder then
projects it itself.
"""

from __future__ import annotations

import pytest
import torch

import cfviz
from cfviz.capture.session import locate_cross_attention


def _calls(layers, projection):
    calls = {name: 0 for name in layers}

    def count(name):
        def hook(module, args, output):
            calls[name] += 1
        return hook
    handles = [getattr(attn, projection).register_forward_hook(count(n)) for n, attn in layers.items()]
    return calls, handles


def test_recorder_borrows_the_layers_key_instead_of_projecting_again(pipe, unet_inputs, direct_probabilities):
    unet = pipe.unet
    x, emb = unet_inputs
    layers = locate_cross_attention(unet)
    calls, handles = _calls(layers, "to_k")
    inputs = {}
    handles += [attn.register_forward_pre_hook(
        lambda m, a, k, _n=n: inputs.__setitem__(_n, (a[0] if a else k["hidden_states"], k["encoder_hidden_states"])),
        with_kwargs=True) for n, attn in layers.items()]
    try:
        with torch.no_grad(), cfviz.capture(unet, dtype=torch.float32) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}  # the processor's own projection only
    assert all(len(attn.to_k._forward_hooks) == 0 for attn in layers.values())  # nothing left behind
    for name, attn in layers.items():
        hs, ehs = inputs[name]
        if hs.ndim == 4:
            b, c, h, w = hs.shape
            hs = hs.view(b, c, h * w).transpose(1, 2)
        with torch.no_grad():
            want = direct_probabilities(attn, hs, ehs).mean(1).transpose(1, 2)
        got = cap.cache.attention[name][0]
        torch.testing.assert_close(got.flatten(2), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["F.linear", "text part only"])
def test_recorder_projects_the_key_when_the_processor_does_not(pipe, unet_inputs, how,
                                                                capture_before_and_after_swap):
    """A processor that never calls ``to_k`` on the whole text still gets exact maps."""
    import torch.nn.functional as F

    class OtherKey:
        """Cross-attention whose key projection the recorder cannot borrow."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
            b = hidden_states.shape[0]
            q = attn.to_q(hidden_states)
            if how == "F.linear":
                k = F.linear(encoder_hidden_states, attn.to_k.weight, attn.to_k.bias)
            else:  # as IP-Adapter does: to_k on a slice of the tokens (here two halves, concatenated)
                half = encoder_hidden_states.shape[1] // 2
                k = torch.cat([attn.to_k(encoder_hidden_states[:, :half]),
                               attn.to_k(encoder_hidden_states[:, half:])], dim=1)
            v = attn.to_v(encoder_hidden_states)
            d = k.shape[-1] // attn.heads
            q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, attn.heads * d)
            return attn.to_out[1](attn.to_out[0](out))

    ref, cap = capture_before_and_after_swap(pipe.unet, *unet_inputs, OtherKey())
    assert set(cap.cache.attention) == set(ref.cache.attention)
    for name, per in ref.cache.attention.items():
        torch.testing.assert_close(cap.cache.attention[name][0], per[0], rtol=1e-5, atol=1e-6)


def test_borrowed_key_gives_the_recomputed_probabilities(pipe):
    """attention_probabilities with a borrowed key equals its own projection, also for a row subset."""
    from cfviz.capture.processors import Borrowed, attention_probabilities

    attn = next(iter(locate_cross_attention(pipe.unet).values()))
    g = torch.Generator().manual_seed(3)
    hs = torch.randn(3, 40, attn.to_q.in_features, generator=g)
    ehs = torch.randn(3, 77, attn.to_k.in_features, generator=g)
    with torch.no_grad():
        plain, _ = attention_probabilities(attn, hs, ehs, rows=[2, 0])
        borrowed, _ = attention_probabilities(attn, hs, ehs, rows=[2, 0],
                                              query=Borrowed(attn.to_q(hs), attn.to_k(ehs)))
        key_only, _ = attention_probabilities(attn, hs, ehs, rows=[2, 0], query=Borrowed(None, attn.to_k(ehs)))
    torch.testing.assert_close(borrowed, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(key_only, plain, rtol=1e-5, atol=1e-6)
