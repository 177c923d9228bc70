"""Ablations computed from the capture store (no model runs), as tidy DataFrames.

* :func:`matching_table` — the paper's Table 5: segmentation and classification results of the
  visual diffusion map M_diff_V for every (query, reference) timestep pair and every
  (query, reference) UNet block pair. The matched pairs (query == reference) are the default.
* :func:`alpha_sweep` — CLIPFusion as the CLIP weight alpha goes from 0 (diffusion only) to 1
  (CLIP only), for segmentation and classification, per category and shots.

Both return one row per (category, setting, metric) with a ``value`` column, ready for
:func:`cfviz.viz.ablation_heatmap` and :func:`cfviz.viz.alpha_curves`; :func:`mean_over_categories`
adds the mean row per setting.

Example
-------
>>> from cfviz.notebooks import setup                                   # doctest: +SKIP
>>> s = setup(smoke=True)                                               # doctest: +SKIP
>>> t = matching_table(s.store, s.dataset, kind="timestep", shots=1)    # doctest: +SKIP
>>> t.columns.tolist()[:5]                                              # doctest: +SKIP
['category', 'shots', 'seed', 'kind', 'query']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import ExtractionConfig, ScoringConfig

#: Metrics reported by the ablations (AUPRO is left out by default: it is the slowest).
DEFAULT_METRICS: tuple[str, ...] = ("image_auroc", "image_f1_max", "pixel_auroc", "pixel_f1_max")
DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(a, 2) for a in np.linspace(0, 1, 11))


def _categories(dataset: Any, categories: Sequence[str] | None) -> list[str]:
    from cfviz.evaluation.plan import test_categories

    available = test_categories(dataset)
    if categories is None:
        return available
    bad = [c for c in categories if c not in available]
    if bad:
        raise ValueError(f"categories {bad} have no test images; available: {available}")
    return list(categories)


def metric_values(labels: np.ndarray, scores: np.ndarray, masks: np.ndarray | None, maps: np.ndarray,
                  metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """The requested image/pixel metrics of one setting (pixel metrics need masks with a defect).

    >>> m = metric_values(np.array([0, 1]), np.array([0.1, 0.9]), None, np.zeros((2, 4, 4)), ("image_auroc",))
    >>> m
    {'image_auroc': 1.0}
    """
    from cfviz.metrics import image_metrics, pixel_metrics

    out: dict[str, float] = {}
    if any(m.startswith("image_") for m in metrics):
        vals = image_metrics(labels, scores)
        out.update({m: float(vals[m]) for m in metrics if m in vals})
    if any(m.startswith("pixel_") for m in metrics) and masks is not None and masks.any():
        vals = pixel_metrics(masks, maps)
        out.update({m: float(vals[m]) for m in metrics if m in vals})
    unknown = [m for m in metrics if not m.startswith(("image_", "pixel_"))]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; use names such as {DEFAULT_METRICS}")
    return out


def visual_predictions(store: CaptureStore, dataset: Any, category: str, *, shots: int, seed: int,
                       scoring: ScoringConfig, extraction: ExtractionConfig,
                       masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """M_diff_V alone for one category: ``(labels, scores, maps, masks)`` on the eval grid.

    Maps are normalised and smoothed exactly as in :func:`cfviz.experiments.predict`; the image
    score follows ``scoring.score_rule``.
    """
    from cfviz.evaluation.scoring import VISUAL_RANGES, category_inputs, pooled_diffusion_visual_maps
    from cfviz.fusion import image_scores, normalize_maps, smooth, upsample

    if shots < 1:
        raise ValueError(f"M_diff_V needs k >= 1 normal references; got shots={shots}")
    tests, refs, labels, masks = category_inputs(store, dataset, category, shots, seed, scoring.eval_size, masks)
    raw = pooled_diffusion_visual_maps(store, [r.image_id for r in tests], refs, scoring, extraction)
    bounds = VISUAL_RANGES["diff_visual"]  # used by normalization "inductive" only, as in predict
    norm: Any = scoring.normalization
    maps = smooth(normalize_maps(upsample(raw, scoring.grid), norm, bounds=bounds), scoring.sigma)
    scores = image_scores(maps, scoring.score_rule, topk=scoring.topk)  # type: ignore[arg-type]
    return labels, scores, maps, masks


def matching_pairs(values: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Every (query, reference) pair of ``values``, matched pairs included.

    >>> matching_pairs([100, 400])
    [(100, 100), (100, 400), (400, 100), (400, 400)]
    """
    return [(q, r) for q in values for r in values]


