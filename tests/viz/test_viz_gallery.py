"""Failure-case galleries and the paper-style qualitative grid."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.viz.gallery import gallery, qualitative_grid
from cfviz.viz.style import OFFLINE_NOTE


def test_gallery_panels_titles_subtitles_and_one_bar(textures, rng, figs):
    items = [{"image": s.image, "map": rng.random((16, 16)) * (i + 1), "mask": s.mask, "title": s.defect_type,
              "subtitle": f"score {0.1 * i:.2f}"} for i, s in enumerate(textures)]
    fig = gallery(items, ncols=3, title="worst false positives", note=OFFLINE_NOTE)
    panels = figs.panels(fig)
    assert len(panels) == len(items)  # the unused cells of the last row are removed
    assert [ax.get_title() for ax in panels] == [s.defect_type for s in textures]
    assert [ax.get_xlabel() for ax in panels][:2] == ["score 0.00", "score 0.10"]
    assert figs.colorbar_labels(fig) == ["anomaly score"]
    clims = {figs.heatmaps(ax)[0].get_clim() for ax in panels}
    assert len(clims) == 1 and clims.pop()[1] > 1  # one scale across items
    with_defects = [ax for ax, s in zip(panels, textures) if s.mask.any()]
    assert all(ax.collections for ax in with_defects)
    assert figs.overlapping_text(fig) == []


def test_gallery_own_scales_and_items_without_maps(rng, figs):
    items = [{"image": rng.random((20, 20, 3)), "map": rng.random((5, 5))}, {"image": rng.random((20, 20, 3))}]
    fig = gallery(items, shared_scale=False)
    assert len(figs.panels(fig)) == 2 and len(figs.colorbars(fig)) == 1
    assert [len(figs.heatmaps(ax)) for ax in figs.panels(fig)] == [1, 0]


def test_gallery_errors(rng):
    with pytest.raises(ValueError, match="non-empty list"):
        gallery([])
    with pytest.raises(KeyError, match=r"items\[0\]: unknown keys \['heatmap'\]"):
        gallery([{"image": rng.random((8, 8, 3)), "heatmap": np.eye(8)}])
    with pytest.raises(KeyError, match="no 'image'"):
        gallery([{"map": np.eye(8)}])
    with pytest.raises(TypeError, match="must be a dict"):
        gallery([np.eye(3)])


@pytest.fixture()
def rows(textures, rng):
    return [{"image": s.image, "mask": s.mask, "M_clip": rng.random((15, 15)), "M_diff": 100 * rng.random((8, 8)),
             "fused": rng.random((16, 16)), "label": s.defect_type} for s in textures if s.label == 1]


def test_qualitative_grid_layout(rows, figs):
    fig = qualitative_grid(rows, note=OFFLINE_NOTE, title="brick")
    panels = figs.panels(fig)
    assert len(panels) == 5 * len(rows)
    assert [ax.get_title() for ax in panels[:5]] == ["image", "ground truth", "M_clip", "M_diff", "fused"]
    assert [ax.get_ylabel() for ax in panels[::5]] == [r["label"] for r in rows]
    assert [len(figs.heatmaps(ax)) for ax in panels[:5]] == [0, 0, 1, 1, 1]
    heats = [figs.heatmaps(ax)[0] for ax in panels if figs.heatmaps(ax)]
    assert all(h.get_clim() == (0, 1) and np.isclose(np.nanmax(h.get_array()), 1) for h in heats)  # per map
    assert figs.colorbar_labels(fig) == ["anomaly score\n(min-max per map)"]
    np.testing.assert_array_equal(panels[1].get_images()[0].get_array() > 0.5, rows[0]["mask"] > 0)
    assert figs.overlapping_text(fig) == []


def test_qualitative_grid_scales(rows, figs):
    fig = qualitative_grid(rows, scale="column", columns=("image", "M_clip", "M_diff"))
    assert len(figs.colorbars(fig)) == 2
    m_diff = {figs.heatmaps(ax)[0].get_clim() for ax in figs.panels(fig)[2::3]}
    assert len(m_diff) == 1 and m_diff.pop()[1] > 50  # raw values, shared down the column
    fig = qualitative_grid(rows, scale="row", columns=("ground truth", "fused"), row_labels=["a"] * len(rows))
    assert len(figs.colorbars(fig)) == len(rows)
    assert [ax.get_ylabel() for ax in figs.panels(fig)[::2]] == ["a"] * len(rows)


def test_qualitative_grid_errors(rows):
    with pytest.raises(KeyError, match=r"rows\[0\] has no map 'M_clip_V'"):
        qualitative_grid(rows, columns=("image", "M_clip_V"))
    no_mask = [{k: v for k, v in r.items() if k != "mask"} for r in rows]
    with pytest.raises(KeyError, match="no 'mask'"):
        qualitative_grid(no_mask)
    with pytest.raises(ValueError, match="scale must be one of"):
        qualitative_grid(rows, scale="global")
    with pytest.raises(ValueError, match="row_labels has 1 entries"):
        qualitative_grid(rows, row_labels=["x"])
