"""Timestep x block grids and token grids from arrays and labelled maps."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.viz.grids import short_name, short_names, timestep_block_grid, timestep_label, token_grid


@pytest.fixture()
def labelled():
    torch = pytest.importorskip("torch")
    from cfviz.capture.labelled import LabelledMaps

    g = torch.Generator().manual_seed(0)
    layers = ["down_blocks.0.attentions.0.transformer_blocks.0.attn2",
              "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
              "mid_block.attentions.0.transformer_blocks.0.attn2"]
    return LabelledMaps(torch.rand(2, 3, 1, 2, 8, 8, generator=g), ("step", "layer", "batch", "token", "h", "w"),
                        {"step": [0, 1], "layer": layers, "token": ["bottle", "damage"]},
                        {"timestep": ("step", [981.0, 261.0])})


def test_short_names():
    assert short_name("up_blocks.1.attentions.0.transformer_blocks.0.attn2") == "up1.attn0"
    assert short_name("down_blocks.2.attentions.1.transformer_blocks.3.attn1") == "down2.attn1.tb3.self"
    assert short_name("up_blocks.0.upsamplers.0") == "up0.upsample"
    assert short_names(["a.x", "b.x"]) == ["a.x", "b.x"]
    assert short_names(["up_blocks.1.resnets.0", "up_blocks.1.resnets.1"]) == ["up1.res0", "up1.res1"]
    assert timestep_label(261.5) == "t = 261.5"


def test_grid_from_labelled_maps(labelled, figs):
    maps = labelled.sel(token="damage").isel(batch=0)
    fig = timestep_block_grid(maps, label="cross-attention to 'damage'", note="offline")
    panels = figs.panels(fig)
    assert len(panels) == 6 and all(len(figs.heatmaps(ax)) == 1 for ax in panels)
    assert [ax.get_title() for ax in panels[:3]] == ["down0.attn0", "up1.attn1", "mid.attn0"]
    assert [ax.get_ylabel() for ax in panels[::3]] == ["t = 981", "t = 261"]
    assert all(ax.get_title() == "" for ax in panels[3:]) and all(ax.get_ylabel() == "" for ax in panels[1:3])
    assert figs.colorbar_labels(fig) == ["cross-attention to 'damage'"]  # ONE shared bar
    clims = {figs.heatmaps(ax)[0].get_clim() for ax in panels}
    data = maps.numpy()
    assert len(clims) == 1
    assert clims.pop() == (pytest.approx(float(data.min())), pytest.approx(float(data.max())))
    assert "rows: timestep" in fig.get_suptitle() and "cross-attention layer" in fig.get_suptitle()
    # the panels show the selected data, in (step, layer) order
    np.testing.assert_allclose(figs.heatmaps(panels[4])[0].get_array(), data[1, 1], rtol=1e-6)
    assert figs.overlapping_text(fig) == []


def test_grid_accepts_any_dim_order_and_an_image_underlay(labelled, rng, figs):
    maps = labelled.sel(token="bottle").isel(batch=0).transpose("layer", "step", "h", "w")
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True
    fig = timestep_block_grid(maps, image=rng.random((40, 40, 3)), mask=mask, title="T")
    panels = figs.panels(fig)
    assert [ax.get_ylabel() for ax in panels[::3]] == ["t = 981", "t = 261"]
    assert all(figs.heatmaps(ax)[0].get_array().shape == (40, 40) for ax in panels)
    assert all(len(ax.get_images()) == 2 for ax in panels)  # the image under each map
    assert all(ax.collections for ax in panels)  # ground-truth contours
    assert fig.get_suptitle() == "T"


def test_grid_from_array_with_labels_and_scales(rng, figs):
    data = rng.random((3, 2, 6, 6))
    data[:, 1] *= 100
    fig = timestep_block_grid(data, timesteps=[100, 261, 400], blocks=["up_blocks.1", "up_blocks.2"],
                              scale="column", robust=True)
    panels = figs.panels(fig)
    assert [ax.get_title() for ax in panels[:2]] == ["up1", "up2"]
    assert [ax.get_ylabel() for ax in panels[::2]] == ["t = 100", "t = 261", "t = 400"]
    assert len(figs.colorbars(fig)) == 2
    assert figs.heatmaps(panels[1])[0].get_clim()[1] > 10 > figs.heatmaps(panels[0])[0].get_clim()[1]
    fig = timestep_block_grid(data[0])  # one row, default labels
    assert [ax.get_title() for ax in figs.panels(fig)] == ["#0", "#1"]


def test_grid_errors(labelled, rng):
    with pytest.raises(ValueError, match=r"select them first, e.g. maps.sel\(token="):
        timestep_block_grid(labelled)
    with pytest.raises(ValueError, match="'step', 'block' or 'layer'"):
        timestep_block_grid(labelled.sel(token="damage").isel(batch=0).mean("layer"))
    with pytest.raises(ValueError, match="timesteps has 2 labels for 3"):
        timestep_block_grid(rng.random((3, 2, 4, 4)), timesteps=[1, 2])
    with pytest.raises(ValueError, match="got an array of shape"):
        timestep_block_grid(rng.random((4, 4)))
    with pytest.raises(ValueError, match="scale must be"):
        timestep_block_grid(rng.random((1, 2, 4, 4)), scale="panel")
    with pytest.raises(ValueError, match="empty"):
        timestep_block_grid(np.zeros((0, 2, 4, 4)))
    with pytest.raises(ValueError, match="alpha"):
        timestep_block_grid(rng.random((1, 2, 4, 4)), image=rng.random((8, 8, 3)), alpha=1.5)


def test_token_grid(labelled, figs):
    per_step = labelled.isel(batch=0).mean("layer")  # (step, token, h, w)
    fig = token_grid(per_step, scale="column", label="attention")
    panels = figs.panels(fig)
    assert [ax.get_title() for ax in panels[:2]] == ["bottle", "damage"]
    assert [ax.get_ylabel() for ax in panels[::2]] == ["t = 981", "t = 261"]
    assert figs.colorbar_labels(fig) == ["attention", "attention"]
    per_layer = labelled.isel(batch=0, step=0)  # (layer, token, h, w)
    fig = token_grid(per_layer)
    assert [ax.get_ylabel() for ax in figs.panels(fig)[::2]] == ["down0.attn0", "up1.attn1", "mid.attn0"]
    fig = token_grid(np.zeros((3, 4, 4)), tokens=["a", "b", "c"])
    assert [ax.get_title() for ax in figs.panels(fig)] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="tokens has 2 labels for 3"):
        token_grid(np.zeros((3, 4, 4)), tokens=["a", "b"])
