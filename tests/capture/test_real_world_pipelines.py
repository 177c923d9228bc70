"""Capture on pipelines as people run them (issue 19): IP-Adapter, FLUX attention masks, subclassed
or compiled denoisers, long T5 prompts, per-layer head counts.

Each test here failed on cbe98a2.
"""

from __future__ import annotations

import pytest
import torch

import cfviz
from cfviz.errors import CaptureError


def _diffusers_version() -> tuple[int, ...]:
    import diffusers

    return tuple(int(p) for p in diffusers.__version__.split(".")[:2] if p.isdigit())


# the tiny FLUX (cfviz.models.families) builds on diffusers >= 0.31; `make test-oldest` runs diffusers 0.30,
# whose FluxTransformer2DModel ignores the config's out_channels (so the tiny model cannot run there)
needs_tiny_flux = pytest.mark.skipif(_diffusers_version() < (0, 31),
                                     reason="the tiny FLUX model needs diffusers >= 0.31 (out_channels)")


# ---------------------------------------------------------------------------- IP-Adapter
def _ip_adapter_unet():
    """The tiny SD2 UNet with IP-Adapter processors on every attn2, wired as diffusers'
    ``load_ip_adapter`` does: ``encoder_hid_proj`` turns ``image_embeds`` into the image tokens and
    the UNet passes ``(text, [image tokens])`` to each ``attn2``."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    from cfviz.models import tiny_inpaint_pipeline

    unet = tiny_inpaint_pipeline(seed=0).unet
    cross = unet.config.cross_attention_dim
    torch.manual_seed(3)
    procs = {}
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            procs[name] = IPAdapterAttnProcessor2_0(attn.to_q.out_features, cross, num_tokens=(4,), scale=1.0)
        else:
            procs[name] = proc
    unet.set_attn_processor(procs)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([ImageProjection(16, cross, num_image_text_embeds=4)])
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    return unet.eval()


def test_ip_adapter_tuple_input_records_the_text_part_and_keeps_the_output(unet_inputs, direct_probabilities):
    unet = _ip_adapter_unet()
    x, emb = unet_inputs
    kw = {"encoder_hidden_states": emb, "added_cond_kwargs": {"image_embeds": [torch.randn(2, 1, 16)]}}
    inputs = {}
    layers = cfviz.capture.locate_cross_attention(unet)
    handles = [attn.register_forward_pre_hook(
        lambda m, a, k, _n=n: inputs.__setitem__(_n, (a[0] if a else k["hidden_states"], k["encoder_hidden_states"])),
        with_kwargs=True) for n, attn in layers.items()]
    try:
        with torch.no_grad():
            want_out = unet(x, 400, **kw).sample
            with cfviz.capture(unet, dtype=torch.float32) as cap:
                got_out = unet(x, 400, **kw).sample
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(got_out, want_out)  # the layer keeps working, unchanged
    assert all(isinstance(inputs[n][1], tuple) for n in layers)  # diffusers really passed the tuple
    for name, attn in layers.items():
        hs, (text, _images) = inputs[name]
        if hs.ndim == 4:
            b, c, h, w = hs.shape
            hs = hs.view(b, c, h * w).transpose(1, 2)
        with torch.no_grad():
            want = direct_probabilities(attn, hs, text).mean(1).transpose(1, 2)
        torch.testing.assert_close(cap.cache.attention[name][0].flatten(2), want, rtol=1e-5, atol=1e-6)
        assert cap.cache.attention[name][0].shape[1] == 77  # the text's columns, not the image tokens'


def test_ip_adapter_older_concatenated_input_records_the_text_part(unet_inputs):
    """diffusers' deprecated IP-Adapter input, image tokens appended to the text: the processor splits
    them off (``num_tokens``), and so does the recorder: the maps are those of the tuple input."""
    unet = _ip_adapter_unet()
    x, emb = unet_inputs
    images = torch.randn(2, 4, unet.config.cross_attention_dim)
    layers = cfviz.capture.locate_cross_attention(unet)
    unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = None, None  # pass the tokens by hand

    def run(ehs):
        handles = [attn.register_forward_pre_hook(
            lambda m, a, k: (a, {**k, "encoder_hidden_states": ehs}), with_kwargs=True) for attn in layers.values()]
        try:
            with torch.no_grad(), cfviz.capture(unet, dtype=torch.float32) as cap:
                out = unet(x, 400, encoder_hidden_states=emb).sample
        finally:
            for h in handles:
                h.remove()
        return out, cap.cache

    want_out, want = run((emb, [images]))
    with pytest.warns(FutureWarning):
        got_out, got = run(torch.cat([emb, images], dim=1))
    assert torch.equal(got_out, want_out)
    for name in layers:
        assert torch.equal(got.attention[name][0], want.attention[name][0]), name


# ---------------------------------------------------------------------------- FLUX attention mask
@pytest.mark.parametrize("as_bool", [True, False])
@needs_tiny_flux
def test_flux_attention_mask_is_applied_to_the_recorded_probabilities(as_bool):
    """``joint_attention_kwargs={"attention_mask": m}`` reaches every FLUX attention layer's SDPA;
    masked text columns get no attention there, so none in the maps either (joint softmax: the
    layer's own probabilities)."""
    from cfviz.models.families import denoiser_inputs, tiny_denoiser

    flux = tiny_denoiser("flux")
    kw = denoiser_inputs("flux", flux, text_length=8)
    n_txt, n_img = 8, kw["hidden_states"].shape[1]
    keep = torch.ones(2, 1, 1, n_txt + n_img, dtype=torch.bool)
    keep[:, ..., 5:n_txt] = False  # the padding of a 5-token prompt
    mask = keep if as_bool else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    with torch.no_grad():
        with cfviz.capture(flux, dtype=torch.float32) as plain:
            flux(**kw)
        with cfviz.capture(flux, dtype=torch.float32) as cap:
            flux(**kw, joint_attention_kwargs={"attention_mask": mask})
    assert {k for _, k in cfviz.capture.session.locate_text_attention(flux).values()} == {"flux_joint", "flux_single"}
    for name, per in cap.cache.attention.items():
        maps = per[0]  # (batch, text tokens, h, w)
        assert maps.shape[1] == n_txt
        assert torch.all(maps[:, 5:] == 0), name  # masked: the layer gave them nothing
        assert torch.all(maps[:, :5] > 0), name
        assert not torch.allclose(maps[:, :5], plain.cache.attention[name][0][:, :5]), name


# ---------------------------------------------------------------------------- subclassed / compiled denoisers
@needs_tiny_flux
def test_subclass_of_a_diffusers_denoiser_is_its_family():
    from diffusers import FluxTransformer2DModel

    from cfviz.capture.families import detect_family
    from cfviz.models.families import denoiser_inputs, tiny_denoiser

    class MyFlux(FluxTransformer2DModel):
        """A user's subclass (e.g. one that adds a method): still FLUX."""

    flux = tiny_denoiser("flux")
    mine = MyFlux.from_config(flux.config).eval()
    mine.load_state_dict(flux.state_dict())
    assert detect_family(mine).name == "flux"
    kw = denoiser_inputs("flux", flux, text_length=8)
    with torch.no_grad():
        with cfviz.capture(flux, dtype=torch.float32) as ref:
            flux(**kw)
        with cfviz.capture(mine, dtype=torch.float32) as cap:
            mine(**kw)
    assert list(cap.cache.attention) == list(ref.cache.attention)
    for name in ref.cache.attention:
        assert torch.equal(cap.cache.attention[name][0], ref.cache.attention[name][0])


@needs_tiny_flux
def test_compiled_denoiser_is_captured_as_the_original():
    """``torch.compile(pipe.transformer)``: same family, same layer names (no ``_orig_mod.``), same
    maps, every call a step (the eager backend keeps the test fast; the wrapper is the same)."""
    from cfviz.models.families import denoiser_inputs, tiny_denoiser

    flux = tiny_denoiser("flux")
    kw = denoiser_inputs("flux", flux, text_length=8)
    compiled = torch.compile(flux, backend="eager")
    with torch.no_grad():
        with cfviz.capture(flux, dtype=torch.float32) as ref:
            flux(**kw)
            flux(**kw)
        with cfviz.capture(compiled, dtype=torch.float32) as cap:
            compiled(**kw)
            compiled(**kw)
    assert cap.cache.settings.get("family") == "flux"
    assert list(cap.cache.attention) == list(ref.cache.attention)
    assert len(cap.cache.steps) == 2
    for name in ref.cache.attention:
        for step in (0, 1):
            torch.testing.assert_close(cap.cache.attention[name][step], ref.cache.attention[name][step])
    assert not any(type(p).__name__.startswith("Recording") for p in flux.attn_processors.values())


# ---------------------------------------------------------------------------- T5 past max_sequence_length
def test_word_past_the_t5_cut_falls_back_to_clip_or_is_refused_naming_the_limit():
    """SD3 with ``max_sequence_length=4``: the layer attends to 77 CLIP + 4 T5 tokens. A word whose T5
    occurrence lies past the cut keeps its CLIP occurrence; a T5-only word is refused naming the limit."""
    from cfviz.models.families import denoiser_inputs, tiny_denoiser, tiny_t5_tokenizer
    from cfviz.models.tokenizer import clip_tokenizer

    model = tiny_denoiser("sd3")
    prompt = "a photo of a bottle with damage"  # T5: damage at position 6 (past 4); CLIP: 7
    toks = {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}
    kw = denoiser_inputs("sd3", model, text_length=77 + 4)
    with torch.no_grad():
        with cfviz.capture(model, dtype=torch.float32) as every:
            model(**kw)
        with cfviz.capture(model, dtype=torch.float32, tokens=["damage", "photo"], prompt=prompt,
                           tokenizer=toks) as cap:
            model(**kw)
    assert cap.cache.tokens.columns[0][0] == (7, 77 + 6)
    for name in every.layers:
        full = every.cache.attention[name][0]
        torch.testing.assert_close(cap.cache.attention[name][0][:, 0], full[:, 7])  # CLIP's damage only
        torch.testing.assert_close(cap.cache.attention[name][0][:, 1], full[:, [2, 77 + 1]].mean(1))
    with pytest.raises(CaptureError, match=r"'t5:damage' lies at text position\(s\) \[83\].*past the 81 text "
                                           r"tokens.*max_sequence_length"):
        with torch.no_grad(), cfviz.capture(model, tokens=["t5:damage"], prompt=prompt, tokenizer=toks):
            model(**kw)


# ---------------------------------------------------------------------------- heads="all", mixed head counts
def test_heads_all_with_different_head_counts_per_layer(pipe, unet_inputs):
    """The tiny SD2 UNet's layers have different head counts (as SD2's 5/10/20): stacking their heads
    is refused in one sentence; averaging over heads works per layer; blocks_average works."""
    x, emb = unet_inputs
    kw = {"dtype": torch.float32, "tokens": [1, 2], "tokenizer": pipe.tokenizer}
    with torch.no_grad():
        with cfviz.capture(pipe.unet, heads="all", **kw) as cap:
            pipe.unet(x, 400, encoder_hidden_states=emb)
        with cfviz.capture(pipe.unet, heads="mean", **kw) as ref:
            pipe.unet(x, 400, encoder_hidden_states=emb)
    cache = cap.cache
    got = cache.aggregate(size=16)  # cbe98a2: RuntimeError from torch.stack
    with pytest.raises(CaptureError, match="different head counts"):
        cache.attention_maps(size=16)
    assert len(set(cache.head_counts().values())) > 1
    torch.testing.assert_close(got.data, ref.cache.aggregate(size=16).data, rtol=1e-5, atol=1e-7)
    assert got.dims == ("batch", "token", "h", "w")
    torch.testing.assert_close(cache.blocks_average(size=16).data, ref.cache.blocks_average(size=16).data,
                               rtol=1e-5, atol=1e-7)
    one = [n for n, h in cache.head_counts().items() if h == cache.head_counts()[cache.layers[0]]]
    assert cache.attention_maps(one, size=16).dims.count("head") == 1  # one head count: heads kept
