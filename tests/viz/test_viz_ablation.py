"""Ablation figures from tidy frames: heat map with matched cells, alpha curves, metric bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfviz.viz.ablation import ablation_heatmap, alpha_curves, metric_bars
from cfviz.viz.style import OFFLINE_NOTE


@pytest.fixture()
def timestep_frame():
    ts = [100, 261, 400]
    return pd.DataFrame([{"query t": q, "reference t": r, "category": c, "AUROC": 90 - abs(q - r) / 10 + k}
                         for q in ts for r in (*ts, 600) for k, c in enumerate(("brick", "grass"))])


def _matched(ax):
    return [p for p in ax.patches if p.get_gid() == "cfviz-matched"]


def test_heatmap_values_annotations_and_matched_outlines(timestep_frame, figs):
    frame = timestep_frame[timestep_frame.category == "brick"]
    fig = ablation_heatmap(frame, index="query t", columns="reference t", values="AUROC", fmt=".2f",
                           title="matched vs mismatched", note=OFFLINE_NOTE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["100", "261", "400"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "261", "400", "600"]
    assert (ax.get_ylabel(), ax.get_xlabel(), ax.get_title()) == ("query t", "reference t", "matched vs mismatched")
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 12 and cells[0] == "90.00" and cells[3] == "40.00"
    rects = _matched(ax)
    assert len(rects) == 3  # (100,100), (261,261), (400,400); no 600 row
    centres = sorted((r.get_x() + r.get_width() / 2, r.get_y() + r.get_height() / 2) for r in rects)
    assert centres == [(0.5, 0.5), (1.5, 1.5), (2.5, 2.5)]
    assert ax.collections[0].colorbar.ax.get_ylabel() == "AUROC"
    legend = ax.collections[0].colorbar.ax.get_legend()
    assert legend is not None and "matched" in legend.get_texts()[0].get_text()
    assert figs.overlapping_text(fig) == []


def test_heatmap_needs_explicit_aggregation(timestep_frame):
    with pytest.raises(ValueError, match="aggfunc='mean'"):
        ablation_heatmap(timestep_frame, index="query t", columns="reference t", values="AUROC")
    fig = ablation_heatmap(timestep_frame, index="query t", columns="reference t", values="AUROC",
                           aggfunc="mean", mark_diagonal=False, annotate=False)
    ax = fig.axes[0]
    assert not _matched(ax) and not ax.texts
    np.testing.assert_allclose(ax.collections[0].get_array().reshape(3, 4)[0, 0], 90.5)  # mean of 90 and 91


def test_heatmap_errors(timestep_frame):
    with pytest.raises(KeyError, match=r"values='auroc'.*columns are"):
        ablation_heatmap(timestep_frame, index="query t", columns="reference t", values="auroc")
    with pytest.raises(TypeError, match="DataFrame"):
        ablation_heatmap({"a": [1]}, index="a", columns="a", values="a")
    with pytest.raises(ValueError, match="empty"):
        ablation_heatmap(timestep_frame.iloc[:0], index="query t", columns="reference t", values="AUROC")


def test_string_labels_are_matched_too():
    frame = pd.DataFrame([{"q": q, "r": r, "v": 1.0} for q in ("up1", "up2") for r in ("up1", "up2", "mid")])
    fig = ablation_heatmap(frame, index="q", columns="r", values="v")
    assert len(_matched(fig.axes[0])) == 2


@pytest.fixture()
def alpha_frame():
    alphas = np.round(np.linspace(0, 1, 5), 2)
    return pd.DataFrame([{"category": c, "alpha": a, "value": 60 + 10 * k + 20 * a}
                         for k, c in enumerate(("brick", "grass", "gravel")) for a in alphas])


def test_alpha_curves_lines_mean_and_marks(alpha_frame, figs):
    fig = alpha_curves(alpha_frame, ylabel="pixel AUROC (%)", note=OFFLINE_NOTE)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if line.get_gid() == "cfviz-curve"]
    (mean,) = [line for line in ax.lines if line.get_gid() == "cfviz-mean"]
    assert [c.get_label() for c in curves] == ["brick", "grass", "gravel"]
    assert all(c.get_linewidth() < mean.get_linewidth() for c in curves)
    np.testing.assert_allclose(mean.get_ydata(), 70 + 20 * np.linspace(0, 1, 5))
    marks = [line for line in ax.lines if line.get_gid() == "cfviz-mark"]
    assert sorted(m.get_xdata()[0] for m in marks) == [0.25, 0.75]
    top = ax.child_axes[0]  # the secondary axis that names the marks
    labels = [t.get_text() for t in top.xaxis.get_ticklabels()]
    assert labels == ["segmentation\nα = 0.25", "classification\nα = 0.75"]
    assert ax.get_ylabel() == "pixel AUROC (%)" and "α" in ax.get_xlabel()
    assert ax.get_legend().get_title().get_text() == "category"
    assert figs.overlapping_text(fig) == []


def test_alpha_curves_numeric_hue_and_incomplete_curves(alpha_frame):
    frame = alpha_frame.rename(columns={"category": "shots"}).replace({"brick": 1, "grass": 2, "gravel": 4})
    fig = alpha_curves(frame, hue="shots", marks=(0.5,), mark_labels=None)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if line.get_gid() == "cfviz-curve"]
    assert [c.get_label() for c in curves] == ["1", "2", "4"]
    assert len({c.get_color() for c in curves}) == 3
    short = alpha_frame.drop(index=alpha_frame.index[-1])  # gravel lacks alpha = 1
    with pytest.warns(UserWarning, match="leaves out 1 alpha"):
        fig = alpha_curves(short)
    (mean,) = [line for line in fig.axes[0].lines if line.get_gid() == "cfviz-mean"]
    assert len(mean.get_xdata()) == 4


def test_alpha_curves_errors(alpha_frame):
    with pytest.raises(ValueError, match="average repeated runs"):
        alpha_curves(pd.concat([alpha_frame, alpha_frame]))
    with pytest.raises(KeyError, match="hue='shots'"):
        alpha_curves(alpha_frame, hue="shots")
    with pytest.raises(ValueError, match="mark_labels has 1 entries for 2 marks"):
        alpha_curves(alpha_frame, mark_labels=("seg",))


def test_metric_bars(figs):
    frame = pd.DataFrame({"method": ["WinCLIP", "MapDiff", "fused"], "value": [81.0, 70.5, 85.25]})
    fig = metric_bars(frame, ylabel="image AUROC (%)", fmt=".2f", note=OFFLINE_NOTE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["81.00", "70.50", "85.25"]
    assert [round(p.get_height(), 2) for p in ax.patches] == [81.0, 70.5, 85.25]
    assert ax.get_ylabel() == "image AUROC (%)" and not ax.lines  # one row per bar: no error bars
    assert figs.overlapping_text(fig) == []


def test_metric_bars_with_hue_and_repeats(figs):
    rows = [{"method": m, "metric": k, "category": c, "value": v + i}
            for m, v in (("WinCLIP", 80), ("fused", 85)) for k in ("image", "pixel") for i, c in enumerate("abc")]
    fig = metric_bars(pd.DataFrame(rows), hue="metric")
    ax = fig.axes[0]
    assert sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height() > 0) == [81, 81, 86, 86]
    assert len(ax.lines) == 4  # error bars: sd over the three categories
    assert "error bars: sd" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["image", "pixel"]
    with pytest.raises(KeyError, match="columns are"):
        metric_bars(pd.DataFrame(rows), x="model")
