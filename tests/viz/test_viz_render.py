"""Render real figures end to end: a capture on the offline tiny pipeline, a generated texture.

These write PNG and PDF files under tmp_path (the same code paths notebooks use) and check that
the files are complete images of a plausible size and that no text overlaps.
"""

from __future__ import annotations

import numpy as np
import pytest

import cfviz.viz as viz


@pytest.fixture(scope="module")
def capture(defect):
    torch = pytest.importorskip("torch")
    import cfviz
    from cfviz.data.transforms import diffusion_transform
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward

    pipe = cfviz.tiny_inpaint_pipeline(seed=0)
    prompt = build_prompt("brick", "damage")
    images = diffusion_transform(defect.image, 64)[None]
    with cfviz.capture(pipe, tokens=["brick", "damage"], prompt=prompt) as cap:
        mapdiff_forward(pipe, images, prompt, timesteps=[100, 261, 400], seed=0)
    assert isinstance(images, torch.Tensor)
    return cap.cache


def _check_png(path, min_side=200):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert min(pixels.shape[:2]) >= min_side
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    return pixels


def test_render_timestep_block_grid_from_a_real_capture(capture, defect, tmp_path, figs):
    maps = capture.attention_maps(size=8).sel(token="damage").isel(batch=0)
    fig = viz.timestep_block_grid(maps, image=defect.image, mask=defect.mask,
                                  label="cross-attention to 'damage'", note=viz.OFFLINE_NOTE)
    panels = figs.panels(fig)
    assert len(panels) == 3 * len(capture.layers)
    assert [ax.get_ylabel() for ax in panels[::len(capture.layers)]] == ["t = 100", "t = 261", "t = 400"]
    assert all("." in ax.get_title() and "_blocks" not in ax.get_title() for ax in panels[:len(capture.layers)])
    assert figs.overlapping_text(fig) == []
    png, pdf = viz.save_figure(fig, "timestep_layer_grid", tmp_path)
    _check_png(png)
    assert pdf.read_bytes()[:5] == b"%PDF-"

    blocks = capture.blocks_average(size=8).sel(token="damage").isel(batch=0)
    fig = viz.timestep_block_grid(blocks, note=viz.OFFLINE_NOTE)
    assert [ax.get_title() for ax in figs.panels(fig)[:len(blocks.coords["block"])]] == \
        ["down0", "down1", "mid", "up1", "up2"]
    _check_png(viz.save_figure(fig, "timestep_block_grid", tmp_path, formats=("png",))[0])

    tokens = capture.attention_maps(size=8).mean("layer").isel(batch=0)
    fig = viz.token_grid(tokens, image=defect.image, scale="column")
    assert [ax.get_title() for ax in figs.panels(fig)[:2]] == ["brick", "damage"]
    _check_png(viz.save_figure(fig, "token_grid", tmp_path, formats=("png",))[0])


def test_render_maps_row_on_a_generated_texture(capture, defect, tmp_path, figs, rng):
    m_diff = capture.blocks_average(size=8).sel(token="damage").isel(batch=0).mean(["step", "block"])
    m_clip = rng.random((15, 15))
    fused = 0.25 * viz.resize_bilinear(m_clip, (8, 8)) + 0.75 * m_diff.numpy() / float(m_diff.numpy().max())
    fig = viz.maps_row(defect.image, {"M_clip": m_clip, "M_diff": m_diff, "fused": fused}, mask=defect.mask,
                       title=defect.image_id, note=viz.OFFLINE_NOTE)
    assert figs.overlapping_text(fig) == []
    pixels = _check_png(viz.save_figure(fig, "maps_row", tmp_path, formats=("png",))[0])
    assert pixels.shape[1] > 3 * pixels.shape[0]  # a row, wider than tall
    fig = viz.qualitative_grid([{"image": defect.image, "mask": defect.mask, "M_clip": m_clip,
                                 "M_diff": m_diff, "fused": fused, "label": defect.defect_type}] * 2,
                               note=viz.OFFLINE_NOTE)
    _check_png(viz.save_figure(fig, "qualitative", tmp_path, formats=("png",))[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps_row.png", "qualitative.png"]  # no temp files left
