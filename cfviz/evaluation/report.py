"""The report of a run: ``results.csv``, ``summary.md`` and ``run.json`` (the last stage of :func:`~cfviz.experiments.evaluate`).

``summary.md`` holds per-method means over categories, mean ± std over seeds, with published
numbers beside them when a real data set is run with real weights; ``run.json`` the resolved
spec, the comparison rule, the store's identity and the reference images drawn for every
category and seed (:class:`~cfviz.evaluation.plan.RunPlan`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import RunSpec
from cfviz.evaluation.extraction import ExtractionReport
from cfviz.utils.env import library_versions
from cfviz.utils.io import atomic_write_files, json_bytes

RANDOM_WEIGHTS_NOTE = ("Offline random-weight models: these numbers show that the pipeline runs end to end, "
                       "not how well the method detects anomalies.")


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns (and wrote to ``out_dir``)."""

    frame: Any  #: tidy DataFrame: dataset, category, method, shots, seed, metric, value
    summary: Any  #: mean over categories, mean ± std over seeds (a DataFrame)
    out_dir: Path
    store: CaptureStore
    extraction: ExtractionReport
    references: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    random_weights: bool = True
    spec: RunSpec | None = None  #: the run's settings
    #: categories of the data set not scored, with the reason (no test images); the means leave them out
    left_out: dict[str, str] = field(default_factory=dict)
    #: the scoring's own :class:`~cfviz.evaluation.scoring.Predictions` of the settings asked for
    #: with ``evaluate(keep=...)``, by (category, method, shots, seed): figures reuse them
    predictions: dict[tuple[str, str, int, int], Any] = field(default_factory=dict)


METRIC_ORDER = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")