def matching_table(store: CaptureStore, dataset: Any, *, kind: str = "timestep",
                   pairs: Sequence[tuple[Any, Any]] | None = None, categories: Sequence[str] | None = None,
                   shots: int = 1, seeds: Sequence[int] = (0,), scoring: ScoringConfig | None = None,
                   extraction: ExtractionConfig | None = None,
                   metrics: Sequence[str] = DEFAULT_METRICS, width_bridge: str = "none") -> Any:
    """Results of M_diff_V for (query, reference) timestep or block pairs (paper Table 5).

    Parameters
    ----------
    kind:
        ``"timestep"`` (pairs of captured timesteps, block fixed at ``scoring.visual_block``) or
        ``"block"`` (pairs of stored feature blocks, timestep fixed at ``scoring.visual_timestep``,
        default the middle captured one).
    pairs:
        ``(query, reference)`` pairs; default every pair of the captured timesteps, or every pair
        of stored blocks that ``width_bridge`` admits. Blocks may be given by short name
        (``"up1"``) or module path (``"up_blocks.1"``).
    shots, seeds:
        k normal references and the seeds of their draws (one row per seed: the seed is recorded).
    width_bridge:
        Blocks of different widths (:mod:`cfviz.analysis.block_widths`; SD2's ``up_blocks.1``,
        ``.2``, ``.3`` are 1280, 640 and 320 wide): ``"none"`` (default) compares only blocks of
        equal width, so no pair is degraded by a bridge (a given pair of different widths is
        refused); ``"average"`` (ours) adds those pairs, the wider block's adjacent channels
        averaged down to the narrower width (:func:`cfviz.diffusion.mapdiff.match_channels`),
        marked ``bridged``.

    Returns
    -------
    DataFrame with columns category, shots, seed, kind, query, reference, matched, bridged, fixed,
    metric, value (``bridged``: the pair's widths differ and were averaged to match). ``fixed`` names
    what the pairs hold fixed (:func:`matching_fixed`: ``"block up1"`` for timestep pairs,
    ``"timestep 261"`` for block pairs). Metric values are fractions in [0, 1] (figures and tables
    show them in %). Blocks are named by their short names (``up1``;
    :func:`cfviz.capture.naming.module_path` gives ``up_blocks.1``). ``frame.attrs["random_weights"]``
    says whether the store's models have random weights (exports then say so).
    """
    import pandas as pd

    from cfviz.analysis.block_widths import WIDTH_BRIDGES, equal_width_pairs, stored_block_widths
    from cfviz.capture.naming import module_path, short_name, short_names
    from cfviz.errors import CfvizError
    from cfviz.evaluation.scoring import extraction_of, load_masks

    if kind not in ("timestep", "block"):
        raise ValueError(f"kind must be 'timestep' or 'block', got {kind!r}")
    if width_bridge not in WIDTH_BRIDGES:
        raise ValueError(f"width_bridge must be one of {', '.join(WIDTH_BRIDGES)}, got {width_bridge!r}")
    scoring = scoring or ScoringConfig()
    extraction = extraction or extraction_of(store)
    widths: dict[str, int] = {}
    if kind == "block":
        widths = stored_block_widths(store, list(extraction.features))
    if pairs is None and kind == "block" and width_bridge == "none":
        pairs = equal_width_pairs(list(extraction.features), widths)
    elif pairs is None:
        pairs = matching_pairs(list(extraction.timesteps) if kind == "timestep" else list(extraction.features))
    if kind == "block":
        stored = list(extraction.features)

        def resolve(b: Any) -> str | None:
            try:
                return module_path(str(b), stored)
            except CfvizError:
                return None
        bad = sorted({str(b) for p in pairs for b in p if resolve(b) is None})
        if bad:
            raise ValueError(f"blocks {bad} were not stored (stored: {', '.join(short_names(stored))} = "
                             f"{', '.join(stored)}); add them to ExtractionConfig.features and extract into a "
                             "new store")
        pairs = [(resolve(q), resolve(r)) for q, r in pairs]
        bridged = [(short_name(q), short_name(r)) for q, r in pairs if widths[q] != widths[r]]
        if bridged and width_bridge == "none":
            raise ValueError(f"block pairs {bridged} have different widths ({', '.join(f'{short_name(b)}: {widths[b]}' for b in stored)}); "
                             "compare blocks of equal width, or pass width_bridge='average' to average the wider "
                             "block's adjacent channels (ours; it degrades such pairs whatever the hypothesis)")
    fixed = matching_fixed(kind, scoring, extraction)
    rows: list[dict[str, Any]] = []
    for category in _categories(dataset, categories):
        tests = [r for r in dataset.records if r.category == category and r.split == "test"]
        masks = load_masks(dataset, tests, scoring.eval_size) if dataset.has_masks else None
        for seed in seeds:
            for q, r in pairs:
                if kind == "timestep":
                    sc = replace(scoring, visual_timestep=q, reference_timestep=r)
                else:
                    sc = replace(scoring, visual_block=q, reference_block=r)
                labels, scores, maps, _ = visual_predictions(store, dataset, category, shots=shots, seed=seed,
                                                             scoring=sc, extraction=extraction, masks=masks)
                # blocks are shown by their short names (up1), like every figure and the explorer
                qn, rn = (short_name(q), short_name(r)) if kind == "block" else (q, r)
                for metric, value in metric_values(labels, scores, masks, maps, metrics).items():
                    rows.append({"category": category, "shots": shots, "seed": seed, "kind": kind, "query": qn,
                                 "reference": rn, "matched": q == r,
                                 "bridged": kind == "block" and widths[q] != widths[r], "fixed": fixed,
                                 "metric": metric,
                                 "value": value})
    frame = pd.DataFrame(rows)
    frame.attrs["random_weights"] = store_random_weights(store)
    return frame


