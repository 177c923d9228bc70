"""Issue 11, "misleading today": figures and tables that said something false or hid what mattered.

Each test pins one case: failure titles that called correctly classified images failures, a
false negative's attention drawn without its mask, a disagreement figure without one scale, a
title or a key, an explorer "copy of the current view" that was not the current view, mixed
units and mixed block names.
"""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.analysis.failures import rank_failures
from cfviz.evaluation.scoring import Predictions


def _preds() -> Predictions:
    """Six images of one category; at threshold 0.5 'b' is a false positive, 'c' a correct normal,
    'e' a false negative and 'f' a correctly detected anomaly."""
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 16, 16), bool)
    masks[3:, 4:10, 5:11] = True
    comps = {k: rng.random((6, 16, 16)).astype(np.float32) for k in ("clip_language", "diff_language")}
    comps["clip_language"][3:, 4:10, 5:11] += 1.0  # CLIP sees the defects, diffusion does not
    ids = [f"brick/test/{d}/{i:03d}" for i, d in enumerate(["good", "good", "good", "hole", "cut", "crack"])]
    return Predictions(method="clipfusion", category="brick", shots=0, seed=0, image_ids=ids,
                       labels=np.array([0, 0, 0, 1, 1, 1]), masks=masks,
                       maps=rng.random((6, 16, 16)).astype(np.float32),
                       scores=np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.8], np.float32), components=comps,
                       component_scores={"clip": rng.random(6), "diff": rng.random(6)},
                       defect_types=["good", "good", "good", "hole", "cut", "crack"])


def _image(_image_id: str) -> np.ndarray:
    return np.full((32, 32, 3), 128, np.uint8)


# ---------------------------------------------------------------------------- 06: failure cases
def test_ranked_cases_are_called_failures_only_when_misclassified() -> None:
    r = rank_failures(_preds(), k=2, threshold=0.5)
    assert r["case"].tolist() == ["false positive #1", "highest-scoring normal #2 (correct)",
                                  "false negative #1", "lowest-scoring anomalous #2 (correct)"]
    assert r["wrong"].tolist() == [True, False, True, False]


def test_failure_gallery_titles_follow_wrong(figs) -> None:
    import cfviz.viz as viz
    from matplotlib.colors import to_hex

    p = _preds()
    fig = viz.failure_gallery(p, rank_failures(p, k=2, threshold=0.5), _image, note="offline")
    titles = [ax.get_title().replace("\n", " ") for ax in figs.panels(fig)]
    assert titles == ["false positive #1", "highest-scoring normal #2 (correct)", "false negative #1",
                      "lowest-scoring anomalous #2 (correct)"]
    colours = [to_hex(ax.title.get_color()) for ax in figs.panels(fig)]
    assert colours[0] == colours[2] != colours[1] == colours[3]  # misclassified cases stand out
    # anomalous images have their defect outlined, normal ones nothing
    outlined = [any(c.get_gid() == "cfviz-mask-contour" for c in ax.collections) for ax in figs.panels(fig)]
    assert outlined == [False, False, True, True]
    assert figs.overlapping_text(fig) == []


def test_failure_gallery_titles_fit_when_every_case_is_correct(figs) -> None:
    """Long "(correct)" titles side by side must not run into each other."""
    import cfviz.viz as viz

    p = _preds()
    p.scores = np.array([0.1, 0.2, 0.3, 0.9, 0.6, 0.8], np.float32)  # every image right at 0.5
    ranked = rank_failures(p, k=3, threshold=0.5)
    assert not ranked["wrong"].any()
    fig = viz.failure_gallery(p, ranked, _image, note="offline")
    assert all("(correct)" in ax.get_title() for ax in figs.panels(fig))
    assert "0 of 6 ranked cases misclassified" in fig.get_suptitle()
    assert figs.overlapping_text(fig) == []


def test_false_negative_attention_grid_outlines_the_missed_defect(monkeypatch, figs) -> None:
    import cfviz.viz as viz
    from cfviz.viz import explore_data

    rng = np.random.default_rng(1)
    monkeypatch.setattr(explore_data, "attention_blocks",
                        lambda store, image_id, token=0: rng.random((2, 3, 8, 8)).astype(np.float32))
    p = _preds()
    fn = next(rank_failures(p, k=1, threshold=0.5).query("kind == 'false negative'").itertuples())
    fig = viz.case_attention_grid(None, p, fn, _image(fn.image_id), timesteps=[100, 400],
                                  blocks=["up_blocks.0", "up_blocks.1", "up_blocks.2"], note="offline")
    panels = figs.panels(fig)
    assert len(panels) == 6
    assert all(any(c.get_gid() == "cfviz-mask-contour" for c in ax.collections) for ax in panels)
    assert fig.get_suptitle().startswith("false negative #1: brick/test/cut/004")
    assert [ax.get_title() for ax in panels[:3]] == ["up0", "up1", "up2"]


