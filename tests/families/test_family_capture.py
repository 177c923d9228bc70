"""One capture API on every denoiser family (issue 14): tiny offline SD1, SDXL (+inpainting),
SD3, FLUX (+Fill) and PixArt denoisers.

For each family: the recorded maps equal the text block of the layer's attention recomputed from
its own inputs (and that attention reproduces the layer's output), outputs are bit-identical with
and without capture, and processors and hooks are restored after an exception.
"""

import functools

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

import cfviz.capture
from cfviz.capture.families import detect_family
from cfviz.capture.processors import RecordingProcessor
from cfviz.errors import CaptureError
from cfviz.models.families import denoiser_inputs

#: tiny denoiser -> (its name, text tokens of a call: SD3 = CLIP 77 + T5 16)
FAMILY_CASES = {"sd1": ("sd1", 77), "sdxl": ("sdxl", 77), "sdxl-inpaint": ("sdxl-inpaint", 77),
                "sd3": ("sd3", 77 + 16), "sd35": ("sd35", 77 + 16), "flux": ("flux", 16),
                "flux-fill": ("flux-fill", 16), "pixart": ("pixart", 16)}
CASES = list(FAMILY_CASES)


def _inputs(case, model, **kw):
    name, text_length = FAMILY_CASES[case]
    return denoiser_inputs(name, model, text_length=text_length, size=8, **kw)  # 8x8 latents: fast


def _processors(model):
    return {n: m.get_processor() for n, m in model.named_modules() if hasattr(m, "get_processor")}


@pytest.mark.parametrize("case,family,inpainting,n_layers", [
    ("sd1", "sd", False, 4), ("sdxl", "sdxl", False, 8), ("sdxl-inpaint", "sdxl", True, 8),
    ("sd3", "sd3", False, 2), ("sd35", "sd3", False, 2), ("flux", "flux", False, 3), ("flux-fill", "flux", True, 3),
    ("pixart", "pixart", False, 2)])
def test_family_detected_and_text_layers_located(tiny_models, case, family, inpainting, n_layers):
    model = tiny_models[case]
    fam = detect_family(model)
    assert (fam.name, fam.inpainting) == (family, inpainting)
    kinds = [k for _, k in fam.text_layers(model).values()]
    assert len(kinds) == n_layers
    expected = {"sd3": {"sd3_joint"}, "flux": {"flux_joint", "flux_single"}}.get(family, {"cross"})
    assert set(kinds) == expected


def _split_heads(x, heads):
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)


