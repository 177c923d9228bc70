"""The tiny offline SD-inpainting pipeline: SD2's structure in miniature, seeded, fast."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from cfviz.models import model_info, tiny_inpaint_pipeline


def _inputs(size: int = 512) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
    mask = PIL.Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size // 2, size // 2))
    return image, mask


def _call(pipe, seed: int = 0) -> np.ndarray:
    image, mask = _inputs()
    out = pipe("a close-up cropped png photo of a bottle with a crack", image=image, mask_image=mask,
               num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(seed))
    return out.images


def test_structure_mimics_sd2_inpainting(tiny_pipe) -> None:
    unet = tiny_pipe.unet
    assert (unet.config.in_channels, unet.config.out_channels, unet.config.sample_size) == (9, 4, 64)
    assert unet.config.use_linear_projection
    cross = [n.removesuffix(".processor") for n in unet.attn_processors if n.endswith("attn2.processor")]
    blocks = {n.split(".attentions")[0] for n in cross}
    assert blocks == {"down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.1", "up_blocks.2"}
    modules = dict(unet.named_modules())
    assert all(modules[n].heads >= 2 for n in cross)
    assert tiny_pipe.vae_scale_factor == 8
    with torch.no_grad():
        latents = tiny_pipe.vae.encode(torch.zeros(1, 3, 512, 512)).latent_dist.mean
    assert latents.shape == (1, 4, 64, 64)
    te = tiny_pipe.text_encoder.config
    assert (te.hidden_size, te.num_hidden_layers, te.vocab_size, te.max_position_embeddings) == (32, 2, 49408, 77)
    assert unet.config.cross_attention_dim == te.hidden_size
    assert tiny_pipe.tokenizer.pad_token == "!"
    sched = tiny_pipe.scheduler
    assert type(sched).__name__ == "DDIMScheduler"
    assert (sched.config.beta_schedule, sched.config.beta_start, sched.config.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (sched.config.num_train_timesteps, sched.config.prediction_type, sched.config.steps_offset) == (1000, "epsilon", 1)
    assert not sched.config.clip_sample and not sched.config.set_alpha_to_one
    assert tiny_pipe.safety_checker is None
    assert not unet.training and not tiny_pipe.vae.training


def test_call_returns_image_and_is_deterministic(tiny_pipe) -> None:
    first, again, other_noise = _call(tiny_pipe, 0), _call(tiny_pipe, 0), _call(tiny_pipe, 1)
    assert first.shape == (1, 512, 512, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_noise)


def test_builder_seeding() -> None:
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    a = tiny_inpaint_pipeline(seed=5)
    assert torch.equal(torch.rand(4), expected), "building must not move the global RNG"
    b, c = tiny_inpaint_pipeline(seed=5), tiny_inpaint_pipeline(seed=6)
    for part in ("unet", "vae", "text_encoder"):
        sa, sb, sc = (getattr(p, part).state_dict() for p in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part
        assert any(not torch.equal(sa[k], sc[k]) for k in sa), part


def test_info(tiny_pipe) -> None:
    info = model_info(tiny_pipe)
    assert info["kind"] == "inpaint_pipeline" and info["weights"] == "random" and info["seed"] == 0
    assert info["name"] == "cfviz-tiny-sd-inpainting" and info["source"] == "config"
    unet_info = model_info(tiny_pipe.unet)
    assert unet_info["kind"] == "unet" and unet_info["pipeline"] == info["name"] and unet_info["seed"] == 0


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        tiny_inpaint_pipeline(seed=-3)
