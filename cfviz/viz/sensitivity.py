"""Figures of notebook 08's sensitivity study (tables from :mod:`cfviz.analysis.sensitivity`).

* :func:`knob_sensitivity` — per knob and alternative, the difference from the default with an
  error bar of ± one standard deviation over seeds (reference draws), one panel per metric; a
  metric the knob cannot move is marked so, not drawn as a zero-length line.
* :func:`method_comparison` — the methods under the shared scoring rule and under their own
  favourite settings, side by side on one scale, bars with the spread over seeds.

Example
-------
>>> import pandas as pd
>>> e = pd.DataFrame({"knob": ["sigma", "sigma", "score_rule", "score_rule"], "setting": ["4.0", "0.0", "max", "mean"],
...                   "default": [True, False, True, False], "shots": 1, "metric": ["pixel_auroc"] * 2 + ["image_auroc"] * 2,
...                   "kind": ["pixel"] * 2 + ["image"] * 2, "value": [0.8, 0.7, 0.9, 0.85],
...                   "value_std": 0.0, "delta": [0.0, -0.1, 0.0, -0.05], "delta_std": [0.0, 0.02, 0.0, 0.01], "seeds": 2})
>>> fig = knob_sensitivity(e, shots=1)
>>> [ax.get_title() for ax in fig.axes]
['image AUROC, k=1', 'pixel AUROC, k=1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfviz.viz.style import CATEGORICAL, PAGE_WIDTH, add_note, new_figure, style_context

#: Axis names of the metrics the study shows by default.
METRIC_LABELS: dict[str, str] = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC",
                                 "image_f1_max": "image F1-max", "pixel_f1_max": "pixel F1-max",
                                 "image_ap": "image AP", "pixel_ap": "pixel AP", "pixel_aupro": "AUPRO"}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def knob_sensitivity(effects: Any, *, shots: int, metrics: Sequence[str] = ("image_auroc", "pixel_auroc"),
                     kinds: Any = None, extraction_knobs: Sequence[str] = (), note: str | None = None) -> Any:
    """Difference of each alternative from its default (percentage points), with error bars over seeds.

    Parameters
    ----------
    effects:
        :func:`cfviz.analysis.sensitivity.knob_effects` (fractions; shown in points).
    shots:
        Which k to show.
    metrics:
        One panel each.
    kinds:
        ``knob -> metric kinds it can move`` (default :func:`cfviz.analysis.sensitivity.metric_kinds`);
        a panel writes "cannot move" on the rows of a knob that cannot move its metric.
    extraction_knobs:
        Knobs marked ``[extraction]`` (one store per alternative).
    """
    import numpy as np

    from cfviz.analysis.sensitivity import metric_kind, metric_kinds

    kinds = kinds or metric_kinds
    part = effects[effects["shots"] == shots]
    alts = part[~part["default"]]
    rows = list(dict.fromkeys(zip(alts["knob"], alts["setting"])))
    if not rows:
        raise ValueError(f"no alternative at shots={shots}; effects holds shots {sorted(set(effects['shots']))}")
    knobs = list(dict.fromkeys(k for k, _ in rows))
    ys, labels, y = {}, [], 0.0
    for knob in knobs:  # a gap between knobs
        for k, setting in rows:
            if k == knob:
                ys[(k, setting)] = y
                tag = " [extraction]" if k in extraction_knobs else ""
                labels.append(f"{k}{tag}: {setting}")
                y += 1
        y += 0.5
    seeds = int(part["seeds"].max()) if len(part) else 1
    with style_context():
        fig = new_figure(PAGE_WIDTH, 0.26 * len(rows) + 0.4 * len(knobs) + 1.0)
        axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
        for ax, metric in zip(axes, metrics):
            sub = alts[alts["metric"] == metric]
            ax.axvline(0, color="0.3", lw=0.8, zorder=1)
            for (knob, setting), yy in ys.items():
                if metric_kind(metric) not in kinds(knob):
                    ax.text(0, yy, " cannot move", fontsize=5.5, color="0.45", va="center", ha="left")
                    continue
                r = sub[(sub["knob"] == knob) & (sub["setting"] == setting)]
                if r.empty:
                    continue
                d, s = 100 * float(r["delta"].iloc[0]), 100 * float(r["delta_std"].iloc[0])
                ax.plot([0, d], [yy, yy], color="0.65", lw=1, zorder=2)
                ax.errorbar([d], [yy], xerr=[s] if s > 0 else None, fmt="o", ms=3.5, color=CATEGORICAL[0],
                            ecolor="black", elinewidth=0.8, capsize=2, zorder=3)
            ax.set_title(f"{_label(metric)}, k={shots}")
            ax.set_xlabel("alternative − default (points)")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(list(ys.values()), labels)
        axes[0].invert_yaxis()
        spread = (f"Error bars: ± 1 standard deviation over {seeds} seeds (k-shot reference draws), of the "
                  "difference taken per seed (none drawn: every draw gave the same difference)." if seeds > 1 and shots > 0 else
                  "One draw only (zero-shot, or one seed): no spread to show; run several seeds to tell an "
                  "effect from the noise of the reference draws.")
        add_note(fig, f"{spread} Each knob is shown only for the metrics it can move. " + (note or ""))
        return fig


def method_comparison(frame: Any, *, shots: int, metrics: Sequence[str] = ("image_auroc", "pixel_auroc"),
                      order: Sequence[str] | None = None, rules: Sequence[str] = ("shared", "favourite"),
                      titles: dict[str, str] | None = None, note: str | None = None) -> Any:
    """The methods under each rule, side by side: one panel per rule, bars per method and metric.

    ``frame`` is :func:`cfviz.analysis.sensitivity.compare_methods` (fractions; shown in %).
    Values are averaged over categories per seed; the error bars are the standard deviation over
    seeds (none with one seed). Both panels share one y scale.
    """
    from cfviz.viz.ablation import metric_bars

    part = frame[(frame["shots"] == shots) & frame["metric"].isin(list(metrics))]
    if part.empty:
        raise ValueError(f"no rows at shots={shots} for metrics {list(metrics)}")
    per_seed = part.groupby(["rule", "method", "seed", "metric"], as_index=False)["value"].mean()
    per_seed["value"] *= 100
    per_seed["metric"] = per_seed["metric"].map(_label)
    order = list(order) if order is not None else list(dict.fromkeys(part["method"]))
    titles = titles or {"shared": "one shared rule for every method", "favourite": "each method's favourite settings"}
    lo, hi = float(per_seed["value"].min()), float(per_seed["value"].max())
    with style_context():
        fig = new_figure(PAGE_WIDTH, 2.8)
        axes = fig.subplots(1, len(rules), sharey=True)
        for ax, rule in zip(axes, rules):
            metric_bars(per_seed[per_seed["rule"] == rule], x="method", hue="metric", order=order,
                        hue_order=[_label(m) for m in metrics], ylim=(max(0.0, lo - 10), min(100.0, hi + 8)),
                        title=f"{titles.get(rule, rule)}, k={shots}", xlabel="method", ylabel="%", ax=ax)
        for ax in axes[:-1]:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        add_note(fig, note)
        return fig
