"""Full-size architectures from the shipped configs: parameter counts and shapes.

Counts are taken on the meta device (no memory, no init), so only the two tests that really
build a full-size model are marked slow.
"""

from __future__ import annotations

import pytest
import torch

from cfviz.models import model_config

# parameter counts of the published models (SD2-inpainting UNet 865.9M, SD1 UNet 859.5M,
# SD VAE 83.7M, SD2 text encoder 340.4M, ViT-B-16-plus-240 CLIP 208.4M)
EXPECTED = {
    "sd2_inpainting_unet": 865_925_124,
    "sd1_unet": 859_520_964,
    "sd_vae": 83_653_863,
    "sd2_text_encoder": 340_387_840,
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(name: str) -> torch.nn.Module:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = model_config(name)
    with torch.device("meta"):
        if name.endswith("unet"):
            return UNet2DConditionModel.from_config(cfg)
        if name.endswith("vae"):
            return AutoencoderKL.from_config(cfg)
        return CLIPTextModel(CLIPTextConfig(**cfg))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name: str) -> None:
    count = _count(_meta(name))
    assert count == pytest.approx(EXPECTED[name], rel=1e-9)


def test_architecture_facts() -> None:
    sd2 = model_config("sd2_inpainting_unet")
    assert (sd2["in_channels"], sd2["out_channels"], sd2["cross_attention_dim"]) == (9, 4, 1024)
    assert sd2["attention_head_dim"] == [5, 10, 20, 20] and sd2["use_linear_projection"]
    sd1 = model_config("sd1_unet")
    assert (sd1["in_channels"], sd1["attention_head_dim"], sd1["cross_attention_dim"]) == (4, 8, 768)
    assert not sd1["use_linear_projection"]
    unet = _meta("sd2_inpainting_unet")
    cross = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert len(cross) == 16  # 2+2+2 down, 1 mid, 3+3+3 up transformer blocks
    te = model_config("sd2_text_encoder")
    assert (te["hidden_size"], te["num_hidden_layers"], te["num_attention_heads"], te["hidden_act"]) == (1024, 23, 16, "gelu")


@pytest.mark.slow
def test_sd2_inpaint_unet_forward() -> None:
    from cfviz.models import model_info, sd2_inpaint_unet

    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    unet = sd2_inpaint_unet(seed=0)
    assert torch.equal(torch.rand(2), expected)
    assert _count(unet) == EXPECTED["sd2_inpainting_unet"]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = unet(torch.randn(1, 9, 16, 16, generator=g), 500, torch.randn(1, 77, 1024, generator=g)).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
    info = model_info(unet)
    assert (info["weights"], info["seed"], info["kind"]) == ("random", 0, "unet")


@pytest.mark.slow
def test_random_clip_full_size() -> None:
    from cfviz.models import random_clip

    b = random_clip("ViT-B-16-plus-240", seed=0)
    assert _count(b.model) == 208_377_345
    assert (b.grid_size, b.image_size, b.patch_size, b.embed_dim) == ((15, 15), 240, 16, 640)
    with torch.no_grad():
        assert b.model.encode_image(torch.zeros(1, 3, 240, 240)).shape == (1, 640)
    assert b.info()["weights"] == "random"


@pytest.mark.slow
def test_random_inpaint_pipeline_components() -> None:
    from cfviz.models import model_info, random_inpaint_pipeline

    pipe = random_inpaint_pipeline(seed=0)
    counts = {part: _count(getattr(pipe, part)) for part in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": EXPECTED["sd2_inpainting_unet"], "vae": EXPECTED["sd_vae"],
                      "text_encoder": EXPECTED["sd2_text_encoder"]}
    assert pipe.vae_scale_factor == 8 and pipe.tokenizer.pad_token == "!" and pipe.safety_checker is None
    ids = pipe.tokenizer(["a photo of a crack"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids).last_hidden_state
    assert hidden.shape == (1, 77, 1024)
    assert model_info(pipe)["weights"] == "random" and model_info(pipe)["seed"] == 0