def matching_fixed(kind: str, scoring: ScoringConfig, extraction: ExtractionConfig) -> str:
    """What a matching table holds fixed: the block of timestep pairs, the timestep of block pairs.

    >>> ex = ExtractionConfig(timesteps=(100, 261, 500))
    >>> matching_fixed("timestep", ScoringConfig(), ex), matching_fixed("block", ScoringConfig(), ex)
    ('block up1', 'timestep 261')
    """
    from cfviz.capture.naming import short_name
    from cfviz.evaluation.config import default_visual_timestep

    if kind == "timestep":
        return "block " + ", ".join(short_name(b) for b in scoring.visual_blocks)
    t = scoring.visual_timestep if scoring.visual_timestep is not None else \
        default_visual_timestep(extraction.timesteps)
    return f"timestep {t}"


def store_random_weights(store: CaptureStore) -> bool:
    """Whether the store's entries come from random-weight models (``tiny``/``random``)."""
    from cfviz.evaluation.config import ModelChoice

    models = store.config.get("models", {})
    return ModelChoice(clip=models.get("clip", "tiny"), diffusion=models.get("diffusion", "tiny")).random_weights


def alpha_sweep(store: CaptureStore, dataset: Any, *, alphas: Sequence[float] = DEFAULT_ALPHAS,
                categories: Sequence[str] | None = None, shots: Sequence[int] = (0, 1), seeds: Sequence[int] = (0,),
                scoring: ScoringConfig | None = None, extraction: ExtractionConfig | None = None,
                metrics: Sequence[str] = DEFAULT_METRICS) -> Any:
    """CLIPFusion results for each CLIP weight ``alpha`` (used for both maps and image scores).

    The branch maps are read once per (category, shots, seed) with
    :func:`cfviz.experiments.predict`; each alpha only re-fuses them. Segmentation metrics
    (``pixel_*``) describe the map ``alpha * M_clip + (1 - alpha) * M_diff``, classification
    metrics (``image_*``) the image score of ``scoring.image_score`` at that alpha: ``"eq9"`` and
    ``"map"`` reduce that map, ``"own"`` is ``alpha * s_clip + (1 - alpha) * s_diff``, ``"cls"``
    the CLS score (flat in alpha).

    Returns
    -------
    DataFrame with columns category, shots, seed, alpha, task ("segmentation"/"classification"),
    metric, value.
    """
    import pandas as pd

    from cfviz.evaluation.scoring import load_masks, predict
    from cfviz.fusion import blend, fuse_components, method_image_scores

    scoring = scoring or ScoringConfig()
    bad = [a for a in alphas if not 0.0 <= float(a) <= 1.0]
    if bad:
        raise ValueError(f"alphas must lie in [0, 1], got {bad}")
    rows: list[dict[str, Any]] = []
    for category in _categories(dataset, categories):
        tests = [r for r in dataset.records if r.category == category and r.split == "test"]
        masks = load_masks(dataset, tests, scoring.eval_size) if dataset.has_masks else None
        for k in shots:
            for seed in (seeds if k else seeds[:1]):
                p = predict(store, dataset, category, "clipfusion", shots=k, seed=seed, scoring=scoring,
                            extraction=extraction, masks=masks)
                for a in alphas:
                    a = float(a)
                    maps = fuse_components(p.components, a, scoring.sigma)
                    own = blend(p.component_scores["clip"], p.component_scores["diff"], a)
                    scores = method_image_scores(scoring.image_score, maps, cls_score=p.cls_scores, own=own,
                                                 score_rule=scoring.score_rule, topk=scoring.topk)
                    for metric, value in metric_values(p.labels, scores, masks, maps, metrics).items():
                        rows.append({"category": category, "shots": k, "seed": seed, "alpha": a,
                                     "task": "segmentation" if metric.startswith("pixel_") else "classification",
                                     "metric": metric, "value": value})
    return pd.DataFrame(rows)


