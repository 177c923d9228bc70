"""overlay() and maps_row(): resizing, colour bars, ground truth, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.viz._common import as_mask, as_rgb, resize_bilinear
from cfviz.viz.overlays import maps_row, overlay
from cfviz.viz.style import OFFLINE_NOTE, new_figure


def test_resize_bilinear_matches_torch_interpolate(rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for shape, size in [((15, 15), (64, 64)), ((4, 7), (9, 5)), ((8, 8), (3, 3)), ((1, 1), (4, 4))]:
        m = rng.random(shape)
        want = F.interpolate(torch.tensor(m)[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(resize_bilinear(m, size), want.numpy(), atol=1e-12)


def test_input_conversion():
    assert as_rgb(np.zeros((3, 5, 7))).shape == (5, 7, 3)  # channel-first
    assert as_rgb(np.ones((5, 7))).dtype == np.uint8
    with pytest.raises(ValueError, match=r"image: float images must hold values in \[0, 1\]"):
        as_rgb(np.full((4, 4, 3), -1.0))
    m = as_mask(np.array([[0, 255], [255, 0]], np.uint8), (4, 4))
    assert m.dtype == bool and m.sum() == 8 and m[0, 3] and not m[0, 0]


def test_overlay_resizes_to_image_with_colorbar_and_contour(rng, figs):
    fig = new_figure(2, 2)
    ax = fig.add_subplot()
    mask = np.zeros((48, 64), bool)
    mask[10:20, 30:50] = True
    im = overlay(ax, rng.random((48, 64, 3)), rng.random((6, 8)), mask=mask, title="fused", label="score")
    assert im.get_array().shape == (48, 64)  # resized to the image
    assert im.get_alpha() == 0.5 and im.get_cmap().name == "inferno"
    assert ax.get_title() == "fused" and not ax.get_xticks().size and not ax.get_yticks().size
    assert figs.colorbar_labels(fig) == ["score"]
    assert [c.get_gid() for c in ax.collections] == ["cfviz-mask-contour"]
    cbar = figs.colorbars(fig)[0]
    assert cbar.images == [] or all(i.get_alpha() in (None, 1) for i in cbar.images)  # an opaque bar


def test_overlay_diverging_is_symmetric_and_validates(rng):
    fig = new_figure(2, 2)
    ax = fig.add_subplot()
    im = overlay(ax, None, rng.normal(size=(8, 8)) + 0.3, diverging=True, colorbar=False)
    lo, hi = im.get_clim()
    assert lo == -hi and im.get_cmap().name == "RdBu_r"
    with pytest.raises(ValueError, match="heatmap must be a 2-D"):
        overlay(ax, None, rng.random((2, 3, 4)))
    with pytest.raises(ValueError, match="vmax"):
        overlay(ax, None, rng.random((4, 4)), vmin=1, vmax=0)
    with pytest.raises(ValueError, match="alpha"):
        overlay(ax, None, rng.random((4, 4)), alpha=2)
    with pytest.raises(ValueError, match="infinite"):
        overlay(ax, None, np.full((4, 4), np.inf))


def test_overlay_accepts_tensors_and_labelled_maps():
    torch = pytest.importorskip("torch")
    from cfviz.capture.labelled import LabelledMaps

    fig = new_figure(2, 2)
    ax = fig.add_subplot()
    lm = LabelledMaps(torch.rand(1, 4, 4), ("batch", "h", "w"), {"batch": [0]})
    assert overlay(ax, torch.zeros(3, 16, 16), lm, colorbar=False).get_array().shape == (16, 16)


def test_maps_row_panels_titles_and_colorbars(defect, rng, figs):
    maps = {"M_clip": rng.random((15, 15)), "M_diff": rng.random((16, 16)), "fused": rng.random((16, 16))}
    fig = maps_row(defect.image, maps, mask=defect.mask, note=OFFLINE_NOTE, title=defect.image_id)
    panels = figs.panels(fig)
    assert [ax.get_title() for ax in panels] == ["image", "ground truth", "M_clip", "M_diff", "fused"]
    assert [len(figs.heatmaps(ax)) for ax in panels] == [0, 0, 1, 1, 1]
    assert figs.colorbar_labels(fig) == ["anomaly score"] * 3  # one per map (own scales)
    assert fig.get_suptitle() == defect.image_id
    assert any(t.get_gid() == "cfviz-note" and "random-weight" in t.get_text() for t in fig.texts)
    assert figs.overlapping_text(fig) == []
    # the mask is shown as it is, and outlined on every map
    np.testing.assert_array_equal(panels[1].get_images()[0].get_array() > 0.5, defect.mask > 0)
    assert all(ax.collections for ax in panels[2:])


def test_maps_row_shared_and_normalised_scales(rng, figs):
    image = rng.random((32, 32, 3))
    maps = {"a": rng.random((8, 8)), "b": 10 + rng.random((8, 8))}
    fig = maps_row(image, maps, shared_scale=True, titles=["A", "B"])
    assert [ax.get_title() for ax in figs.panels(fig)] == ["image", "A", "B"]
    assert len(figs.colorbars(fig)) == 1
    clims = {figs.heatmaps(ax)[0].get_clim() for ax in figs.panels(fig)[1:]}
    assert len(clims) == 1 and clims.pop()[1] > 10
    fig = maps_row(image, maps, normalize=True, titles={"b": "B"})
    heats = [figs.heatmaps(ax)[0] for ax in figs.panels(fig)[1:]]
    assert all(h.get_clim() == (0.0, 1.0) for h in heats)
    assert all(np.isclose(h.get_array().max(), 1) and np.isclose(h.get_array().min(), 0) for h in heats)
    assert "min-max per map" in figs.colorbar_labels(fig)[0]


def test_maps_row_errors(rng):
    image = rng.random((16, 16, 3))
    with pytest.raises(ValueError, match="non-empty dict"):
        maps_row(image, {})
    with pytest.raises(ValueError, match="titles has 1 entries for 2 maps"):
        maps_row(image, {"a": np.eye(4), "b": np.eye(4)}, titles=["x"])
    with pytest.raises(KeyError, match="not in maps"):
        maps_row(image, {"a": np.eye(4)}, titles={"zz": "x"})
    with pytest.raises(ValueError, match=r"maps\['a'\] must be a 2-D"):
        maps_row(image, {"a": rng.random((2, 4, 4))})
    with pytest.raises(ValueError, match="mask must be a 2-D"):
        maps_row(image, {"a": np.eye(4)}, mask=rng.random((2, 4, 4)))
