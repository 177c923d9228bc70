"""Issue 21, figures that contradicted the run or lost its context: each test pins one case.

* notebook 06's "detection rate by defect type" put the normal images' false-positive rate in a
  bar labelled "detected (%)" and showed no n;
* the failure gallery called its pixel-map colour bar and its image-score captions both "anomaly
  score" (two scales, one word);
* figure 09's colour bar of two [0, 1] min-max maps ran from 0.2 to 0.8.
"""

from __future__ import annotations

import numpy as np

from tests.viz.test_viz_misleading import _image, _preds


def test_defect_breakdown_names_the_false_positive_rate_and_shows_n(figs) -> None:
    import cfviz.viz as viz
    from cfviz.analysis.failures import defect_breakdown

    p = _preds()
    b = defect_breakdown(p, threshold=0.5)
    good = b.set_index("defect_type").loc["good"]
    assert bool(good.normal) and (good.images, good.n_detected) == (3, 1)  # 'b' (0.7) of three normals
    fig = viz.defect_breakdown_figure(b.assign(category="brick"), note="offline")
    ax = figs.panels(fig)[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[-1] == "good (normal)" and "good" not in " ".join(ticks[:-1])
    # one bar per type, each annotated with images at or above the threshold / n
    assert ticks == ["crack", "cut", "hole", "good (normal)"]
    assert [round(r.get_height(), 1) for r in ax.patches] == [100.0, 0.0, 100.0, 33.3]
    assert [t.get_text() for t in ax.texts] == ["1/1", "0/1", "1/1", "1/3"]
    colours = {tuple(r.get_facecolor()) for r in ax.patches[:3]}
    assert len(colours) == 1 and tuple(ax.patches[3].get_facecolor()) not in colours  # its own colour
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("false-positive rate" in t for t in legend) and any("detection rate" in t for t in legend)
    assert "detected (%)" not in ax.get_ylabel()
    assert figs.overlapping_text(fig) == []


def test_failure_gallery_names_the_pixel_and_the_image_scale_apart(figs) -> None:
    import cfviz.viz as viz
    from cfviz.analysis.failures import rank_failures

    p = _preds()
    fig = viz.failure_gallery(p, rank_failures(p, k=2, threshold=0.5), _image, note="offline")
    (bar,) = figs.colorbar_labels(fig)
    assert "pixel" in bar and "image" not in bar and "anomaly score" not in bar
    subtitles = [ax.get_xlabel() for ax in figs.panels(fig)]
    assert all("image score" in s for s in subtitles), subtitles
    assert subtitles[0].endswith("image score 0.70 ≥ 0.50")
    assert "image-score threshold 0.50" in fig.get_suptitle()
    assert figs.overlapping_text(fig) == []


def test_family_figure_shows_the_whole_unit_range_and_each_bar_under_its_panels(monkeypatch, figs) -> None:
    """Figure 09: two min-max maps ([0, 1]) had a colour bar from 0.2 to 0.8, and its label stood
    between the maps and the difference panel."""
    from types import SimpleNamespace

    from cfviz.analysis import family_maps

    rng = np.random.default_rng(0)

    def fake_map(runs, label, image_id):  # a min-max scaled map whose ends blur away when resized
        m = rng.random((8, 8))
        return (m - m.min()) / (m.max() - m.min())

    monkeypatch.setattr(family_maps, "family_language_map", fake_map)
    rec = SimpleNamespace(image_id="brick/test/hole/000")
    sample = SimpleNamespace(image=np.full((32, 32, 3), 128, np.uint8), mask=np.eye(32, dtype=bool))
    runs = SimpleNamespace(labels=["tiny", "tiny-sd3"], note="offline",
                           dataset=SimpleNamespace(records=[rec], load=lambda r: sample))
    fig = family_maps.family_language_figure(runs, rec.image_id)
    shared, diff = figs.colorbars(fig)
    ticks = [float(t) for t in shared.get_xticks() if shared.get_xlim()[0] - 1e-9 <= t <= shared.get_xlim()[1] + 1e-9]
    assert shared.get_xlim() == (0.0, 1.0) and ticks[0] == 0.0 and ticks[-1] == 1.0
    panels = figs.panels(fig)
    for bar, group in ((shared, panels[:2]), (diff, panels[2:3])):
        fig.canvas.draw()
        box, boxes = bar.get_position(), [ax.get_position() for ax in group]
        assert box.y1 <= min(b.y0 for b in boxes)  # under its panels
        assert min(b.x0 for b in boxes) - 1e-6 <= box.x0 and box.x1 <= max(b.x1 for b in boxes) + 1e-6
    assert figs.colorbar_labels(fig) == ["M_diff_L (min-max per map)", "difference (panel title)"]
    assert [ax.get_title() for ax in panels] == ["tiny", "tiny-sd3", "tiny-sd3 − tiny"]
    assert figs.overlapping_text(fig) == []