def _direct(kind, attn, kw, text_length):
    """The layer's full attention probabilities and values, recomputed here from its own inputs.

    Returns (probs (B, H, Nq, Nk), values (B, H, Nk, d), image query rows, text key columns).
    """
    hs = kw["hidden_states"]
    ehs = kw.get("encoder_hidden_states")
    H = attn.heads
    if kind == "cross":
        if hs.ndim == 4:
            hs = hs.flatten(2).transpose(1, 2)
        q, k, v = (_split_heads(f(x), H) for f, x in ((attn.to_q, hs), (attn.to_k, ehs), (attn.to_v, ehs)))
        p = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        return p, v, slice(None), slice(None)
    q, k, v = (_split_heads(f(hs), H) for f in (attn.to_q, attn.to_k, attn.to_v))
    q, k = attn.norm_q(q) if attn.norm_q is not None else q, attn.norm_k(k) if attn.norm_k is not None else k
    if kind == "sd3_joint":
        eq, ek, ev = (_split_heads(f(ehs), H) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        eq, ek = attn.norm_added_q(eq) if attn.norm_added_q else eq, attn.norm_added_k(ek) if attn.norm_added_k else ek
        q, k, v = torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        n = hs.shape[1]
        image, text = slice(0, n), slice(n, None)
    else:
        if kind == "flux_joint":
            eq, ek, ev = (_split_heads(f(ehs), H) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            q = torch.cat([attn.norm_added_q(eq), q], 2)
            k = torch.cat([attn.norm_added_k(ek), k], 2)
            v = torch.cat([ev, v], 2)
            text_length = ehs.shape[1]
        rope = kw["image_rotary_emb"]
        q, k = apply_rotary_emb(q, rope, sequence_dim=2), apply_rotary_emb(k, rope, sequence_dim=2)
        image, text = slice(text_length, None), slice(0, text_length)
    p = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return p, v, image, text


def _layer_output_from(kind, attn, probs, v, image):
    """The layer's image output from the recomputed attention, through its own output projection."""
    mixed = (probs @ v).transpose(1, 2).flatten(2)[:, image]
    if kind == "flux_single":  # pre_only: no output projection in the attention layer
        return mixed
    return attn.to_out[0](mixed)


@pytest.mark.parametrize("case", CASES)
def test_recorded_maps_equal_attention_recomputed_from_the_layer_inputs(tiny_models, case):
    model = tiny_models[case]
    kw = _inputs(case, model)
    located = detect_family(model).text_layers(model)
    seen = {}

    def grab(name):
        def hook(module, args, kwargs, out):
            names = ["hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb"]
            got = dict(zip(names, args))
            got.update(kwargs)
            seen[name] = (got, out)
        return hook

    handles = [m.register_forward_hook(grab(n), with_kwargs=True) for n, (m, _) in located.items()]
    try:
        with torch.no_grad(), cfviz.capture(model, heads="all", dtype=torch.float32) as cap:
            model(**kw)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(located) == set(cap.layers)
    text_length = FAMILY_CASES[case][1]
    for name, (attn, kind) in located.items():
        inputs, out = seen[name]
        with torch.no_grad():
            probs, v, image, text = _direct(kind, attn, inputs, text_length)
            # the recomputation is the layer's attention: it reproduces the layer's image output
            if kind != "cross":
                layer_out = out[0] if isinstance(out, tuple) else out[:, image]
                torch.testing.assert_close(_layer_output_from(kind, attn, probs, v, image), layer_out,
                                           rtol=1e-4, atol=1e-5)
        expected = probs[:, :, image, text]  # (B, H, N_img, L_text): image queries x text keys
        rec = cap.cache.attention[name][0]  # (B, H, L_text, h, w)
        assert rec.shape[:3] == (expected.shape[0], attn.heads, text_length)
        assert rec.shape[-2] * rec.shape[-1] == expected.shape[2]
        torch.testing.assert_close(rec.flatten(3).transpose(2, 3), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["sd3", "sd35", "flux"])
def test_joint_softmax_text_renormalises_over_text_keys(tiny_models, case):
    model = tiny_models[case]
    kw = _inputs(case, model)
    with torch.no_grad():
        with cfviz.capture(model, dtype=torch.float32) as joint:
            model(**kw)
        with cfviz.capture(model, dtype=torch.float32, joint_softmax="text") as text:
            model(**kw)
    assert joint.cache.settings["joint_softmax"] == "joint"
    for name in joint.layers:
        j, t = joint.cache.attention[name][0], text.cache.attention[name][0]
        share = j.sum(1)  # the share of each pixel's attention that goes to the text: < 1
        assert bool((share < 1).all()) and bool((share > 0).all())
        torch.testing.assert_close(t.sum(1), torch.ones_like(share), rtol=1e-5, atol=1e-5)
    with pytest.raises(CaptureError, match="joint_softmax"):
        cfviz.capture(model, joint_softmax="image")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kwargs", [{}, {"heads": "all"}, {"tokens": [0, 3]}])
def test_outputs_bit_identical_with_and_without_capture(tiny_models, case, kwargs):
    model = tiny_models[case]
    kw = _inputs(case, model)
    if "tokens" in kwargs:
        kwargs = {**kwargs, "tokenizer": _tokenizers(case), "prompt": "a photo of damage"}
    with torch.no_grad():
        plain = model(**kw).sample
        with cfviz.capture(model, **kwargs) as cap:
            captured = model(**kw).sample
    assert torch.equal(plain, captured)
    assert len(cap.cache.steps) == 1 and cap.cache.attention


@functools.lru_cache(maxsize=None)
def _tokenizers(case):
    from cfviz.models.families import tiny_t5_tokenizer
    from cfviz.models.tokenizer import clip_tokenizer

    if case.startswith("sd3"):
        return {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}
    if case.startswith(("flux", "pixart")):
        return tiny_t5_tokenizer()
    return clip_tokenizer()


@pytest.mark.parametrize("case", CASES)
def test_restored_after_an_exception(tiny_models, case, hook_count):
    model = tiny_models[case]
    kw = _inputs(case, model)
    before = _processors(model)
    hooks = hook_count(model)
    with pytest.raises(ZeroDivisionError):
        with torch.no_grad(), cfviz.capture(model, heads="all"):
            assert any(isinstance(p, RecordingProcessor) for p in _processors(model).values())
            model(**kw)
            1 / 0
    assert all(_processors(model)[n] is p for n, p in before.items())
    assert hook_count(model) == hooks
    # an error inside a layer (text of the wrong width) restores everything too
    bad = dict(kw, encoder_hidden_states=kw["encoder_hidden_states"][..., :3])
    with pytest.raises(RuntimeError):
        with torch.no_grad(), cfviz.capture(model):
            model(**bad)
    assert all(_processors(model)[n] is p for n, p in before.items())
    assert hook_count(model) == hooks


def test_timestep_and_grid_are_read_from_each_family_call(tiny_models):
    for case in CASES:
        model = tiny_models[case]
        kw = _inputs(case, model)
        with torch.no_grad(), cfviz.capture(model) as cap:
            model(**kw)
        step = cap.cache.steps[0]
        assert step.batch_size == 2 and step.rows == (0, 1)
        expected_t = 400.0  # FLUX gets sigma 0.4: labelled sigma * 1000 like the other families
        assert step.timestep == pytest.approx(expected_t)
        assert step.sample_size == ((4, 4) if case.startswith("flux") else (8, 8))