def test_disagreement_figure_has_one_scale_a_title_and_a_key(figs) -> None:
    import cfviz.viz as viz

    p = _preds()
    fig = viz.disagreement_figure(p, _image, top=3, note="offline")
    bars = figs.colorbars(fig)
    assert len(bars) == 1
    heat = [im for ax in figs.panels(fig) for im in figs.heatmaps(ax)]
    assert len(heat) == 3 and len({im.get_clim() for im in heat}) == 1
    lo, hi = heat[0].get_clim()
    assert lo == pytest.approx(-hi)  # signed: 0 (agreement) in the middle of the scale
    assert "disagree" in fig.get_suptitle()
    ticks = " ".join(t.get_text() for t in bars[0].get_yticklabels())
    assert "CLIP" in ticks and "diffusion" in ticks
    assert "M_clip - M_diff" in figs.colorbar_labels(fig)[0]
    legend = figs.panels(fig)[0].get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["ground truth"]
    assert figs.overlapping_text(fig) == []


# ---------------------------------------------------------------------------- 02: the explorer
def _data(image_id: str = "cat/test/hole/000"):  # type: ignore[no-untyped-def]
    from cfviz.viz import explore_data as ed

    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1
    att = {"down_blocks.1.attentions.0.transformer_blocks.0.attn2": rng.random((3, 2, 8, 8)).astype(np.float32),
           "up_blocks.1.attentions.0.transformer_blocks.0.attn2": rng.random((3, 2, 16, 16)).astype(np.float32)}
    comps = {k: rng.random((32, 32)).astype(np.float32) for k in (*ed.CLIP_KEYS, *ed.DIFF_KEYS)}
    return ed.ImageData(image_id=image_id, image=np.zeros((32, 32, 3), np.uint8), mask=mask, label=1,
                        defect_type="hole", timesteps=[100.0, 261.0, 400.0], tokens=["crack", "damage"],
                        attention=att, components=comps, component_scores={"clip": 0.8, "diff": 0.2})


class _P:
    image_ids = ["cat/test/good/000", "cat/test/hole/000", "cat/test/cut/000"]
    defect_types = ["good", "hole", "cut"]
    labels = np.array([0, 1, 1])
    scores = np.array([0.9, 0.4, 0.7])
    component_scores = {"clip": np.array([0.8, 0.1, 0.5]), "diff": np.array([0.2, 0.3, 0.6])}


def _explorer(monkeypatch):  # type: ignore[no-untyped-def]
    pytest.importorskip("ipywidgets")
    from cfviz.viz import explorer as ex

    monkeypatch.setattr(ex.ed, "load_image_data", lambda store, dataset, image_id, p: _data(image_id))
    return ex.AttentionExplorer(store=None, dataset=None, predictions=_P(), note="offline")


def test_explorer_opens_on_the_highest_scoring_anomalous_image(monkeypatch) -> None:
    e = _explorer(monkeypatch)
    assert e.state["image_id"] == "cat/test/cut/000"  # score 0.7; the normal image scores higher but is normal


def test_explorer_copy_is_the_current_view(monkeypatch, figs) -> None:
    e = _explorer(monkeypatch)
    up = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    e.timestep.value = 2
    e.layer.value = up
    e.token.value = "damage"
    e.opacity.value = 0.3
    e.show_mask.value = False
    e.alpha.value = 0.8
    assert e.state == {"image_id": "cat/test/cut/000", "layer": up, "step": 2, "token": "damage", "opacity": 0.3,
                       "show_mask": False, "clip_scale": 0, "alpha": 0.8, "alpha_cls": 0.75,
                       "threshold": e.threshold.value}
    fig = e.attention_figure()
    ax = figs.panels(fig)[0]
    assert "t=400" in ax.get_title() and "'damage'" in ax.get_title() and "up1.attn0" in ax.get_title()
    assert figs.heatmaps(ax)[0].get_alpha() == pytest.approx(0.3)
    assert not any(c.get_gid() == "cfviz-mask-contour" for c in ax.collections)
    # the on-screen panel (drawn from arrays, not matplotlib) shows the same state as the copy
    assert e.attention_panel.key == ("att", "cat/test/cut/000", up, 2, "damage", 0.3, False)
    fusion = e.fusion_figure()
    assert any("alpha=0.80" in a.get_title() for a in figs.panels(fusion))
    assert e.fused_panel.key == ("fused", "cat/test/cut/000", 0.8, 0.3, False)


# ---------------------------------------------------------------------------- one name per block
SD_LAYERS = ["down_blocks.0.attentions.1.transformer_blocks.0.attn2", "mid_block.attentions.0.transformer_blocks.0.attn2",
             "up_blocks.3.attentions.2.transformer_blocks.0.attn2", "up_blocks.1.attentions.0.transformer_blocks.1.attn2"]


