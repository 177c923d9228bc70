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
    clip_side = ed.live_metrics(d, 1.0, alpha_cls=1.0, sigma=0)
    diff_side = ed.live_metrics(d, 0.0, alpha_cls=0.0, sigma=0)
    assert clip_side["pixel_auroc"] > 0.95 > diff_side["pixel_auroc"]
    assert clip_side["score"] == pytest.approx(0.8) and diff_side["score"] == pytest.approx(0.2)
    # the image score follows the classification weight (eq. 9, default 0.75), never the segmentation one
    seg_only = [ed.live_metrics(d, a, sigma=0)["score"] for a in (0.0, 0.25, 1.0)]
    assert seg_only == pytest.approx([0.75 * 0.8 + 0.25 * 0.2] * 3)


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


def _clip(scores_by_scale: dict[int, np.ndarray] | None = None):  # type: ignore[no-untyped-def]
    """CLIP scores on a 4x4 patch grid: windows of side 1 and 2 (one per position)."""
    from types import SimpleNamespace

    boxes = {s: np.array([[r, c, s, s] for r in range(5 - s) for c in range(5 - s)]) for s in (1, 2)}
    rng = np.random.default_rng(1)
    scores = scores_by_scale or {s: rng.random(len(b)) for s, b in boxes.items()}
    return SimpleNamespace(windows=scores, window_boxes=boxes, patch=np.zeros((4, 4)), image=0.5, maps={})


def _rich(image_id: str = "cat/test/hole/000", label: int = 1) -> ed.ImageData:
    """Everything the explorer can show: attention, CLIP windows, branch maps, a final map."""
    import zlib

    d = _data(label)
    d.image_id = image_id
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))  # each image looks different
    d.image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    d.components = {k: v + rng.random(v.shape).astype(np.float32) for k, v in d.components.items()}
    d.clip = _clip()
    d.prediction = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    d.prediction[10:20, 10:20] += 3.0  # overlaps the defect (8:16): TP, FP and FN pixels
    return d


class _P:
    method, category, shots, seed = "clipfusion", "cat", 1, 7
    image_ids = ["cat/test/hole/000", "cat/test/good/000", "cat/test/cut/000"]
    defect_types = ["hole", "good", "cut"]
    labels = np.array([1, 0, 1])
    scores = np.array([0.9, 0.6, 0.3])
    component_scores = {"clip": np.array([0.8, 0.1, 0.4]), "diff": np.array([0.2, 0.3, 0.1])}

    def __init__(self) -> None:
        d = _rich()
        self.maps = np.stack([d.prediction] * 3)
        self.masks = np.stack([d.mask, np.zeros_like(d.mask), d.mask])
        rich = [_rich(i, label=int("good" not in i)) for i in self.image_ids]
        self.components = {k: np.stack([r.components[k] for r in rich]) for k in rich[0].components}


def _explorer(monkeypatch: pytest.MonkeyPatch, calls: list[str] | None = None, **kwargs):  # type: ignore[no-untyped-def]
    pytest.importorskip("ipywidgets")
    from cfviz.viz import explorer as ex

    def load(store, dataset, image_id, predictions):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append(image_id)
        return _rich(image_id, label=int("good" not in image_id))

    monkeypatch.setattr(ex.ed, "load_image_data", load)
    kwargs.setdefault("prefetch", False)
    return ex.AttentionExplorer(store=None, dataset=None, predictions=_P(), note="offline", **kwargs)


def _views(e) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    panels = {"attention": e.attention_panel, "clip": e.clip_panel, "image": e.image_panel, "gt": e.gt_panel,
              "fused": e.fused_panel, "prediction": e.pred_panel, **e.branch_panels}
    return {k: bytes(p.image.value) for k, p in panels.items()}


