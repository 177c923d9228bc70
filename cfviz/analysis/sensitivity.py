"""Notebook 08's sensitivity study, as tables a reviewer can trust.

* :func:`metric_kinds` — which metrics a knob can move at all (image-level, pixel-level or both),
  under the run's image-score rule (:func:`cfviz.analysis.ablations.metric_kinds` says it; this
  is its tuple form). Under ``--image-score own`` or ``cls``, ``patchclip_language`` changes
  PatchCLIP's language map only and no image score reads that map, so it moves pixel metrics
  only; under the default ``eq9`` the image score is read off the map, so it moves both.
  ``score_rule`` changes image scores only. A knob's table leaves out the metrics it cannot move,
  so a short line is never a metric that could not have moved.
* :func:`knob_effects` — each alternative's metric and its difference from the default, per
  seed (reference draw) then mean and standard deviation over seeds, so a difference can be told
  from the spread of the k-shot draws.
* :func:`compare_methods` — the four methods under one shared scoring rule, and each under its own
  favourite settings (:data:`METHOD_FAVOURITES`), from one store.

Figures: :func:`cfviz.viz.knob_sensitivity` and :func:`cfviz.viz.method_comparison`.

>>> own = ScoringConfig(image_score="own")
>>> metric_kinds("patchclip_language", own), metric_kinds("patchclip_language"), metric_kinds("score_rule")
(('pixel',), ('image', 'pixel'), ('image',))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from cfviz.analysis import ablations
from cfviz.analysis.ablations import metric_kind
from cfviz.evaluation.config import ScoringConfig

#: Each method's own favourite settings (changes to the shared :class:`ScoringConfig`), the named
#: alternative to the shared rule: WinCLIP's published maps are unsmoothed (sigma 0); PatchCLIP's
#: strongest-looking forms average WinCLIP's window maps in (cfviz's earlier default). CLIPFusion
#: and MapDiff use the shared rule, which follows CLIPFusion's own settings.
METHOD_FAVOURITES: dict[str, dict[str, Any]] = {
    "winclip": {"sigma": 0.0},
    "patchclip": {"patchclip_language": "mean", "patchclip_visual": "mean"},
}

#: Settings that need CLIP window embeddings in the store.
_WINDOW_FORMS = {"patchclip_language": ("mean", "windows"), "patchclip_visual": ("mean", "windows")}


def metric_kinds(knob: str, scoring: ScoringConfig | None = None, methods: Sequence[str] | None = None
                 ) -> tuple[str, ...]:
    """The metric kinds ``knob`` can move for ``methods`` under ``scoring``, sorted (see the module docstring)."""
    return tuple(sorted(ablations.metric_kinds(knob, scoring, methods)))


def movable(table: Any, scoring: ScoringConfig | None = None) -> Any:
    """The rows of a design-choice ``table`` whose metric its knob can move (:func:`metric_kinds`)."""
    methods = table["method"] if "method" in table else [None] * len(table)
    keep = [metric_kind(m) in metric_kinds(k, scoring, None if method is None else [method])
            for k, m, method in zip(table["knob"], table["metric"], methods)]
    return table[keep]


def knob_effects(table: Any, scoring: ScoringConfig | None = None) -> Any:
    """Per knob, setting, shots and metric: the value and its difference from the default, over seeds.

    ``table`` is :func:`~cfviz.analysis.ablations.design_choices` (or ``extraction_choices``):
    one row per knob, setting, method, category, shots, seed and metric. Rows a knob cannot move
    are left out (:func:`movable`); the values are averaged over categories (and methods) per
    seed; the difference from the default is taken per seed (paired: the same reference draw),
    then both are summarised over seeds.

    Returns
    -------
    DataFrame with columns knob, setting, default, shots, metric, kind, value, value_std, delta,
    delta_std, seeds (``*_std``: standard deviation over seeds, 0 with one seed).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"knob": "sigma", "setting": ["4.0", "0.0"] * 2, "default": [True, False] * 2,
    ...                   "method": "clipfusion", "category": "c", "shots": 1, "seed": [0, 0, 1, 1],
    ...                   "metric": "pixel_auroc", "value": [0.8, 0.7, 0.9, 0.7]})
    >>> knob_effects(t)[["setting", "delta", "delta_std", "seeds"]].round(3).to_dict("records")
    [{'setting': '4.0', 'delta': 0.0, 'delta_std': 0.0, 'seeds': 2}, {'setting': '0.0', 'delta': -0.15, 'delta_std': 0.071, 'seeds': 2}]
    """
    keys = ["knob", "setting", "default", "shots", "metric"]
    part = movable(table, scoring)
    per_seed = part.groupby([*keys, "seed"], as_index=False)["value"].mean()
    base = per_seed[per_seed["default"]].drop(columns=["setting", "default"]).rename(columns={"value": "base"})
    per_seed = per_seed.merge(base, on=["knob", "shots", "metric", "seed"], how="left")
    per_seed["delta"] = per_seed["value"] - per_seed["base"]
    out = per_seed.groupby(keys, as_index=False).agg(value=("value", "mean"), value_std=("value", "std"),
                                                      delta=("delta", "mean"), delta_std=("delta", "std"),
                                                      seeds=("seed", "nunique"))
    out[["value_std", "delta_std"]] = out[["value_std", "delta_std"]].fillna(0.0)
    out.insert(out.columns.get_loc("metric") + 1, "kind", [metric_kind(m) for m in out["metric"]])
    order = {k: i for i, k in enumerate(dict.fromkeys(table["knob"]))}  # knobs in the table's order
    out["_order"] = out["knob"].map(order)
    out = out.sort_values(["_order", "default", "setting", "shots", "metric"], ascending=[True, False, True, True, True],
                          kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def favourite_config(method: str, shared: ScoringConfig, favourites: Mapping[str, Mapping[str, Any]] | None = None,
                     *, windows: bool = True) -> ScoringConfig:
    """``shared`` with ``method``'s favourite settings (default :data:`METHOD_FAVOURITES`).

    Without window embeddings in the store (``windows=False``) the window forms are left out.

    >>> favourite_config("winclip", ScoringConfig()).sigma, favourite_config("mapdiff", ScoringConfig()).sigma
    (0.0, 4.0)
    """
    fav = dict((METHOD_FAVOURITES if favourites is None else favourites).get(method, {}))
    if not windows:
        fav = {k: v for k, v in fav.items() if v not in _WINDOW_FORMS.get(k, ())}
    return replace(shared, **fav)


def compare_methods(store: Any, dataset: Any, *, methods: Sequence[str] = ("clipfusion", "patchclip", "mapdiff",
                                                                          "winclip"),
                    shots: Sequence[int] = (0, 1), seeds: Sequence[int] = (0,), shared: ScoringConfig | None = None,
                    favourites: Mapping[str, Mapping[str, Any]] | None = None,
                    categories: Sequence[str] | None = None, extraction: Any = None,
                    metrics: Sequence[str] | None = None) -> Any:
    """Every method under the ``shared`` rule and under its own favourite settings, from the store.

    Returns
    -------
    DataFrame with columns rule (``"shared"`` or ``"favourite"``), method, category, shots,
    seed, metric, value; the two rules give the same rows for a method without favourites.
    """
    import pandas as pd

    from cfviz.analysis.ablations import DEFAULT_METRICS, _categories, metric_values
    from cfviz.evaluation.scoring import BranchCache, extraction_of, load_masks, predict

    shared = shared or ScoringConfig()
    metrics = DEFAULT_METRICS if metrics is None else metrics
    windows = (extraction or extraction_of(store)).clip_windows is not False
    configs = {"shared": {m: shared for m in methods},
               "favourite": {m: favourite_config(m, shared, favourites, windows=windows) for m in methods}}
    rows: list[dict[str, Any]] = []
    for category in _categories(dataset, categories):
        tests = [r for r in dataset.records if r.category == category and r.split == "test"]
        masks = load_masks(dataset, tests, shared.eval_size) if dataset.has_masks else None
        cache = BranchCache()  # branch maps once per category, for both rules
        for k in shots:
            for seed in (seeds if k else seeds[:1]):
                for rule, per_method in configs.items():
                    for method in methods:
                        p = predict(store, dataset, category, method, shots=k, seed=seed, scoring=per_method[method],
                                    extraction=extraction, masks=masks, cache=cache)
                        for metric, value in metric_values(p.labels, p.scores, masks, p.maps, metrics).items():
                            rows.append({"rule": rule, "method": method, "category": category, "shots": k,
                                         "seed": seed, "metric": metric, "value": value})
    return pd.DataFrame(rows)
