"""The explorer never contradicts the run (issue 21): every number on screen is computed by the same
function, at the settings shown next to it, as the run's own ``results.csv``.

A real (tiny, seeded, random-weight) run: its numbers show the pipeline, not detection quality.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")

from cfviz.evaluation.config import ExtractionConfig, RunSpec, ScoringConfig  # noqa: E402
from cfviz.evaluation.runner import evaluate  # noqa: E402
from cfviz.evaluation.scoring import predict  # noqa: E402
from cfviz.metrics import image_metrics  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    from cfviz.data.textures import generate_textures
    from cfviz.evaluation.runner import open_run_dataset

    root = generate_textures(tmp_path_factory.mktemp("tex"), seed=5, image_size=64, n_train=2, n_test_good=3,
                             n_per_defect=2, categories=["brick"], defect_kinds=["stain", "scratch"])
    spec = RunSpec(dataset="folder", root=str(root), methods=("clipfusion",), shots=(1,), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64,
                                               features=("up_blocks.1", "up_blocks.2")),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=4)
    out = tmp_path_factory.mktemp("run")
    result = evaluate(spec, out, progress=False)
    dataset = open_run_dataset(spec)
    return spec, result, dataset, pd.read_csv(out / "results.csv")


def _predict(spec, result, dataset, **scoring):  # type: ignore[no-untyped-def]
    return predict(result.store, dataset, "brick", "clipfusion", shots=1, seed=0,
                   scoring=replace(spec.scoring, **scoring), extraction=spec.extraction)


def _explorer(run):  # type: ignore[no-untyped-def]
    from cfviz.viz.explorer import AttentionExplorer

    spec, result, dataset, _ = run
    # the run's scoring has the default weights and smoothing: an explorer opened as notebook 02 opened it
    # before (no scoring given) must show the run's numbers too
    assert (spec.scoring.alpha_seg, spec.scoring.alpha_cls, spec.scoring.sigma) == (0.25, 0.75, 4.0)
    return AttentionExplorer(result.store, dataset, _predict(spec, result, dataset), note="offline", prefetch=False)


def _shown(e, key: str) -> float:  # type: ignore[no-untyped-def]
    """The number the metrics line shows for ``key`` (its machine-readable value and its text agree)."""
    m = re.search(rf'data-metric="{key}" data-value="([^"]+)">([^<]+)<', e.metrics.value)
    assert m, (key, e.metrics.value)
    value, text = float(m.group(1)), m.group(2)
    assert text == (f"{100 * value:.1f} %" if key.endswith("auroc") else f"{value:.3f}")
    return value


def test_on_opening_the_numbers_are_the_runs(run) -> None:
    spec, result, dataset, table = run
    e = _explorer(run)
    row = table.query("method == 'clipfusion' and metric == 'image_auroc' and shots == 1 and seed == 0")
    assert _shown(e, "category_image_auroc") == float(row["value"].iloc[0])
    assert "alpha_cls = 0.75" in e.metrics.value and "results.csv" in e.metrics.value
    # this run's weights give different numbers, so a screen that used alpha_seg for the image score would show
    # another AUROC (the original bug: 87.5 % on screen, 75.0 % in the table)
    p = e.current[0]
    at_seg = image_metrics(p.labels, _predict(spec, result, dataset, alpha_cls=spec.scoring.alpha_seg).scores)
    assert at_seg["image_auroc"] != float(row["value"].iloc[0])
    # the image score and the map are the run's own, at the run's settings
    i = e.current[1]
    assert _shown(e, "score") == float(p.scores[i])
    np.testing.assert_array_equal(e._final(p, e.data, e.alpha.value), p.maps[i])
    assert _shown(e, "map_max") == float(p.maps[i].max())


@pytest.mark.parametrize("alpha_cls, alpha_seg", [(0.5, 0.25), (0.2, 0.6), (1.0, 0.0)])
def test_at_other_weights_the_numbers_are_what_predict_gives(run, alpha_cls: float, alpha_seg: float) -> None:
    """Each slider drives its own equation; the numbers equal a run made at the weights on screen."""
    spec, result, dataset, _ = run
    e = _explorer(run)
    e.alpha_cls.value, e.alpha.value = alpha_cls, alpha_seg
    there = _predict(spec, result, dataset, alpha_cls=alpha_cls, alpha_seg=alpha_seg)
    i = e.current[1]
    assert _shown(e, "category_image_auroc") == pytest.approx(image_metrics(there.labels, there.scores)["image_auroc"])
    assert _shown(e, "score") == pytest.approx(float(there.scores[i]), abs=1e-6)
    final = e._final(e.current[0], e.data, alpha_seg)
    np.testing.assert_allclose(final, there.maps[i], atol=1e-5)
    assert f"alpha_seg = {alpha_seg:.2f}" in e.fused_panel.title.value
    assert f"alpha_cls = {alpha_cls:.2f}" in e.metrics.value


def test_sliders_are_two_weights_each_labelled_with_its_equation(run) -> None:
    from cfviz.viz.explorer import HELP

    e = _explorer(run)
    assert (e.alpha.description, e.alpha_cls.description) == ("alpha_seg", "alpha_cls")
    assert "eq. 4" in HELP["alpha_seg"] and "eq. 9" in HELP["alpha_cls"]
    assert (e.alpha.value, e.alpha_cls.value) == (0.25, 0.75)  # the run's, not one value for both
    spec, result, dataset, _ = run
    other = replace(spec.scoring, alpha_seg=0.4, alpha_cls=0.6)
    from cfviz.viz.explorer import AttentionExplorer

    f = AttentionExplorer(result.store, dataset, _predict(spec, result, dataset, alpha_seg=0.4, alpha_cls=0.6),
                          scoring=other, prefetch=False)
    assert (f.alpha.value, f.alpha_cls.value) == (0.4, 0.6) and "results.csv" in f.metrics.value
    before = e.metrics.value
    e.alpha.value = 0.9  # the segmentation weight leaves the image score and the category AUROC alone
    assert _shown(e, "score") == float(re.search(r'data-metric="score" data-value="([^"]+)"', before).group(1))


def test_the_predicted_mask_follows_alpha_seg_and_names_both(run) -> None:
    e = _explorer(run)
    p, d = e.current[0], e.data
    e.threshold.value = float(np.median(e._final(p, d, 0.25)))  # about half the pixels predicted: any change shows
    first = bytes(e.pred_panel.image.value)
    e.alpha.value = 0.8
    assert bytes(e.pred_panel.image.value) != first
    assert e.pred_panel.key[2:4] == (0.8, e.threshold.value)  # drawn from the fused map at 0.8, at the threshold
    title = e.pred_panel.title.value
    assert "alpha_seg = 0.80" in title and f"{e.threshold.value:.3g}" in title


def test_the_threshold_sits_on_the_fused_bar_in_its_units(run) -> None:
    from cfviz.viz.explorer import threshold_mark

    e = _explorer(run)
    lo, hi = e._bars["fused"]
    d = e.data
    final = e._final(e.current[0], d, e.alpha.value)
    assert (lo, hi) == (float(final.min()), float(final.max()))  # the bar's limits are the map's own values
    assert f"{hi:.3g}" in e.fusion_bar.value and f"{lo:.3g}" in e.fusion_bar.value
    pos, text = threshold_mark(e.threshold.value, lo, hi)
    assert f"bottom:{100 * pos:.1f}%" in e.fusion_bar.value and f"{e.threshold.value:.3g}" in text
    assert _shown(e, "map_max") == pytest.approx(hi)  # "map max" is the bar's top, one scale


def test_an_empty_failure_filter_says_none_and_shows_nothing_else(run) -> None:
    from cfviz.viz import explore_data as ed

    NONE_LABEL = "none in this run"
    e = _explorer(run)
    outcomes = ed.outcomes(e.current[0])
    empty = next((k for k in ("FN", "FP") if k not in outcomes), None)
    if empty is None:
        pytest.skip("this run has both false positives and false negatives")
    e.show.value = empty
    assert [label for label, _ in e.image.options] == [NONE_LABEL]
    assert NONE_LABEL in e.message.value and e.body.layout.display == "none"
    e.show.value = "all"
    assert e.body.layout.display != "none" and e.message.value == "" and e.image.value is not None


def test_outcome_colours_stay_apart_from_each_other_and_the_outline_for_colour_blind_readers() -> None:
    """TP/FP/FN fills and the ground-truth outline: CIE76 distance >= 30 for normal, protan, deutan and
    tritan vision (Machado, Oliveira and Fernandes 2009, severity 1). The original FN (#56B4E9) was 15
    from the cyan outline under deuteranopia."""
    from cfviz.viz.explorer import OUTCOME_COLORS
    from cfviz.viz.style import MASK_COLOR

    sims = {"normal": np.eye(3),
            "protan": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                                [-0.003882, -0.048116, 1.051998]]),
            "deutan": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                                [-0.011820, 0.042940, 0.968881]]),
            "tritan": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                                [0.004733, 0.691367, 0.303900]])}

    def lab(color: str, m: np.ndarray) -> np.ndarray:
        c = np.array([int(color[k:k + 2], 16) for k in (1, 3, 5)]) / 255
        rgb = np.clip(m @ np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4), 0, 1)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
        t = xyz / np.array([0.9505, 1.0, 1.089])
        f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    colours = {**OUTCOME_COLORS, "ground-truth outline": MASK_COLOR}
    for view, m in sims.items():
        for (a, ca), (b, cb) in itertools.combinations(colours.items(), 2):
            assert np.linalg.norm(lab(ca, m) - lab(cb, m)) >= 30, (view, a, b)


def test_compare_tab_puts_two_stores_side_by_side(run) -> None:
    """Compare mode with a second store (here the same run's store: B - A is zero everywhere)."""
    from cfviz.viz.explorer import AttentionExplorer

    spec, result, dataset, _ = run
    e = AttentionExplorer(result.store, dataset, _predict(spec, result, dataset), compare_store=result.store,
                          prefetch=False)
    e.compare_what.value = "store"
    fig = e.comparison_figure()
    diff = [im.get_array() for ax in fig.axes for im in ax.get_images()
            if "−" in ax.get_title() and np.ndim(im.get_array()) == 2]  # the map, not the image under it
    assert diff and all(float(np.abs(np.asarray(a)).max()) == 0.0 for a in diff)
    e.show_comparison()
    assert "another" not in e.compare_caption.value and "store" in e.compare_caption.value


def test_a_method_without_weights_names_none(run) -> None:
    """PatchCLIP (one branch): its own map and score, no alpha named anywhere, and its results.csv number."""
    from cfviz.viz.explorer import AttentionExplorer, TABS

    spec, result, dataset, _ = run
    p = predict(result.store, dataset, "brick", "patchclip", shots=1, seed=0, scoring=spec.scoring,
                extraction=spec.extraction)
    e = AttentionExplorer(result.store, dataset, p, scoring=spec.scoring, prefetch=False)
    e.tabs.selected_index = TABS.index("score histograms")
    assert e.alpha.disabled and e.alpha_cls.disabled
    for text in (e.metrics.value, e.header.value, e.on_screen.value, e.histograms.value, e.fused_panel.title.value):
        assert "alpha" not in text, text
    assert _shown(e, "category_image_auroc") == image_metrics(p.labels, p.scores)["image_auroc"]
    np.testing.assert_array_equal(e._final(p, e.data, e.alpha.value), p.maps[e.current[1]])