def mean_over_categories(frame: Any, by: Sequence[str], *, label: str = "mean") -> Any:
    """``frame`` plus one row per ``by`` setting whose category is ``label`` (mean over categories, seeds).

    >>> import pandas as pd
    >>> f = pd.DataFrame({"category": ["a", "b"], "alpha": [0.5, 0.5], "metric": ["m", "m"], "value": [0.2, 0.4]})
    >>> mean_over_categories(f, ["alpha", "metric"])["value"].round(2).tolist()
    [0.2, 0.4, 0.3]
    """
    import pandas as pd

    per_cat = frame.groupby(["category", *by], as_index=False)["value"].mean()
    mean = per_cat.groupby(list(by), as_index=False)["value"].mean()
    mean["category"] = label
    return pd.concat([per_cat, mean], ignore_index=True)


#: Scoring-side design choices swept by :func:`design_choices`: setting -> alternatives, the
#: default first. Each is a :class:`~cfviz.evaluation.config.ScoringConfig` field (see the
#: README's "Choices" for where every default comes from); none re-runs a model. An alternative
#: may also be a dict of fields changed together (``visual_block`` below: blocks and pooling).
DESIGN_KNOBS: dict[str, tuple[Any, ...]] = {
    "patchclip_language": ("patches", "mean", "windows"),
    "patchclip_visual": ("patches", "mean", "windows"),
    "normalization": ("dataset", "inductive", "image", "none"),
    "score_rule": ("max", "topk_mean", "mean"),
    "image_score": ("eq9", "map", "cls", "own"),
    "smoothing": ("shared", "own"),
    "sigma": (4.0, 0.0, 8.0),
    "language_layers": (None, "down_blocks.*", "up_blocks.*"),
}
#: Knobs of M_diff_V, so without a setting in zero-shot.
K_SHOT_KNOBS = ("patchclip_visual", "visual_block")

#: What each scoring knob changes: one branch map (``clip_language``, ``clip_visual``, ``diff``: M_diff_L
#: and M_diff_V), the smoothing of final maps (``sigma``), the fusion weight of the segmentation map
#: (``alpha_seg``) or of the image score (``alpha_cls``), whether WinCLIP and AA-CLIP are smoothed
#: (``smoothing``), or the image score alone (``score``); ``any``:
#: maps and scores. :func:`metric_kinds` turns this into the metrics a knob can move.
KNOB_EFFECTS: dict[str, str] = {
    "patchclip_language": "clip_language", "patchclip_visual": "clip_visual", "clip_branch": "any",
    "language_layers": "diff", "language_steps": "diff", "language_min_resolution": "diff", "visual_block": "diff",
    "visual_pooling": "diff", "visual_timestep": "diff", "reference_timestep": "diff", "reference_block": "diff",
    "sigma": "sigma", "smoothing": "smoothing", "alpha_seg": "alpha_seg", "alpha_cls": "alpha_cls",
    "score_rule": "score", "topk": "score", "image_score": "score", "normalization": "any", "eval_size": "any",
}
#: Which map effects each method's image score reads under ``image_score`` "cls" and "own"
#: (under "eq9" and "map" every score is read off the map, so it reads them all).
_SCORE_READS: dict[tuple[str, str], frozenset[str]] = {
    ("own", "clipfusion"): frozenset({"clip_visual", "diff", "sigma", "alpha_cls"}),  # a*s_clip + (1-a)*s_diff
    ("own", "patchclip"): frozenset({"clip_visual"}),  # (CLS + max M_clip_V) / 2, unsmoothed
    ("own", "mapdiff"): frozenset({"diff", "sigma"}),
    ("cls", "mapdiff"): frozenset({"diff", "sigma"}),  # no CLS score: its map's
}
#: Which map effects reach each method's final map.
_MAP_READS: dict[str, frozenset[str]] = {
    "clipfusion": frozenset({"clip_language", "clip_visual", "diff", "sigma", "alpha_seg"}),
    "patchclip": frozenset({"clip_language", "clip_visual", "sigma"}),
    "mapdiff": frozenset({"diff", "sigma"}), "winclip": frozenset({"sigma", "smoothing"}),
    "aaclip": frozenset({"sigma", "smoothing"}),  # smoothing "own" leaves only these two unsmoothed
}


