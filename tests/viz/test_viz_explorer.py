"""The explorer's pure functions (arrays and figures) and its widget shell, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.viz import explore_data as ed


def _data(label: int = 1) -> ed.ImageData:
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1
    att = {"down.attn": rng.random((3, 2, 8, 8)).astype(np.float32),
           "up.attn": rng.random((3, 2, 16, 16)).astype(np.float32)}
    comps = {k: rng.random((32, 32)).astype(np.float32) for k in (*ed.CLIP_KEYS, *ed.DIFF_KEYS)}
    comps["clip_language"][8:16, 8:16] += 2.0  # CLIP finds the defect, diffusion does not
    return ed.ImageData(image_id="cat/test/hole/000", image=np.zeros((32, 32, 3), np.uint8), mask=mask, label=label,
                        defect_type="hole", timesteps=[100.0, 261.0, 400.0], tokens=["crack", "damage"],
                        attention=att, components=comps, component_scores={"clip": 0.8, "diff": 0.2})


def test_attention_map_selects_layer_step_token() -> None:
    d = _data()
    np.testing.assert_array_equal(ed.attention_map(d, "up.attn", 2, "damage"), d.attention["up.attn"][2, 1])
    mean = ed.attention_map(d, ed.ALL_LAYERS, 1, 0)
    assert mean.shape == (16, 16)
    assert not np.allclose(ed.attention_map(d, ed.ALL_LAYERS, 0, 0), mean)  # steps differ
    with pytest.raises(KeyError, match="recorded tokens"):
        ed.attention_map(d, "up.attn", 0, "scratch")
    with pytest.raises(IndexError, match="step must be in 0..2"):
        ed.attention_map(d, "up.attn", 3, 0)
    with pytest.raises(KeyError, match="captured"):
        ed.attention_map(d, "mid.attn", 0, 0)


def test_fused_map_and_score_follow_alpha() -> None:
    d = _data()
    clip_only = ed.fused_map(d.components, 1.0, sigma=0)
    np.testing.assert_allclose(clip_only, d.components["clip_language"] + d.components["clip_visual"], rtol=1e-6)
    assert ed.fused_score(d.component_scores, 0.25) == pytest.approx(0.25 * 0.8 + 0.75 * 0.2)
    with pytest.raises(ValueError, match="both branches"):
        ed.fused_map({"clip_language": np.ones((4, 4))}, 0.5)


def test_live_metrics_change_with_alpha() -> None:
    d = _data()
    clip_side = ed.live_metrics(d, 1.0, sigma=0)
    diff_side = ed.live_metrics(d, 0.0, sigma=0)
    assert clip_side["pixel_auroc"] > 0.95 > diff_side["pixel_auroc"]
    assert clip_side["score"] == pytest.approx(0.8) and diff_side["score"] == pytest.approx(0.2)


def test_figures_show_the_selection() -> None:
    d = _data()
    a = ed.attention_figure(d, layer="up.attn", step=1, token="crack", note="offline")
    assert "t=261" in a.axes[0].get_title() and "crack" in a.axes[0].get_title()
    f = ed.fusion_figure(d, 0.25, metrics={"score": 0.35})
    titles = [ax.get_title() for ax in f.axes]
    assert "fused (alpha=0.25)" in titles and "M_diff_V" in titles
    assert ed.figure_png(a)[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_choices_lists_every_prediction() -> None:
    class P:
        image_ids = ["a", "b"]
        defect_types = ["good", "hole"]
        labels = np.array([0, 1])
    assert ed.image_choices([P(), P()]) == [("a [good]", (0, 0)), ("b [hole]", (0, 1)), ("a [good]", (1, 0)),
                                            ("b [hole]", (1, 1))]


def test_explorer_widgets_redraw_without_rereading(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets")
    from cfviz.viz import explorer as ex

    calls: list[str] = []

    def fake_load(store, dataset, image_id, predictions):  # type: ignore[no-untyped-def]
        calls.append(image_id)
        return _data()

    class P:
        image_ids = ["cat/test/hole/000", "cat/test/good/000"]
        defect_types = ["hole", "good"]
        labels = np.array([1, 0])
        component_scores = {"clip": np.array([0.8, 0.1]), "diff": np.array([0.2, 0.3])}

    monkeypatch.setattr(ex.ed, "load_image_data", fake_load)
    e = ex.AttentionExplorer(store=None, dataset=None, predictions=P(), note="offline")
    first = e.attention_view.value
    e.timestep.value = 2
    assert e.attention_view.value != first
    fusion = e.fusion_view.value
    e.alpha.value = 0.9
    assert e.fusion_view.value != fusion and "score" in e.metrics.value
    assert calls == ["cat/test/hole/000"]  # the store was read once for all those moves
    e.image.value = (0, 1)
    assert calls[-1] == "cat/test/good/000"


def test_explorer_reuses_views_it_has_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Moving a slider back shows the earlier view again without drawing a figure."""
    pytest.importorskip("ipywidgets")
    from cfviz.viz import explorer as ex

    class P:
        image_ids = ["cat/test/hole/000"]
        defect_types = ["hole"]
        labels = np.array([1])
        component_scores = {"clip": np.array([0.8]), "diff": np.array([0.2])}

    monkeypatch.setattr(ex.ed, "load_image_data", lambda *a, **k: _data())
    drawn: list[str] = []
    real_attention, real_fusion = ex.ed.attention_figure, ex.ed.fusion_figure
    monkeypatch.setattr(ex.ed, "attention_figure", lambda *a, **k: drawn.append("a") or real_attention(*a, **k))
    monkeypatch.setattr(ex.ed, "fusion_figure", lambda *a, **k: drawn.append("f") or real_fusion(*a, **k))
    e = ex.AttentionExplorer(store=None, dataset=None, predictions=P(), note="offline")
    first, fused = e.attention_view.value, e.fusion_view.value
    e.timestep.value = 1
    e.alpha.value = 0.9
    assert drawn == ["a", "f", "a", "f"]
    e.timestep.value = 0
    e.alpha.value = 0.25
    assert drawn == ["a", "f", "a", "f"]  # both were seen before: nothing drawn again
    assert e.attention_view.value == first and e.fusion_view.value == fused
