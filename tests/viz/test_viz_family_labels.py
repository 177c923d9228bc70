"""Grids and the explorer name layers per denoiser family (issue 14): UNet ``up1.attn0``, SD3/FLUX
joint attention ``joint3``, FLUX single-stream ``single5``, PixArt cross-attention ``cross3``."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

PROMPT = "a close-up cropped png photo of a bottle with damage"
#: family -> (label pattern of every captured layer, title of a layer axis)
EXPECTED = {
    "sdxl": (r"(down|mid|up)\d*\.attn\d+(\.tb\d+)?", "cross-attention layer"),
    "sd3": (r"joint\d+", "text-attention layer"),
    "flux": (r"(joint|single)\d+", "text-attention layer"),
    "pixart": (r"cross\d+", "cross-attention layer"),
}


@pytest.fixture(scope="module")
def caches():
    """One capture per family on a tiny pipeline (one 64 px image, one timestep)."""
    import cfviz
    from cfviz.diffusion.families import family_forward
    from cfviz.models.families import tiny_family_pipeline

    out = {}
    for name in EXPECTED:
        pipe = tiny_family_pipeline(name)
        with cfviz.capture(pipe, tokens=["damage"], prompt=PROMPT) as cap:
            family_forward(pipe, torch.zeros(1, 3, 64, 64), PROMPT, timesteps=[261])
        out[name] = cap.cache
    return out


def test_layer_labels_name_each_family_kind() -> None:
    from cfviz.capture.families import layer_label, layer_labels

    assert layer_label("down_blocks.1.attentions.0.transformer_blocks.1.attn2") == "down1.attn0.tb1"
    assert layer_label("transformer_blocks.3.attn") == "joint3"
    assert layer_label("single_transformer_blocks.5.attn") == "single5"
    assert layer_label("single_transformer_blocks.5") == "single5"
    assert layer_label("transformer_blocks.3.attn2") == "cross3"
    assert layer_label("transformer_blocks.3.attn2", family="sd3") == "dual3"  # SD3.5's image-only attention
    assert layer_label("transformer_blocks.12") == "block12"
    assert layer_label("pos_embed") == "pos_embed"
    assert layer_labels(["transformer_blocks.1", "transformer_blocks.1.attn"]) == ["block1", "joint1"]


@pytest.mark.parametrize("family", list(EXPECTED))
def test_timestep_layer_grid_labels_per_family(family: str, caches, figs) -> None:
    from cfviz.viz.grids import timestep_block_grid

    pattern, title = EXPECTED[family]
    cache = caches[family]
    maps = cache.attention_maps(tokens="damage", size=8).sel(token="damage").isel(batch=0)
    fig = timestep_block_grid(maps)
    titles = [ax.get_title() for ax in figs.panels(fig)]
    assert len(titles) == len(cache.layers) and len(set(titles)) == len(titles)
    assert all(re.fullmatch(pattern, t) for t in titles), titles
    assert title in fig.get_suptitle()
    if family == "flux":
        assert {"joint0", "single0"} <= set(titles)


def test_word_block_grid_has_one_column_per_transformer_block(caches, figs) -> None:
    from cfviz.viz.grids import word_block_grid

    cache = caches["flux"]
    fig = word_block_grid(cache, tokens=["damage"])
    titles = [t for t in (ax.get_title() for ax in figs.panels(fig)) if t]
    blocks = [n.rsplit(".", 1)[0] for n in cache.layers]  # every FLUX text layer is its block's attn
    assert len(figs.panels(fig)) == len(blocks)
    assert titles == [re.sub(r"^(single_)?transformer_blocks\.(\d+)$",
                             lambda m: ("single" if m.group(1) else "block") + m.group(2), b) for b in blocks]
    assert "transformer block" in fig.get_suptitle()


def test_explorer_layer_menu_and_caption_per_family(caches) -> None:
    from cfviz.viz import explore_data as ed

    for family, (pattern, _) in EXPECTED.items():
        layers = caches[family].layers
        options = ed.layer_options(SimpleNamespace(attention=layers))
        assert options[0] == (ed.ALL_LAYERS, ed.ALL_LAYERS)
        assert sorted(path for _, path in options[1:]) == sorted(layers)  # every layer, one label each
        assert all(re.fullmatch(pattern, label) for label, _ in options[1:])
    assert ed.layer_caption("single_transformer_blocks.1.attn") == "layer single1 = single_transformer_blocks.1.attn"
