"""Correctness of the capture engine on the tiny inpainting pipeline (offline)."""

import pytest
import torch

import cfviz
from cfviz.capture import locate_cross_attention
from cfviz.capture.processors import RecordingProcessor
from cfviz.errors import CaptureError, TokenNotFoundError


def _processors(unet):
    return {n: m.get_processor() for n, m in unet.named_modules() if hasattr(m, "get_processor")}


def test_recorded_probabilities_equal_direct_softmax(pipe, unet_inputs, direct_probabilities,
                                                     capture_with_layer_inputs):
    """Recorded maps equal softmax(Q K^T * scale) computed from each layer's own inputs."""
    cap, layers, seen = capture_with_layer_inputs(pipe.unet, *unet_inputs)
    for name, attn in layers.items():
        direct = direct_probabilities(attn, *seen[name])  # (b, H, n, 77)
        b, n = direct.shape[0], direct.shape[2]
        rec = cap.cache.attention[name][0]  # (b, H, K=77, h, w)
        assert rec.shape[:3] == (b, attn.heads, 77)
        assert rec.shape[-2] * rec.shape[-1] == n
        torch.testing.assert_close(rec.flatten(3).transpose(2, 3), direct, rtol=1e-5, atol=1e-6)
        # the maps are probabilities: each query's row sums to one over all 77 keys
        torch.testing.assert_close(rec.sum(2), torch.ones_like(rec.sum(2)), rtol=1e-5, atol=1e-5)