def summarize(frame: Any) -> Any:
    """Mean over categories per seed, then mean and std over seeds: one row per method, shots, metric.

    Units: ``mean`` and ``std`` are fractions in [0, 1], as in ``results.csv`` and ``result.frame``
    (data for programs); the ``unit`` column says so. Tables and figures for people show
    percent, labelled "(%)": ``summary.md`` and :func:`cfviz.notebooks.summary_table`.
    """
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=["method", "shots", "metric", "mean", "std", "n_seeds", "unit"])
    per_seed = frame.groupby(["method", "shots", "seed", "metric"], as_index=False)["value"].mean()
    agg = per_seed.groupby(["method", "shots", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    agg["unit"] = "fraction"
    return agg.rename(columns={"count": "n_seeds"})


def summary_markdown(frame: Any, summary: Any, spec: RunSpec, *, random_weights: bool,
                     left_out: dict[str, str] | None = None, rule: Mapping[str, str] | None = None) -> str:
    """The Markdown tables: means ± std per method and shots, per-category detail, published numbers.

    ``left_out`` (category -> reason) names the data set's categories that were not scored;
    ``rule`` is the run's comparison rule (``RunPlan.rule``; made from ``spec`` when not given).
    """
    if rule is None:
        from cfviz.evaluation.plan import scored_visual_pair
        from cfviz.evaluation.scoring import comparison_rule

        rule = comparison_rule(spec.scoring, scored_visual_pair(spec))
    from cfviz.data import dataset_has_masks
    from cfviz.analysis.published import published_frame

    lines = [f"# cfviz evaluation: {spec.dataset}", ""]
    if random_weights:
        lines += [f"> **{RANDOM_WEIGHTS_NOTE}**", ""]
    lines += [f"Categories: {', '.join(sorted(frame['category'].unique()))}. Seeds: {list(spec.seeds)}. "
              "Values in %, mean over categories; ± is the std over seeds (k-shot references differ per seed).", ""]
    lines += ["Comparison rule (every method alike):", ""]
    lines += [f"- {name}: {text}" for name, text in rule.items()] + [""]
    if left_out:
        lines += ["> **Left out of every table and mean: " + "; ".join(f"{c} ({why})" for c, why in left_out.items())
                  + ".**", ""]
    # say when and why pixel metrics are missing (a mask-less data set, or categories without usable masks)
    cats = sorted(frame["category"].unique())
    with_pixel = set(frame.loc[frame["metric"].str.startswith("pixel_"), "category"])
    no_pixel = [c for c in cats if c not in with_pixel]
    if no_pixel and not dataset_has_masks(spec.dataset, spec.dataset_options):
        lines += [f"> **Pixel metrics skipped: the {spec.dataset} data set has no pixel masks (image labels only), "
                  "so only image metrics are reported.**", ""]
    elif no_pixel:
        which = "every category" if len(no_pixel) == len(cats) else "categories " + ", ".join(no_pixel)
        lines += [f"> **Pixel metrics skipped for {which}: no mask there marks a defect pixel at the evaluation "
                  "size (anomalous images without a mask are left out of pixel metrics); only image metrics are "
                  "reported for them.**", ""]
    metrics = [m for m in METRIC_ORDER if m in set(summary["metric"])]
    columns = [f"{m} (%)" for m in metrics]  # each metric with its unit, as cfviz.notebooks.summary_table names it
    pub = published_frame()
    real_data = spec.dataset in ("mvtec", "visa") and not random_weights
    header = ["method", "shots", *columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, shots), grp in summary.groupby(["method", "shots"], sort=True):
        cells = [method, str(shots)]
        for m in metrics:
            row = grp[grp["metric"] == m]
            if row.empty:
                cells.append("–")
                continue
            mean, std = 100 * float(row["mean"].iloc[0]), 100 * float(row["std"].iloc[0])
            cell = f"{mean:.1f} ± {std:.1f}" if int(row["n_seeds"].iloc[0]) > 1 else f"{mean:.1f}"
            if real_data:
                match = pub[(pub.dataset == spec.dataset) & (pub.method == method) & (pub.shots == shots)
                            & (pub.category == "mean") & (pub.metric == m)]
                if not match.empty:
                    cell += f" (paper {match['published'].iloc[0]:.1f})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    if real_data:
        grids = sorted(set(pub.loc[(pub.dataset == spec.dataset) & pub.method.isin(list(spec.methods)), "grid"]))
        lines += ["", "(paper X): the published number for the same setting (see cfviz/analysis/published.py); "
                  "published numbers come from each method's own image-score and smoothing rules (compare with "
                  "--image-score own --smoothing own) and other evaluation grids: " + "; ".join(grids) + "."]
    lines += ["", "## Per category (mean over seeds)", ""]
    per_cat = frame.groupby(["method", "shots", "category", "metric"])["value"].mean().reset_index()
    header = ["method", "shots", "category", *columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, shots, category), grp in per_cat.groupby(["method", "shots", "category"], sort=True):
        vals = {r.metric: r.value for r in grp.itertuples()}
        lines.append("| " + " | ".join([method, str(shots), category,
                                        *[f"{100 * vals[m]:.1f}" if m in vals else "–" for m in metrics]]) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, plan: Any) -> None:
    """Write results.csv, summary.md and run.json of a run (its :class:`~cfviz.evaluation.plan.RunPlan`)
    into ``result.out_dir``, only when all three are complete.

    Every text is made first; then each goes to a temporary file in ``out_dir``, and only when
    all are written are they renamed over the old ones (:func:`cfviz.utils.io.atomic_write_files`):
    a failure at any point (an empty table, a full disk) leaves the earlier results as they were.
    """
    from cfviz.errors import CfvizError

    frame, spec = result.frame, plan.spec
    if frame.empty:  # nothing to report (no test image was scored): never replace earlier tables with nothing
        raise CfvizError(f"no metric was computed, so no results were written to {result.out_dir} (earlier "
                         "results there are kept)")
    out = result.out_dir
    atomic_write_files({
        out / "results.csv": frame.to_csv(index=False).encode("utf-8"),
        out / "summary.md": summary_markdown(frame, result.summary, spec, random_weights=result.random_weights,
                                             left_out=result.left_out, rule=plan.rule).encode("utf-8"),
        out / "run.json": json_bytes({
            "spec": json.loads(json.dumps(asdict(spec), default=str)),
            "comparison_rule": dict(plan.rule), "visual_pair": plan.visual_pair,
            "store": str(result.store.path), "extraction": str(result.extraction),
            # what the stored entries were computed with (a scoring-only run may differ in threads or device)
            "store_identity": result.store.identity(),
            "references": result.references, "random_weights": result.random_weights, "left_out": result.left_out,
            "library_versions": library_versions(),
        }),
    })
