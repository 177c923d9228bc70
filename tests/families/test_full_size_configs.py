"""The full-size configs build the published architectures (on the meta device: no weights allocated)."""

from __future__ import annotations

import doctest

import pytest
import torch

from cfviz.errors import ConfigError


@pytest.fixture(scope="module")
def meta():
    """Every full-size denoiser, whole, on the meta device (seconds; no memory)."""
    from cfviz.models.full_size import FULL_SIZE_DENOISERS, full_size_denoiser

    return {name: full_size_denoiser(name, device="meta") for name in FULL_SIZE_DENOISERS}


def test_parameter_counts_are_the_published_models(meta):
    from cfviz.models.full_size import parameter_count

    # the published checkpoints' parameter counts (diffusers' num_parameters() of the released weights)
    assert parameter_count(meta["sdxl"]) == 2_567_463_684
    assert parameter_count(meta["sd3"]) == 2_028_328_000
    assert parameter_count(meta["flux"]) == 11_901_408_320
    assert all(p.device.type == "meta" for m in meta.values() for p in m.parameters())


def test_sdxl_unet_shape(meta):
    from cfviz.capture.families import detect_family
    from cfviz.capture.session import locate_text_attention

    unet = meta["sdxl"]
    cfg = unet.config
    assert (cfg.in_channels, cfg.cross_attention_dim, tuple(cfg.block_out_channels)) == (4, 2048, (320, 640, 1280))
    assert tuple(cfg.transformer_layers_per_block) == (1, 2, 10)
    assert cfg.addition_embed_type == "text_time"
    # pooled OpenCLIP-G text (1280) + 6 size/crop ids embedded at 256 each
    assert cfg.projection_class_embeddings_input_dim == 1280 + 6 * cfg.addition_time_embed_dim
    assert detect_family(unet).name == "sdxl" and not detect_family(unet).inpainting
    layers = locate_text_attention(unet)
    # down: 2x2 + 2x10, mid: 10, up: 3x10 + 3x2
    assert len(layers) == 70
    assert {kind for _, kind in layers.values()} == {"cross"}
    heads = {m.heads for m, _ in layers.values()}
    assert heads == {10, 20}  # head dim 64 at 640 and 1280 channels


def test_flux_transformer_shape(meta):
    from cfviz.capture.families import detect_family
    from cfviz.capture.session import locate_text_attention

    flux = meta["flux"]
    assert (len(flux.transformer_blocks), len(flux.single_transformer_blocks)) == (19, 38)
    assert flux.inner_dim == 3072 == 24 * 128
    cfg = flux.config
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.in_channels) == (4096, 768, 64)
    assert cfg.guidance_embeds and hasattr(flux.time_text_embed, "guidance_embedder")
    fam = detect_family(flux)
    assert fam.name == "flux" and not fam.inpainting
    kinds = [kind for _, kind in locate_text_attention(flux).values()]
    assert kinds == ["flux_joint"] * 19 + ["flux_single"] * 38


def test_sd3_transformer_shape(meta):
    from cfviz.capture.session import locate_text_attention

    sd3 = meta["sd3"]
    assert len(sd3.transformer_blocks) == 24 and sd3.inner_dim == 1536
    assert sd3.transformer_blocks[-1].context_pre_only and not sd3.transformer_blocks[0].context_pre_only
    assert [kind for _, kind in locate_text_attention(sd3).values()] == ["sd3_joint"] * 24


def test_a_fraction_of_the_blocks_keeps_the_full_width(meta):
    from cfviz.models.full_size import full_size_denoiser, parameter_count

    part = full_size_denoiser("flux", layers=(2, 4), device="meta")
    assert (len(part.transformer_blocks), len(part.single_transformer_blocks), part.inner_dim) == (2, 4, 3072)
    full = meta["flux"]
    joint = parameter_count(full.transformer_blocks[0])
    single = parameter_count(full.single_transformer_blocks[0])
    assert (joint, single) == (339_831_296, 141_591_808)
    # the fraction differs from the whole by whole blocks only (embedders and output layers kept)
    assert parameter_count(full) - parameter_count(part) == 17 * joint + 34 * single
    assert part.cfviz_info["layers"] == [2, 4] and part.cfviz_info["weights"] == "random"
    sd3 = full_size_denoiser("sd3", layers=6, device="meta")
    assert len(sd3.transformer_blocks) == 6 and sd3.transformer_blocks[-1].context_pre_only


def test_seeded_weights_are_reproducible():
    """Real (CPU) weights of a small fraction (one SD3 block, ~75 M parameters), drawn twice."""
    from cfviz.models.full_size import full_size_denoiser

    a = full_size_denoiser("sd3", layers=1, seed=3)
    before = torch.random.get_rng_state()
    b = full_size_denoiser("sd3", layers=1, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's random state is left alone
    for name, wa in a.state_dict().items():
        assert torch.equal(wa, b.state_dict()[name]), name
    assert a.transformer_blocks[0].attn.to_q.weight.std() > 0  # drawn, not zeros
    assert a.cfviz_info["seed"] == 3 and a.cfviz_info["config"] == "sd3_transformer"


@pytest.mark.parametrize("name, layers, needle", [
    ("sdxl", 3, "built whole"),
    ("flux", 3, "num_layers (0..19) and num_single_layers (0..38)"),
    ("flux", (20, 0), "num_layers (0..19)"),
    ("flux", (0, 4), "the first at least 1"),
    ("sd3", (2, 2), "num_layers (0..24)"),
    ("sd3", True, "num_layers (0..24)"),
])
def test_bad_layers_are_one_clear_error(name, layers, needle):
    from cfviz.models.full_size import full_size_denoiser

    with pytest.raises(ConfigError, match=f"layers=.*{needle.split(' (')[0]}") as err:
        full_size_denoiser(name, layers=layers, device="meta")
    assert needle in str(err.value)


def test_unknown_name_is_one_clear_error():
    from cfviz.models.full_size import full_size_denoiser

    with pytest.raises(ConfigError, match="'sdxx' is unknown; choose one of \\['flux', 'sd3', 'sdxl'\\]"):
        full_size_denoiser("sdxx", device="meta")


def test_inputs_fit_the_published_architectures(meta):
    """full_size_inputs: the shapes each published denoiser takes (checked against its config)."""
    from cfviz.models.full_size import full_size_inputs

    kw = full_size_inputs("flux", meta["flux"], size=32, text_length=64)
    assert kw["hidden_states"].shape == (1, 256, 64) and kw["encoder_hidden_states"].shape == (1, 64, 4096)
    assert kw["guidance"].tolist() == [3.5] and kw["img_ids"].shape == (256, 3)
    kw = full_size_inputs("sdxl", meta["sdxl"], size=32)
    assert kw["encoder_hidden_states"].shape == (1, 77, 2048)
    assert kw["added_cond_kwargs"]["text_embeds"].shape == (1, 1280)
    kw = full_size_inputs("sd3", meta["sd3"], size=32, text_length=154)
    assert kw["encoder_hidden_states"].shape == (1, 154, 4096) and kw["pooled_projections"].shape == (1, 2048)


def test_doctests():
    import cfviz.models.full_size as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
