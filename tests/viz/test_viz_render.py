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


# ---------------------------------------------------------------------------- array rendering (explorer)
def test_colour_table_is_matplotlibs_colour_map() -> None:
    import matplotlib

    from cfviz.viz import render as rd

    lut = rd.colormap_lut("inferno")
    expected = np.round(matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255)
    np.testing.assert_array_equal(lut, expected)
    assert rd.css_gradient("inferno").startswith("linear-gradient(to top, #000004 0.0%")
    with pytest.raises(ValueError, match="'nope'"):
        rd.colormap_lut("nope")


def test_heat_colors_blend_and_outline() -> None:
    from cfviz.viz import render as rd
    from cfviz.viz._common import resize_bilinear

    heat = np.array([[0.0, 1.0], [2.0, np.nan]])
    colors, lo, hi = rd.heat_colors(heat, (8, 8), nearest=True)
    lut = rd.colormap_lut("inferno")
    assert (lo, hi) == (0.0, 2.0)
    np.testing.assert_array_equal(colors[0, 0, :3], lut[0])
    np.testing.assert_array_equal(colors[4, 0, :3], lut[255])
    assert colors[7, 7, 3] == 0 and colors[0, 0, 3] == 255  # NaN: transparent (no window covers it)
    smooth = np.random.default_rng(0).random((4, 4))
    np.testing.assert_allclose(rd.resize_map(smooth, (16, 16)), resize_bilinear(smooth, 16), atol=1e-5)

    base = np.full((8, 8, 3), 100, np.uint8)
    np.testing.assert_array_equal(rd.blend(base, colors, 0.0), base)
    full = rd.blend(base, colors, 1.0)
    assert abs(int(full[4, 0, 0]) - int(lut[255, 0])) <= 1
    np.testing.assert_array_equal(full[7, 7], base[7, 7])  # a hole keeps the image
    with pytest.raises(ValueError, match="opacity"):
        rd.blend(base, colors, 1.5)

    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    ring = rd.mask_outline(mask, (8, 8), width=1)
    assert ring.sum() == 12 and not ring[3:5, 3:5].any() and ring[2, 2:6].all()

    rgb = np.zeros((10, 10, 3), np.uint8)
    rd.draw_box(rgb, 2, 2, 8, 8, "#ffffff", width=1)
    assert (rgb[2, 2:8] == 255).all() and (rgb[5, 5] == 0).all() and (rgb[1, 1:9] == 0).all()


def test_encode_writes_jpeg_or_lossless_png() -> None:
    import io

    from PIL import Image

    from cfviz.viz import render as rd

    rgb = (np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8)
    assert rd.encode(rgb)[:3] == b"\xff\xd8\xff"
    png = rd.encode(rgb, "png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)
    with pytest.raises(ValueError, match="fmt"):
        rd.encode(rgb, "gif")
    assert rd.panel_shape((300, 600), 200) == (100, 200) and rd.fit_image(rgb, (6, 8)).shape == (6, 8, 3)


def test_render_docstring_examples_run() -> None:
    import doctest

    from cfviz.viz import render as rd

    result = doctest.testmod(rd, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
