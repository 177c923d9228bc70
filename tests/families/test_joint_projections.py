"""Joint attention from the layer's own projections (ProjectionTap) equals the recomputation."""

from __future__ import annotations

import pytest
import torch

from cfviz.capture.joint import JointProjections, ProjectionTap, text_attention


class _Probe:
    """Stands in for a joint layer's processor: runs the original under a ProjectionTap and keeps,
    per call, the layer, its inputs and the tap (signature as FLUX's, which SD3's accepts)."""

    def __init__(self, inner, kind, calls):
        self.inner, self.kind, self.calls = inner, kind, calls

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        kw = {} if image_rotary_emb is None else {"image_rotary_emb": image_rotary_emb}
        with ProjectionTap(attn, self.kind) as tap:
            out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kw)
        self.calls.append((attn, self.kind, hidden_states, encoder_hidden_states, image_rotary_emb, tap))
        return out


def _joint_calls(model, name, text_length=8):
    """Run ``model`` once with every text-attending layer probed; its calls and the text length."""
    from cfviz.capture.session import locate_text_attention
    from cfviz.models.families import denoiser_inputs

    calls: list = []
    layers = locate_text_attention(model)
    originals = {n: m.get_processor() for n, (m, _) in layers.items()}
    try:
        for n, (m, kind) in layers.items():
            m.set_processor(_Probe(originals[n], kind, calls))
        with torch.no_grad():
            model(**denoiser_inputs(name, model, batch=2, size=8, text_length=text_length))
    finally:
        for n, (m, _) in layers.items():
            m.set_processor(originals[n])
    assert len(calls) == len(layers)
    return calls, text_length


@pytest.mark.parametrize("name", ["sd3", "sd35", "flux"])
def test_borrowed_projections_give_the_recomputed_attention(tiny_models, name):
    calls, text_length = _joint_calls(tiny_models[name], name)
    kinds = set()
    for attn, kind, hs, ehs, rotary, tap in calls:
        kinds.add(kind)
        p = tap.projections(hs, ehs)
        # diffusers' own processors project Q, K (and the text's K) once each: all borrowed
        assert p.query is not None and p.key is not None
        assert (p.text_key is None) == (kind == "flux_single")
        with torch.no_grad():
            for rows in (None, [1], [1, 0]):
                for softmax in ("joint", "text"):
                    args = dict(text_length=text_length, image_rotary_emb=rotary, rows=rows, softmax=softmax)
                    want = text_attention(attn, kind, hs, ehs, **args)
                    got = text_attention(attn, kind, hs, ehs, projections=p, **args)
                    assert got.shape == want.shape
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert kinds == ({"flux_joint", "flux_single"} if name == "flux" else {"sd3_joint"})


def test_projections_that_do_not_fit_are_recomputed(tiny_models):
    """A projection seen twice, or of another length, is not borrowed (e.g. fused QKV, IP-Adapter)."""
    calls, text_length = _joint_calls(tiny_models["flux"], "flux")
    attn, kind, hs, ehs, rotary, _ = calls[0]
    tap = ProjectionTap(attn, kind)
    with tap:
        attn.to_q(hs)
        attn.to_q(hs)  # twice: which one the processor used is unknown
        attn.to_k(hs[:, :3])  # part of the sequence
        attn.add_k_proj(ehs)
    assert tap.projections(hs, ehs) == JointProjections(None, None, tap.projections(hs, ehs).text_key)
    assert tap.projections(hs, ehs).text_key is not None
    # the hooks are gone after the block
    assert not attn.to_q._forward_hooks and not attn.to_k._forward_hooks and not attn.add_k_proj._forward_hooks
    with torch.no_grad():
        want = text_attention(attn, kind, hs, ehs, image_rotary_emb=rotary)
        got = text_attention(attn, kind, hs, ehs, image_rotary_emb=rotary, projections=tap.projections(hs, ehs))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_tap_removes_its_hooks_after_an_exception(tiny_models):
    attn = tiny_models["sd3"].transformer_blocks[0].attn
    with pytest.raises(RuntimeError, match="boom"), ProjectionTap(attn, "sd3_joint"):
        raise RuntimeError("boom")
    assert not attn.to_q._forward_hooks and not attn.to_k._forward_hooks and not attn.add_k_proj._forward_hooks


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_capture_borrows_the_joint_projections(tiny_models, name):
    """Under cfviz.capture each joint layer projects its queries once per call (the recorder borrows them)."""
    import cfviz
    from cfviz.capture.session import locate_text_attention
    from cfviz.models.families import denoiser_inputs

    model = tiny_models[name]
    layers = locate_text_attention(model)
    calls = {n: 0 for n in layers}
    hooks = [m.to_q.register_forward_hook(lambda *_, _n=n: calls.__setitem__(_n, calls[_n] + 1))
             for n, (m, _) in layers.items()]
    try:
        kw = denoiser_inputs(name, model, batch=1, size=8, text_length=8)
        with torch.no_grad(), cfviz.capture(model, rows="all"):
            model(**kw)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {n: 1 for n in layers}