def test_head_mean_equals_mean_of_heads(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with torch.no_grad():
        with cfviz.capture(unet, heads="all", dtype=torch.float32) as all_heads:
            unet(x, 400, encoder_hidden_states=emb)
        with cfviz.capture(unet, heads="mean", dtype=torch.float32) as mean_heads:
            unet(x, 400, encoder_hidden_states=emb)
    for name in all_heads.layers:
        torch.testing.assert_close(mean_heads.cache.attention[name][0],
                                   all_heads.cache.attention[name][0].mean(1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs", [{}, {"heads": "all"}, {"features": ["up_blocks.1", "mid_block"]},
                                    {"tokens": [1, 2], "prompt": "a photo"}])
def test_outputs_bit_identical_with_and_without_capture(pipe, unet_inputs, kwargs):
    unet = pipe.unet
    x, emb = unet_inputs
    if "tokens" in kwargs:
        kwargs = {**kwargs, "tokenizer": pipe.tokenizer}
    with torch.no_grad():
        plain = unet(x, 321, encoder_hidden_states=emb).sample
        with cfviz.capture(unet, **kwargs):
            captured = unet(x, 321, encoder_hidden_states=emb).sample
    assert torch.equal(plain, captured)


def test_restored_after_normal_exit_and_after_exception(pipe, unet_inputs, hook_count):
    unet = pipe.unet
    x, emb = unet_inputs
    before = _processors(unet)
    hooks_before = hook_count(unet)
    with torch.no_grad(), cfviz.capture(unet, features=["up_blocks.1"]):
        assert any(isinstance(p, RecordingProcessor) for p in _processors(unet).values())
        unet(x, 10, encoder_hidden_states=emb)
    assert all(_processors(unet)[n] is p for n, p in before.items())
    assert hook_count(unet) == hooks_before

    with pytest.raises(ZeroDivisionError):
        with torch.no_grad(), cfviz.capture(unet, features=["up_blocks.1", "mid_block"]):
            unet(x, 10, encoder_hidden_states=emb)
            1 / 0
    assert all(_processors(unet)[n] is p for n, p in before.items())
    assert hook_count(unet) == hooks_before


def test_restored_when_the_model_raises_inside_a_layer(pipe, unet_inputs, hook_count):
    unet = pipe.unet
    x, emb = unet_inputs
    before = _processors(unet)
    with pytest.raises(RuntimeError):
        with torch.no_grad(), cfviz.capture(unet, features=["up_blocks.1"]):
            unet(x, 10, encoder_hidden_states=emb[:, :, :3])  # wrong text width: fails inside attn2
    assert all(_processors(unet)[n] is p for n, p in before.items())
    assert hook_count(unet) == 0


def test_nested_and_repeated_captures(pipe, unet_inputs, hook_count):
    unet = pipe.unet
    x, emb = unet_inputs
    before = _processors(unet)
    with torch.no_grad():
        with cfviz.capture(unet, attention="up_blocks.*") as outer:
            unet(x, 100, encoder_hidden_states=emb)
            with cfviz.capture(unet, attention="*attn2", features=["up_blocks.2"]) as inner:
                unet(x, 200, encoder_hidden_states=emb)
            assert all(isinstance(unet.get_submodule(n).get_processor(), RecordingProcessor)
                       for n in outer.layers)
            unet(x, 300, encoder_hidden_states=emb)
        for _ in range(2):  # repeated captures start fresh
            with cfviz.capture(unet) as again:
                unet(x, 400, encoder_hidden_states=emb)
            assert again.cache.timesteps == [400.0]
    assert outer.cache.timesteps == [100.0, 200.0, 300.0]
    assert inner.cache.timesteps == [200.0]
    shared = outer.layers[0]
    torch.testing.assert_close(outer.cache.attention[shared][1], inner.cache.attention[shared][0])
    assert all(_processors(unet)[n] is p for n, p in before.items())
    assert hook_count(unet) == 0


def test_time_is_the_unet_call_not_a_layer_count(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with torch.no_grad(), cfviz.capture(unet) as cap:
        for t in (900, 500, 100):
            unet(x, torch.tensor([t, t]), encoder_hidden_states=emb)
    assert [s.step for s in cap.cache.steps] == [0, 1, 2]
    assert cap.cache.timesteps == [900.0, 500.0, 100.0]
    assert cap.cache.step_at(500.0) == 1
    assert all(set(per) == {0, 1, 2} for per in cap.cache.attention.values())


def test_per_timestep_records_match_single_timestep_runs(pipe):
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    prompt = build_prompt("brick", "damage")
    kw = dict(tokens=["damage", "brick"], prompt=prompt, features=["up_blocks.1", "up_blocks.2"])
    with cfviz.capture(pipe, **kw) as both:
        mapdiff_forward(pipe, images, prompt, timesteps=[150, 600], seed=7)
    singles = []
    for t in (150, 600):
        with cfviz.capture(pipe, **kw) as one:
            mapdiff_forward(pipe, images, prompt, timesteps=[t], seed=7)
        singles.append(one.cache)
    for i, single in enumerate(singles):
        for name in both.layers:
            assert torch.equal(both.cache.attention[name][i], single.attention[name][0])
        for name in both.blocks:
            assert torch.equal(both.cache.features[name][i], single.features[name][0])
    # an image's records do not depend on its batch companions
    with cfviz.capture(pipe, **kw) as alone:
        mapdiff_forward(pipe, images[1:], prompt, timesteps=[150, 600], seed=7)
    name = both.layers[-1]
    torch.testing.assert_close(alone.cache.attention[name][1][0], both.cache.attention[name][1][1],
                               rtol=1e-3, atol=1e-4)


def test_token_selection_by_word_index_and_subword(pipe, unet_inputs):
    unet = pipe.unet
    prompt = "a close-up cropped png photo of a zipper with scratches and damage"
    ids = pipe.tokenizer(prompt).input_ids
    sub = pipe.tokenizer("scratches", add_special_tokens=False).input_ids
    x, _ = unet_inputs
    emb = pipe.text_encoder(torch.tensor([ids + [ids[-1]] * (77 - len(ids))]))[0].expand(2, -1, -1)
    with torch.no_grad():
        with cfviz.capture(pipe, tokens=["damage", "scratches", 1], prompt=prompt, dtype=torch.float32) as sel:
            unet(x, 50, encoder_hidden_states=emb)
        with cfviz.capture(pipe, dtype=torch.float32) as full:
            unet(x, 50, encoder_hidden_states=emb)
    assert sel.cache.labels[:2] == ["damage", "scratches"] and sel.cache.labels[2].startswith("#1:")
    damage_pos = ids.index(pipe.tokenizer("damage", add_special_tokens=False).input_ids[0])
    start = next(i for i in range(len(ids)) if ids[i:i + len(sub)] == sub)
    layer = sel.layers[0]
    s, f = sel.cache.attention[layer][0], full.cache.attention[layer][0]
    torch.testing.assert_close(s[:, 0], f[:, damage_pos])
    torch.testing.assert_close(s[:, 1], f[:, start:start + len(sub)].mean(1))
    torch.testing.assert_close(s[:, 2], f[:, 1])  # position 1 = first word (0 is the start token)


def test_unknown_word_names_the_prompt_tokens(pipe):
    with pytest.raises(TokenNotFoundError, match=r"'scratch'.*not in prompt.*'photo</w>'"):
        cfviz.capture(pipe, tokens=["scratch"], prompt="a photo of a bottle with damage")
    with pytest.raises(CaptureError, match="need prompt"):
        cfviz.capture(pipe, tokens=["damage"])


def test_classifier_free_guidance_rows(pipe):
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 64, 64)
    prompt = "a photo of a brick with damage"
    g = torch.Generator().manual_seed(0)
    with cfviz.capture(pipe, tokens=["damage"], prompt=prompt) as cap:
        pipe(prompt, image=image, mask_image=mask, height=64, width=64, num_inference_steps=2,
             guidance_scale=7.5, generator=g, output_type="pt")
    assert len(cap.cache.steps) == 2
    assert all(s.batch_size == 2 and s.rows == (1,) for s in cap.cache.steps)  # conditional half kept
    assert cap.cache.timesteps == [float(t) for t in pipe.scheduler.timesteps]
    with cfviz.capture(pipe, tokens=["damage"], prompt=prompt) as nocfg:
        pipe(prompt, image=image, mask_image=mask, height=64, width=64, num_inference_steps=1,
             guidance_scale=1.0, generator=g, output_type="pt")
    assert nocfg.cache.steps[0].rows == (0,)  # no doubling: no row dropped


def test_rows_must_be_explicit_when_batch_is_not_doubled(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with pytest.raises(CaptureError, match="odd batch"):
        with torch.no_grad(), cfviz.capture(unet, rows="cond"):
            unet(x[:1], 1, encoder_hidden_states=emb[:1])
    with torch.no_grad(), cfviz.capture(unet, rows=[1]) as cap:
        unet(x, 1, encoder_hidden_states=emb)
    assert cap.cache.batch_size == 1 and cap.cache.steps[0].rows == (1,)


def test_non_square_latents_keep_their_shape(pipe):
    unet = pipe.unet
    x = torch.randn(1, 9, 24, 40)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad(), cfviz.capture(unet, features=["up_blocks.2"]) as cap:
        unet(x, 5, encoder_hidden_states=emb)
    res = {cap.cache.resolution(n) for n in cap.layers}
    assert (24, 40) in res and (12, 20) in res
    assert cap.cache.feature_maps("up_blocks.2").shape["w"] == 40
    assert cap.cache.aggregate(size=(24, 40)).shape == {"batch": 1, "token": 77, "h": 24, "w": 40}


def test_replacing_a_processor_inside_the_capture_is_an_error(pipe, unet_inputs):
    from diffusers.models.attention_processor import AttnProcessor

    unet = pipe.unet
    x, emb = unet_inputs
    before = _processors(unet)
    with pytest.raises(CaptureError, match="replaced"):
        with torch.no_grad(), cfviz.capture(unet):
            unet.set_attn_processor(AttnProcessor())
            unet(x, 1, encoder_hidden_states=emb)
    unet.set_attn_processor({n + ".processor": p for n, p in before.items()
                             if n + ".processor" in unet.attn_processors})
    assert all(_processors(unet)[n] is p for n, p in before.items())


def test_filters_exact_glob_regex_predicate(pipe):
    import re

    unet = pipe.unet
    all_names = list(locate_cross_attention(unet))
    up = [n for n in all_names if n.startswith("up_blocks.")]
    assert list(locate_cross_attention(unet, "up_blocks.*attn2")) == up
    assert list(locate_cross_attention(unet, re.compile(r"up_blocks\.\d.*"))) == up
    assert list(locate_cross_attention(unet, lambda n: n.startswith("up_"))) == up
    assert list(locate_cross_attention(unet, [up[0]])) == [up[0]]
    assert list(locate_cross_attention(unet, "up_blocks.1")) == [n for n in up if n.startswith("up_blocks.1.")]
    with pytest.raises(CaptureError, match="matched no cross-attention layer; available"):
        locate_cross_attention(unet, "up_blocks.9*")


def test_reduce_steps_mean_equals_mean_of_steps(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with torch.no_grad():
        with cfviz.capture(unet, dtype=torch.float32, features=["up_blocks.1"]) as steps:
            for t in (800, 400, 50):
                unet(x, t, encoder_hidden_states=emb)
        with cfviz.capture(unet, dtype=torch.float32, features=["up_blocks.1"], reduce_steps="mean") as mean:
            for t in (800, 400, 50):
                unet(x, t, encoder_hidden_states=emb)
    assert len(mean.cache.steps) == 1 and len(mean.cache.reduced_steps) == 3
    for name in steps.layers:
        expected = torch.stack([steps.cache.attention[name][s] for s in range(3)]).mean(0)
        torch.testing.assert_close(mean.cache.attention[name][0], expected, rtol=1e-5, atol=1e-6)
    expected = torch.stack([steps.cache.features["up_blocks.1"][s] for s in range(3)]).mean(0)
    torch.testing.assert_close(mean.cache.features["up_blocks.1"][0], expected, rtol=1e-5, atol=1e-5)


def test_storage_is_fp16_and_only_selected_tokens(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with torch.no_grad(), cfviz.capture(pipe, tokens=[2, 3, 4], prompt="a photo of a brick") as cap:
        unet(x, 1, encoder_hidden_states=emb)
    t = cap.cache.attention[cap.layers[0]][0]
    assert t.dtype == torch.float16 and t.shape[1] == 3


def test_feature_module_that_is_not_a_map_is_an_error(pipe, unet_inputs, hook_count):
    unet = pipe.unet
    x, emb = unet_inputs
    with pytest.raises(CaptureError, match="not a \\(batch, channels, h, w\\) map"):
        with torch.no_grad(), cfviz.capture(unet, attention=False, features=["time_embedding"]):
            unet(x, 1, encoder_hidden_states=emb)
    assert hook_count(unet) == 0


def test_labelled_selection_and_blocks(pipe, unet_inputs):
    unet = pipe.unet
    x, emb = unet_inputs
    with torch.no_grad(), cfviz.capture(pipe, tokens=[1, 2], prompt="a brick") as cap:
        for t in (700, 300):
            unet(x, t, encoder_hidden_states=emb)
    maps = cap.cache.attention_maps("up_blocks.*", size=16)
    assert maps.dims == ("step", "layer", "batch", "token", "h", "w")
    one = maps.sel(timestep=300.0, token=maps.coords["token"][1])
    assert one.dims == ("layer", "batch", "h", "w")
    torch.testing.assert_close(one.data, maps.data[1, :, :, 1])
    blocks = cap.cache.blocks_average(size=16)
    assert blocks.coords["block"] == [b for b in ["down_blocks.0", "down_blocks.1", "mid_block",
                                                  "up_blocks.1", "up_blocks.2"] if b in blocks.coords["block"]]
    with pytest.raises(CaptureError, match="different resolutions"):
        cap.cache.attention_maps()


def test_recorder_borrows_the_layers_query_instead_of_projecting_again(pipe, unet_inputs):
    """Under capture each attn2 layer's ``to_q`` still runs once per call (no second projection)."""
    unet = pipe.unet
    x, emb = unet_inputs
    layers = locate_cross_attention(unet)
    calls = {name: 0 for name in layers}

    def count(name):
        def hook(module, args, output):
            calls[name] += 1
        return hook

    handles = [attn.to_q.register_forward_hook(count(n)) for n, attn in layers.items()]
    try:
        with torch.no_grad(), cfviz.capture(unet, dtype=torch.float32) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}
    assert set(cap.cache.attention) == set(layers)
    assert all(len(attn.to_q._forward_hooks) == 0 for attn in layers.values())


def test_recorder_recomputes_the_query_when_the_processor_skips_to_q(pipe, unet_inputs,
                                                                     capture_before_and_after_swap):
    """A processor that never calls ``to_q`` (e.g. fused projections) still gets exact maps."""
    import torch.nn.functional as F

    class NoToQ:
        """Cross-attention that projects the query with F.linear, not by calling attn.to_q."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
            b = hidden_states.shape[0]
            q = F.linear(hidden_states, attn.to_q.weight, attn.to_q.bias)
            k, v = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
            d = k.shape[-1] // attn.heads
            q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, attn.heads * d)
            return attn.to_out[1](attn.to_out[0](out))

    ref, cap = capture_before_and_after_swap(pipe.unet, *unet_inputs, NoToQ())
    for name, per in ref.cache.attention.items():
        torch.testing.assert_close(cap.cache.attention[name][0], per[0], rtol=1e-5, atol=1e-6)