def test_short_names_and_module_paths_round_trip() -> None:
    from cfviz.capture.naming import compile_filter, module_path, select_names, short_name
    from cfviz.errors import CfvizError

    shorts = [short_name(n) for n in SD_LAYERS]
    assert shorts == ["down0.attn1", "mid.attn0", "up3.attn2", "up1.attn0.tb1"]
    assert [module_path(s) for s in shorts] == SD_LAYERS
    assert [module_path(s, SD_LAYERS) for s in shorts] == SD_LAYERS
    assert module_path("up1", ["up_blocks.0", "up_blocks.1"]) == "up_blocks.1"
    assert module_path(SD_LAYERS[0], SD_LAYERS) == SD_LAYERS[0]
    with pytest.raises(CfvizError, match="up9"):
        module_path("up9", ["up_blocks.0", "up_blocks.1"])
    # the store and capture filters take the short names too
    assert select_names(SD_LAYERS, "up1") == [SD_LAYERS[3]]
    assert select_names(SD_LAYERS, ["mid", "down0.attn1"]) == SD_LAYERS[:2]
    assert compile_filter("up*")(SD_LAYERS[2])


def test_explorer_lists_layers_by_short_name_with_the_path_as_tooltip(monkeypatch) -> None:
    from cfviz.viz import explore_data as ed

    e = _explorer(monkeypatch)
    labels = [label for label, _ in e.layer.options]
    assert labels == [ed.ALL_LAYERS, "down1.attn0", "up1.attn0"]
    e.layer.value = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert "up_blocks.1.attentions.0.transformer_blocks.0.attn2" in e.layer.tooltip
    note = next(t for t in e.attention_figure().texts if t.get_gid() == "cfviz-note").get_text()
    assert "up1.attn0 = up_blocks.1.attentions.0" in note.replace("\n", " ")


def test_block_grid_names_blocks_short_with_their_paths_in_the_caption(figs) -> None:
    import cfviz.viz as viz

    fig = viz.timestep_block_grid(np.random.default_rng(0).random((2, 3, 8, 8)), timesteps=[100, 400],
                                  blocks=["up_blocks.0", "up_blocks.1", "mid_block"], note="offline")
    assert [ax.get_title() for ax in figs.panels(fig)[:3]] == ["up0", "up1", "mid"]
    note = next(t for t in fig.texts if t.get_gid() == "cfviz-note").get_text().replace("\n", " ")
    assert "up0 = up_blocks.0" in note and "mid = mid_block" in note and "offline" in note


# ---------------------------------------------------------------------------- one unit
def test_summary_says_its_unit_and_tables_for_people_are_in_percent() -> None:
    import pandas as pd

    from cfviz.evaluation.runner import summarize
    from cfviz.notebooks import summary_table

    frame = pd.DataFrame({"method": ["m"] * 4, "shots": [0] * 4, "seed": [0, 0, 1, 1], "category": ["a", "b"] * 2,
                          "metric": ["image_auroc"] * 4, "value": [0.8, 0.9, 0.7, 0.8]})
    summary = summarize(frame)
    assert summary["unit"].tolist() == ["fraction"]
    assert summary["mean"].iloc[0] == pytest.approx(0.8)
    table = summary_table(summary)
    assert table.columns.tolist() == ["method", "shots", "image_auroc (%)", "image_auroc std (%)"]
    assert table["image_auroc (%)"].iloc[0] == pytest.approx(80.0)
    assert table["image_auroc std (%)"].iloc[0] == pytest.approx(100 * np.std([0.85, 0.75], ddof=1), abs=0.05)


def test_explorer_metrics_show_aurocs_in_percent(monkeypatch, figs) -> None:
    e = _explorer(monkeypatch)
    assert "pixel AUROC</b> of this image: " in e.metrics.value and " %" in e.metrics.value
    title = e.fusion_figure().get_suptitle()
    auroc = title.split("pixel AUROC ")[1].split(" %")[0]
    assert 1.0 < float(auroc) <= 100.0  # random maps: about 50 %, not 0.5


# ---------------------------------------------------------------------------- readable figures
def _contrast_on_white(color) -> float:  # type: ignore[no-untyped-def]
    """WCAG contrast ratio of ``color`` against white."""
    from matplotlib.colors import to_rgb

    def lin(u: float) -> float:
        return u / 12.92 if u <= 0.03928 else ((u + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(u) for u in to_rgb(color))
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def test_shots_curves_are_readable_on_white() -> None:
    """04's zero- vs k-shot figure: the k = 1 line was a light yellow-green (contrast ~1.7 : 1)."""
    import pandas as pd

    import cfviz.viz as viz

    frame = pd.DataFrame([{"shots": k, "alpha": a, "value": 60 + 10 * k + 20 * a} for k in (0, 1) for a in (0, 0.5, 1)])
    fig = viz.alpha_curves(frame, hue="shots", mean_line=False)
    curves = [line for line in fig.axes[0].lines if line.get_gid() == "cfviz-curve"]
    assert [c.get_label() for c in curves] == ["0", "1"]
    assert all(_contrast_on_white(c.get_color()) >= 3.0 for c in curves)
    assert all(c.get_linewidth() >= 1.5 and (c.get_alpha() or 1.0) == 1.0 for c in curves)  # no mean: bold lines