def metric_kinds(knob: str, scoring: ScoringConfig | None = None,
                 methods: Sequence[str] | None = None) -> frozenset[str]:
    """Which kinds of metrics (``"image"``, ``"pixel"``) a scoring knob can move for ``methods`` under ``scoring``.

    A knob that changes a map moves pixel metrics of the methods whose final map holds it, and
    image metrics only where the image-score rule (``scoring.image_score``) reads that map:
    ``patchclip_language`` cannot move image AUROC under ``"cls"`` or ``"own"`` (PatchCLIP's CLS
    score comes from the global embedding), so a sensitivity table or figure should show its
    pixel metrics only. ``methods`` default: every method. The answer is "can", not "does": a
    knob may leave a metric it can move unchanged on some data. A knob not in
    :data:`KNOB_EFFECTS`: both kinds.

    >>> sorted(metric_kinds("patchclip_language", ScoringConfig(image_score="own")))
    ['pixel']
    >>> sorted(metric_kinds("patchclip_language", ScoringConfig(image_score="eq9")))
    ['image', 'pixel']
    >>> sorted(metric_kinds("score_rule")), sorted(metric_kinds("language_layers", methods=["patchclip"]))
    (['image'], [])
    >>> sorted(metric_kinds("normalization", methods=["winclip"]))
    []
    """
    from cfviz.evaluation.config import METHODS, NORMALIZED_METHODS

    scoring = scoring or ScoringConfig()
    effect = KNOB_EFFECTS.get(knob, "any")
    only = {"normalization": NORMALIZED_METHODS, "clip_branch": ("clipfusion", "patchclip")}.get(knob)
    if only is not None and not set(methods or METHODS) & set(only):
        return frozenset()  # WinCLIP and AA-CLIP maps are not normalised, nor do they read the CLIP branch
    if effect in ("any", "score"):
        return frozenset({"image", "pixel"} if effect == "any" else {"image"})
    kinds: set[str] = set()
    for method in methods or METHODS:
        in_map = effect in _MAP_READS.get(method, frozenset())
        if in_map and effect != "alpha_cls":
            kinds.add("pixel")
        rule = scoring.image_score
        if rule == "eq9":  # CLIPFusion's classification map is fused with alpha_cls, not alpha_seg
            reads = (in_map and effect != "alpha_seg") or (effect == "alpha_cls" and method == "clipfusion")
        elif rule == "map":
            reads = in_map
        else:
            reads = effect in _SCORE_READS.get((rule, method), frozenset())
        if reads:
            kinds.add("image")
    return frozenset(kinds)


def metric_kind(metric: str) -> str:
    """``"image"`` or ``"pixel"``: the kind of a metric name (``image_auroc``, ``pixel_aupro``, ...)."""
    return "pixel" if metric.startswith("pixel_") else "image"
#: Extraction-side design choices swept by :func:`extraction_choices` (one store each): setting ->
#: alternatives to the run's value. Each is an :class:`~cfviz.evaluation.config.ExtractionConfig` field.
EXTRACTION_KNOBS: dict[str, tuple[Any, ...]] = {
    "noise": ("per-image",),
    "noise_draws": (2,),
    "state": ("damage,defect,scratch",),
    "language_tokens": ("object", "all"),
    "mask": ("full",),
}