def _changed(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    return {k for k in before if before[k] != after[k]}


def test_explorer_redraws_without_rereading_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    e = _explorer(monkeypatch, calls)
    first = e.attention_view.value
    e.timestep.value = 2
    assert e.attention_view.value != first
    fusion = e.fusion_view.value
    e.alpha.value = 0.9
    assert e.fusion_view.value != fusion and "score" in e.metrics.value
    assert calls == ["cat/test/hole/000"]  # the store was read once for all those moves
    e.image.value = (0, 1)
    assert calls[-1] == "cat/test/good/000"


def test_every_control_changes_what_it_should_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each control redraws its panels (and only those): the view always shows the controls' state."""
    e = _explorer(monkeypatch)
    expect = {
        (e.timestep, 1): {"attention"},
        (e.layer, "up.attn"): {"attention"},
        (e.token, "damage"): {"attention"},
        (e.clip_scale, 2): {"clip"},
        (e.alpha, 0.7): {"fused", "prediction"},  # the predicted mask follows the fused map
        (e.alpha_cls, 0.5): set(),  # numbers only
        (e.threshold, 0.9): {"prediction"},
        (e.opacity, 0.3): {"attention", "clip", "fused", "prediction", *ed.CLIP_KEYS, *ed.DIFF_KEYS},
        (e.show_mask, False): {"attention", "clip", "gt", "fused", "prediction", *ed.CLIP_KEYS, *ed.DIFF_KEYS},
        (e.image, (0, 2)): {"attention", "clip", "image", "fused", "prediction", *ed.CLIP_KEYS, *ed.DIFF_KEYS},
    }
    for (control, value), panels in expect.items():
        before = _views(e)
        control.value = value
        assert _changed(before, _views(e)) == panels, control.description
    # the ground-truth panel keeps its place and size when hidden (no re-layout of the row)
    assert "hidden" in e.gt_panel.title.value
    assert (e.gt_panel.image.layout.width, e.gt_panel.image.layout.height) == (f"{ex_small()}px", f"{ex_small()}px")


def ex_small() -> int:
    from cfviz.viz.explorer import SMALL

    return SMALL


def test_views_are_drawn_from_arrays_not_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new view costs a few ms of numpy and an image encode; matplotlib (0.2-0.5 s a figure) is never used."""
    import matplotlib.figure

    def refuse(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the interactive view drew a matplotlib figure")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse)
    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", refuse)
    e = _explorer(monkeypatch)
    for control, value in ((e.timestep, 2), (e.layer, "down.attn"), (e.opacity, 0.2), (e.alpha, 0.55),
                           (e.show_mask, False), (e.clip_scale, 2), (e.image, (0, 1))):
        control.value = value
    assert e.draws > 10
    assert bytes(e.attention_view.value)[:3] == b"\xff\xd8\xff"  # JPEG


def test_views_seen_before_are_not_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    e = _explorer(monkeypatch)
    first, fused = e.attention_view.value, e.fusion_view.value
    e.timestep.value = 1
    e.alpha.value = 0.9
    drawn = e.draws
    e.timestep.value = 0
    e.alpha.value = 0.25
    assert e.draws == drawn  # both were on screen before: served from the render cache
    assert e.attention_view.value == first and e.fusion_view.value == fused


def test_neighbouring_steps_layers_and_images_are_prepared_in_the_background(monkeypatch) -> None:
    import time

    calls: list[str] = []
    e = _explorer(monkeypatch, calls, prefetch=True)
    deadline = time.monotonic() + 20
    while (e._pending or e._wake.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    keys = set(e._layers)
    d = e.data
    assert ("att", d.image_id, ed.ALL_LAYERS, 1, "crack") in keys  # the next timestep
    assert ("att", d.image_id, "down.attn", 0, "crack") in keys  # the next layer in the menu
    assert len(set(calls)) == 2  # the next image in the menu was read too
    drawn = e.draws
    e._prefetch = False
    e.image.value = e.image.options[1][1]
    assert e.draws == drawn  # its panels were drawn and encoded in the background: nothing left to draw
    e.image.value = e.image.options[0][1]
    computed: list[int] = []
    real = ed.attention_map
    monkeypatch.setattr(ed, "attention_map", lambda *a, **k: computed.append(1) or real(*a, **k))
    e._prefetch = False
    e.timestep.value = 1
    assert computed == []  # the map was ready


def test_texts_say_what_is_on_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    from cfviz.viz.explorer import HELP

    e = _explorer(monkeypatch)
    line = e.on_screen.value
    assert "k = 1" in line and "seed 7" in line and "alpha_seg = 0.25" in line and "min..max" in line
    assert "alpha_cls = 0.75" in line and "numbers = results.csv" in line
    e.alpha.value = 0.6
    assert "alpha_seg = 0.60" in e.on_screen.value and "not the run's" in e.on_screen.value
    assert e.metrics.value.count("pixel AUROC") == 1  # metrics once, not also in a title
    # the top windows are listed with their colours and scores, best first
    legend = e.window_legend.value
    assert legend.index("#1:") < legend.index("#2:") < legend.index("#3:") and "ground truth" in legend
    # one help line per control, as a tooltip and on screen; descriptions are never cut short
    for ctl in e._controls:
        assert ctl.tooltip.startswith(HELP[ctl.description]), ctl.description
        assert ctl.style.description_width == "initial"
    def texts(widget):  # type: ignore[no-untyped-def]
        value = getattr(widget, "value", None)
        yield value if isinstance(value, str) else ""
        for child in getattr(widget, "children", ()):
            yield from texts(child)

    shown = " ".join(texts(e.widget))
    assert all(f"<b>{name}</b>" in shown for name in HELP)


def test_predicted_mask_colours_true_false_positives_and_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    """anomalib's view: the final map thresholded at the pixel F1-max threshold, TP/FP/FN coloured."""
    import io

    from PIL import Image

    from cfviz.viz import explorer as ex
    from cfviz.viz import render as rd

    e = _explorer(monkeypatch)
    e.opacity.value = 1.0
    p = e.predictions[0]
    thr = ed.prediction_threshold(p)
    pixels = np.asarray(Image.open(io.BytesIO(bytes(e.pred_panel.image.value))).convert("RGB")).astype(int)
    shape = pixels.shape[:2]
    d = e.data
    pred = rd.resize_map(d.prediction, shape) >= thr
    truth = rd.resize_map(d.mask.astype(np.float32), shape, nearest=True) > 0.5
    for name, where in {"TP": pred & truth, "FP": pred & ~truth, "FN": ~pred & truth}.items():
        assert where.sum() > 20, name
        inner = where.copy()  # away from edges, where JPEG mixes neighbours
        inner[1:-1, 1:-1] &= where[:-2, 1:-1] & where[2:, 1:-1] & where[1:-1, :-2] & where[1:-1, 2:]
        got = np.median(pixels[inner], axis=0)
        assert np.abs(got - rd.hex_rgb(ex.OUTCOME_COLORS[name])).max() < 30, (name, got)
    assert "TP" in e.outcome_legend.value and "FN" in e.outcome_legend.value


def test_failure_browser_filters_sorts_and_jumps(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _P()
    assert ed.outcomes(p, threshold=0.5) == ["TP", "FP", "FN"]
    ids = [label.split(" ")[0] for label, _ in ed.browse_choices(p, sort="score+")]
    assert ids == ["cat/test/cut/000", "cat/test/good/000", "cat/test/hole/000"]
    assert [v for _, v in ed.browse_choices(p, show="wrong", threshold=0.5)] == [(0, 1), (0, 2)]
    assert [v for _, v in ed.browse_choices(p, show="defect:cut")] == [(0, 2)]
    with pytest.raises(ValueError, match="show must be"):
        ed.browse_choices(p, show="bogus")
    e = _explorer(monkeypatch)
    e.show.value = "normal"
    assert [v for _, v in e.image.options] == [(0, 1)] and e.state["image_id"] == "cat/test/good/000"
    e.go({"image_id": "cat/test/cut/000", "case": "false negative #1"})  # a rank_failures row
    assert e.state["image_id"] == "cat/test/cut/000" and e.show.value == "all"
    with pytest.raises(KeyError, match="not among"):
        e.go("nope")


def test_saved_view_is_the_screen_pixel_for_pixel(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Paper export: each panel of the saved figure is the very image the browser shows, under its title."""
    import io

    from PIL import Image

    e = _explorer(monkeypatch)
    e.timestep.value = 2
    e.opacity.value = 0.3
    e.alpha.value = 0.8
    fig = e.screen_figure()
    shown = [np.asarray(Image.open(io.BytesIO(p.image.value)).convert("RGB"))
             for p in (e.attention_panel, e.clip_panel, e.image_panel, e.gt_panel, e.fused_panel, e.pred_panel,
                       *e.branch_panels.values())]
    drawn = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(drawn) == len(shown)
    for a, b in zip(drawn, shown):
        assert np.array_equal(np.asarray(a), b)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("alpha_seg = 0.80" in t for t in titles) and not any("<" in t for t in titles)
    assert "k = 1" in fig.texts[-1].get_text()  # the on-screen settings line goes with it
    paths = e.save_view("view", tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and all(p.stat().st_size > 0 for p in paths)


def test_saved_view_carries_colour_bars_legends_metrics_and_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: the export keeps what makes the screen honest, and the top row is not half blank."""
    e = _explorer(monkeypatch)
    e.alpha.value = 0.5
    fig = e.screen_figure()
    bars = [c for ax in fig.axes for c in ax.child_axes if getattr(c, "_colorbar", None) is not None]
    labels = " | ".join(ax.get_ylabel() for ax in bars)
    for name in ("cross-attention", "window score", "map value", "min-max per map"):
        assert name in labels, labels
    fused_bar = next(ax for ax in bars if "map value" in ax.get_ylabel())
    thr = e.threshold.value
    assert f"\u25b6 {thr:.3g}" in fused_bar.get_ylabel()
    lo, hi = e._bars["fused"]
    y = min(max(thr, lo), hi)  # marked in the bar's units (pinned to its end when outside)
    assert any(abs(line.get_ydata()[0] - y) < 1e-9 for line in fused_bar.get_lines())
    assert fused_bar.get_ylim() == pytest.approx((lo, hi))
    legends = " | ".join(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
    assert "#1:" in legends and "ground truth" in legends
    assert "TP (defect found)" in legends and "FN (defect missed)" in legends
    title = fig._suptitle.get_text()
    assert "category image AUROC" in title and "alpha_cls = 0.75" in title and "alpha_seg = 0.50" in title
    assert "offline" in fig.texts[-1].get_text() and "k = 1" in fig.texts[-1].get_text()
    # the two large panels fill the top row: each at least twice as wide as a small panel
    images = [ax for ax in fig.axes if ax.get_images()]
    widths = sorted(ax.get_position().width for ax in images)
    assert widths[-2] >= 1.8 * widths[0]
    top = sorted(images, key=lambda ax: -ax.get_position().y0)[:2]
    assert sum(ax.get_position().width for ax in top) >= 0.45  # not half a row left blank
    assert sum(1 for ax in fig.axes if "share of class" in ax.get_ylabel()) == 2  # both histograms


def test_export_all_writes_every_image_and_an_index(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    e = _explorer(monkeypatch)
    keep = e.image.value
    index = e.export_all(tmp_path / "export")
    pngs = sorted((tmp_path / "export").glob("*.png"))
    assert len(pngs) == len(e.predictions[0].image_ids) and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    page = index.read_text()
    assert all(p.name in page for p in pngs) and "offline" in page and "alpha_seg = 0.25" in page
    assert e.image.value == keep  # the view is back where it was
    only = e.export_all(tmp_path / "wrong", show="wrong")
    assert len(list((tmp_path / "wrong").glob("*.png"))) == len(ed.browse_choices(e.predictions, show="wrong"))
    assert only.exists()


def test_method_k_and_seed_menus_show_that_settings_predictions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero-shot maps are reachable: the k menu swaps in that setting's predictions (and numbers)."""
    from cfviz.metrics import image_metrics

    calls: list[tuple] = []

    def predict(category, method, *, shots, seed):  # type: ignore[no-untyped-def]
        calls.append((category, method, shots, seed))
        p = _P()
        p.shots, p.seed, p.method = shots, seed, method
        p.scores = np.array([0.2, 0.7, 0.9]) if shots == 0 else p.scores  # another ranking: other numbers
        p.component_scores = {"clip": p.scores, "diff": p.scores}
        return p

    e = _explorer(monkeypatch, predict=predict, choices={"method": ["clipfusion"], "shots": [0, 1], "seed": [7]})
    shown = e.state["image_id"]
    e.shots.value = 0
    assert calls == [("cat", "clipfusion", 0, 7)] and e.predictions[0].shots == 0
    assert e.state["image_id"] == shown and "k = 0" in e.on_screen.value and e.seed.disabled
    expected = image_metrics(e.predictions[0].labels, e.predictions[0].scores)["image_auroc"]
    assert f'data-value="{expected!r}"' in e.metrics.value
    e.shots.value = 1
    assert len(calls) == 1 and "k = 1" in e.on_screen.value  # the run's own setting is kept, not scored again


def test_words_tab_shows_every_word_on_one_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """DAAM / prompt-to-prompt: one panel per prompt word, one colour scale, resolutions chosen on screen."""
    from cfviz.viz.explorer import TABS

    e = _explorer(monkeypatch)
    assert e.word_box.children == ()  # drawn only while its tab is open
    e.tabs.selected_index = TABS.index("words")
    assert [p.title.value.count("'crack'") + p.title.value.count("'damage'") for p in e.word_panels] == [1, 1]
    assert all(bytes(p.image.value)[:3] == b"\xff\xd8\xff" for p in e.word_panels)
    maps, lo, hi = ed.word_maps(e.data, 0, sides=(8, 16))
    assert f"{hi:.3g}" in e.word_bar.value and f"{lo:.3g}" in e.word_bar.value  # one bar for every word
    assert lo == min(float(m.min()) for m in maps.values()) and hi == max(float(m.max()) for m in maps.values())
    before = [bytes(p.image.value) for p in e.word_panels]
    e.sides.value = (16,)  # only the 16x16 layer
    assert [bytes(p.image.value) for p in e.word_panels] != before and "16x16" in e.word_caption.value
    np.testing.assert_allclose(ed.word_maps(e.data, 0, sides=(16,))[0]["crack"], e.data.attention["up.attn"][0, 0])
    e.timestep.value = 2
    assert "t = 400" in e.word_caption.value


def test_compare_tab_draws_two_settings_on_one_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    e = _explorer(monkeypatch)
    e.compare_alpha.value = 0.9
    fig = e.comparison_figure()
    assert isinstance(fig, matplotlib.figure.Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("alpha_seg = 0.25" in t for t in titles) and any("alpha_seg = 0.90" in t for t in titles)
    e.show_comparison()
    assert bytes(e.compare_view.value)[:4] == b"\x89PNG" and "alpha_seg = 0.90" in e.compare_caption.value


def test_histogram_tab_marks_the_f1_max_thresholds_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """anomalib's view: normal vs anomalous image and pixel scores, the F1-max thresholds marked (computed by
    the run's metric functions) and the threshold on screen."""
    from cfviz.metrics import image_metrics
    from cfviz.viz.explorer import TABS

    e = _explorer(monkeypatch)
    assert e.histograms.value == ""  # drawn only while its tab is open
    e.tabs.selected_index = TABS.index("score histograms")
    svg = e.histograms.value
    assert svg.count("<svg") == 2 and "normal" in svg and "anomalous" in svg
    p = e.predictions[0]
    image, pixel = e.histogram_data()
    assert image["thresholds"]["F1-max"] == image_metrics(p.labels, p.scores)["image_f1_threshold"]
    assert pixel["thresholds"]["F1-max"] == ed.prediction_threshold(p)
    assert pixel["thresholds"]["threshold"] == e.threshold.value
    assert f"F1-max {image['thresholds']['F1-max']:.3g}" in svg
    normal, anomalous = pixel["counts"][1:]
    assert normal.sum() + anomalous.sum() == np.asarray(p.masks).size and anomalous.sum() == np.asarray(p.masks).sum()
    e.threshold.value = 1.0
    assert "threshold 1" in e.histograms.value  # follows the slider