def visual_block_alternatives(blocks: Sequence[str], default: str) -> tuple[Any, ...]:
    """Alternatives of M_diff_V's blocks from the stored ones: the default, every other block alone,
    then all of them pooled by each rule (:func:`cfviz.diffusion.mapdiff.pooled_visual_map`).

    >>> visual_block_alternatives(["up_blocks.1", "up_blocks.2"], "up_blocks.1")[1:]  # doctest: +NORMALIZE_WHITESPACE
    ('up_blocks.2', {'visual_block': 'up_blocks.1,up_blocks.2', 'visual_pooling': 'mean'},
     {'visual_block': 'up_blocks.1,up_blocks.2', 'visual_pooling': 'concat'})
    """
    from cfviz.diffusion.mapdiff import VISUAL_POOLINGS

    blocks = list(blocks)
    alone = [b for b in blocks if b != default]
    pooled = ([{"visual_block": ",".join(blocks), "visual_pooling": p} for p in VISUAL_POOLINGS]
              if len(blocks) > 1 else [])
    return (default, *alone, *pooled)


def _setting_label(name: str, value: Any) -> str:
    """How an alternative is named in tables: ``None`` layers are "all"; field dicts list their values."""
    if isinstance(value, dict):
        parts = [str(v) for k, v in value.items()]
        return parts[0] + "".join(f" ({p})" for p in parts[1:])
    if value is None and name == "language_layers":
        return "all"
    return str(value)


def _alternatives(base: ScoringConfig, name: str, values: Sequence[Any]) -> list[tuple[str, ScoringConfig, bool]]:
    """``(label, config, is_default)`` per alternative of one knob, the base's own value first."""
    out: list[tuple[str, ScoringConfig, bool]] = []
    for v in [getattr(base, name), *values]:
        fields = v if isinstance(v, dict) else {name: v}
        cfg = replace(base, **fields)
        if any(cfg == c for _, c, _ in out):
            continue
        out.append((_setting_label(name, v), cfg, cfg == base))
    return out


def design_choices(store: CaptureStore, dataset: Any, *, knobs: dict[str, Sequence[Any]] | None = None,
                   methods: Sequence[str] = ("clipfusion",), categories: Sequence[str] | None = None,
                   shots: Sequence[int] = (0, 1), seeds: Sequence[int] = (0,), scoring: ScoringConfig | None = None,
                   extraction: ExtractionConfig | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
                   movable_only: bool = False) -> Any:
    """Metrics of every alternative of each scoring-side choice next to the default, from the store.

    With ``movable_only=True`` a knob's rows hold only the metrics it can move for that method
    under ``scoring``'s image-score rule (:func:`metric_kinds`): no image rows for
    ``patchclip_language`` under ``image_score="own"`` or ``"cls"``, no pixel rows for
    ``score_rule``, so a figure of the spread per knob never shows a line that is flat by
    construction. ``False`` (default) keeps every metric of every knob.

    One setting is changed at a time from ``scoring`` (default :class:`ScoringConfig`); its
    value there is the default of the row set. The branch maps of a category are read and
    computed once (:class:`~cfviz.evaluation.scoring.BranchCache`) and reused by every knob
    that changes only what is done with them. Knobs whose alternatives do not apply to a
    setting (``patchclip_visual`` and ``visual_block`` in zero-shot) are skipped there. With
    ``knobs=None`` the knobs are :data:`DESIGN_KNOBS`, plus ``visual_block`` when the store
    holds several feature blocks (:func:`visual_block_alternatives`: each alone, and all pooled);
    on a store without window embeddings (``extraction.clip_windows`` off) PatchCLIP's window
    forms are left out.

    Returns
    -------
    DataFrame with columns knob, setting, default (bool), method, category, shots, seed, metric, value.

    >>> from cfviz.notebooks import setup                                 # doctest: +SKIP
    >>> s = setup(smoke=True)                                             # doctest: +SKIP
    >>> design_choices(s.store, s.dataset, shots=[1]).knob.unique()       # doctest: +SKIP
    array(['patchclip_language', 'patchclip_visual', 'normalization', 'score_rule', 'sigma',
           'language_layers', 'visual_block'], dtype=object)
    """
    import pandas as pd

    from cfviz.evaluation.scoring import BranchCache, extraction_of, load_masks, predict

    base = scoring or ScoringConfig()
    if knobs is None:
        knobs = dict(DESIGN_KNOBS)
        stored_as = extraction or extraction_of(store)
        stored = list(stored_as.features)
        if len(stored) > 1 and base.visual_block in stored:
            knobs["visual_block"] = visual_block_alternatives(stored, base.visual_block)[1:]
        if getattr(stored_as, "clip_windows", None) is False:  # a windowless store (--clip-windows off): patches only
            for name in ("patchclip_language", "patchclip_visual"):
                knobs[name] = tuple(v for v in knobs[name] if v == "patches")
    knobs = dict(knobs)
    for name in knobs:
        if not hasattr(base, name):
            raise ValueError(f"{name!r} is not a ScoringConfig setting; knobs are ScoringConfig fields such as "
                             f"{', '.join(DESIGN_KNOBS)}")
    settings = {name: _alternatives(base, name, values) for name, values in knobs.items()}
    rows: list[dict[str, Any]] = []
    for category in _categories(dataset, categories):
        tests = [r for r in dataset.records if r.category == category and r.split == "test"]
        masks = load_masks(dataset, tests, base.eval_size) if dataset.has_masks else None
        cache = BranchCache()  # raw branch maps once per category, for every knob and setting
        for k in shots:
            for seed in (seeds if k else seeds[:1]):
                for name, configs in settings.items():
                    if name in K_SHOT_KNOBS and not k:
                        continue  # no visual map in zero-shot
                    for label, cfg, is_default in configs:
                        for method in methods:
                            kinds = metric_kinds(name, base, [method]) if movable_only else {"image", "pixel"}
                            wanted = [m for m in metrics if metric_kind(m) in kinds]
                            if not wanted:
                                continue
                            p = predict(store, dataset, category, method, shots=k, seed=seed, scoring=cfg,
                                        extraction=extraction, masks=masks, cache=cache)
                            for metric, value in metric_values(p.labels, p.scores, masks, p.maps, wanted).items():
                                rows.append({"knob": name, "setting": label, "default": is_default,
                                             "method": method, "category": category, "shots": k, "seed": seed,
                                             "metric": metric, "value": value})
    return pd.DataFrame(rows)


def extraction_choices(spec: Any, out_dir: Any, *, knobs: dict[str, Sequence[Any]] | None = None,
                       base_store: Any = None, progress: bool = False) -> Any:
    """Metrics of extraction-side alternatives next to the run's own settings: one store each.

    ``spec`` (a :class:`~cfviz.evaluation.config.RunSpec`) is the default; for every alternative
    of each knob (default :data:`EXTRACTION_KNOBS`: ``ExtractionConfig`` fields) the models run
    into ``out_dir/<knob>-<value>/store`` (reused when run again), and every method, shot and
    seed of ``spec`` is scored. ``base_store`` is the default's store (e.g. a notebook's shared
    store; default ``out_dir/default/store``).

    Returns
    -------
    DataFrame with columns knob, setting, default (bool), method, category, shots, seed, metric,
    value: the same form as :func:`design_choices`, so the two concatenate into one table.
    """
    from pathlib import Path

    import pandas as pd

    from cfviz.evaluation.runner import evaluate

    knobs = dict(EXTRACTION_KNOBS if knobs is None else knobs)
    for name in knobs:
        if not hasattr(spec.extraction, name):
            raise ValueError(f"{name!r} is not an ExtractionConfig setting; knobs are ExtractionConfig fields "
                             f"such as {', '.join(EXTRACTION_KNOBS)}")
    out = Path(out_dir)
    base = evaluate(spec, out / "default", store_dir=base_store or out / "default" / "store", progress=progress)
    frames = []
    for name, values in knobs.items():
        frames.append(base.frame.assign(knob=name, setting=str(getattr(spec.extraction, name)), default=True))
        for v in values:
            if v == getattr(spec.extraction, name):
                continue
            alt = replace(spec, extraction=replace(spec.extraction, **{name: v}))
            folder = out / f"{name}-{str(v).replace(',', '+').replace('/', '_')}"
            result = evaluate(alt, folder, store_dir=folder / "store", progress=progress)
            frames.append(result.frame.assign(knob=name, setting=str(v), default=False))
    cols = ["knob", "setting", "default", "method", "category", "shots", "seed", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
