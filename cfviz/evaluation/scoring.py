"""Stage 2 of an evaluation: maps, fusion and scores from the capture store (no model runs).

:func:`predict` turns the stored per-image outputs of one category into each method's
segmentation maps and image scores, for one k-shot setting and seed:

* ``clipfusion`` — ``alpha * (M_clip_L + M_clip_V) + (1 - alpha) * (M_diff_L + M_diff_V)``
  with ``alpha_seg`` for maps and ``alpha_cls`` for image scores (see :mod:`cfviz.fusion`);
* ``patchclip`` — the CLIP branch alone (M_clip_L [+ M_clip_V]);
* ``mapdiff`` — the diffusion branch alone (M_diff_L [+ M_diff_V]);
* ``winclip`` — WinCLIP (zero-shot) or WinCLIP+ (k-shot) maps as published;
* ``aaclip`` — AA-CLIP adapters as released (needs a store extracted with adapters; see
  :mod:`cfviz.evaluation.aaclip_branch`). ``scoring.clip_branch="aaclip"`` makes AA-CLIP the
  CLIP language branch of ``clipfusion`` and ``patchclip``.

Every map is upsampled to ``eval_size``, normalised (``scoring.normalization``: over the category's
test images by default), fused, then smoothed; the components stay available for notebooks
(failure cases, explorer). One comparison rule holds for every method (issue 20):
``scoring.smoothing`` (``"shared"``: ``sigma`` on every method's final map) and
``scoring.image_score`` (``"eq9"``: the map fused with ``alpha_cls``, or a one-branch method's own
map, reduced by ``score_rule``; :func:`cfviz.fusion.method_image_scores`). ``"own"`` keeps each
method's favourite. :func:`comparison_rule` describes the rule of a run in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import METHODS, ExtractionConfig, ScoringConfig, resolved_pair
from cfviz.fusion import blend, fuse_components, image_scores, method_image_scores, normalize_maps, smooth, upsample


@dataclass
class Predictions:
    """One method's outputs on one category for one (shots, seed) setting.

    Attributes
    ----------
    maps:
        ``(N, S, S)`` final segmentation maps on the ``eval_size`` grid.
    scores:
        ``(N,)`` final image (classification) scores.
    masks:
        ``(N, S, S)`` ground truth on the same grid, or ``None`` for a classification-only set.
    components:
        The normalised branch maps that were fused (``clip_language``, ``clip_visual``,
        ``diff_language``, ``diff_visual``, ``winclip``), each ``(N, S, S)``.
    component_scores:
        Normalised branch image scores (``clip``, ``diff``, ...), each ``(N,)``.
    references:
        Image ids of the k normal references (empty in zero-shot).
    cls_scores:
        ``(N,)`` the method's global (CLS) image score, as ``image_score="cls"`` uses it; ``None``
        for a method without one (MapDiff).
    """

    method: str
    category: str
    shots: int
    seed: int
    image_ids: list[str]
    labels: np.ndarray
    masks: np.ndarray | None
    maps: np.ndarray
    scores: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    component_scores: dict[str, np.ndarray] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    cls_scores: np.ndarray | None = None

    def frame(self) -> Any:
        """One row per image: id, label, defect type, score (handy for failure-case tables)."""
        import pandas as pd

        return pd.DataFrame({"image_id": self.image_ids, "label": self.labels,
                             "defect_type": self.defect_types or [""] * len(self.image_ids),
                             "score": self.scores, "max_map": self.maps.reshape(len(self.maps), -1).max(1)})


def extraction_of(store: CaptureStore) -> ExtractionConfig:
    """The :class:`ExtractionConfig` a store was written with (JSON lists back to tuples)."""
    stored = store.config.get("extraction")
    if stored is None:
        raise KeyError(f"the store at {store.path} records no extraction settings; was it written by "
                       "cfviz.evaluation.extraction?")
    return ExtractionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


class BranchCache:
    """What :func:`predict` reads from the store and computes from it, for one category, kept once.

    The runner scores every (method, shots, seed) of a category with one cache: each test image's
    entry is read once, M_diff_L and the CLIP language maps are computed once, query features and
    embeddings are read once for every reference draw, and a branch map that two methods share
    (M_diff_V of clipfusion and mapdiff) is computed once per draw. Values are exactly what the
    uncached code computes (the same functions on the same inputs). NumPy maps are handed out as
    copies (they are small), so a caller that changes a prediction's arrays cannot change the next
    setting's; tensors (features, embeddings) are shared and only read. ``computed`` counts the
    computations by kind (the tests check "once per category").

    >>> cache = BranchCache()
    >>> a = cache.get("x", ("a",), lambda: np.zeros(2))
    >>> a += 1
    >>> cache.get("x", ("a",), lambda: 1 / 0), dict(cache.computed)
    (array([0., 0.]), {'x': 1})
    """

    def __init__(self) -> None:
        from collections import Counter

        self._memo: dict[tuple[str, Any], Any] = {}
        self.computed: Counter[str] = Counter()

    def get(self, kind: str, key: Any, compute: Any) -> Any:
        """``compute()`` the first time ``(kind, key)`` is asked for, the kept value afterwards."""
        k = (kind, key)
        if k not in self._memo:
            self._memo[k] = compute()
            self.computed[kind] += 1
        value = self._memo[k]
        if isinstance(value, tuple):
            return tuple(v.copy() if isinstance(v, np.ndarray) else v for v in value)
        return value.copy() if isinstance(value, np.ndarray) else value


def _memo(cache: BranchCache | None, context: Any = None) -> Any:
    """``cache.get`` with ``context`` added to every key, or a pass-through that computes every time.

    :func:`predict` passes its (frozen, hashable) scoring and extraction settings as the context,
    so a cache reused with other settings never hands out a map computed under different ones.
    """
    if cache is None:
        return lambda kind, key, compute: compute()
    return lambda kind, key, compute: cache.get(kind, (context, key), compute)


# ---------------------------------------------------------------------------------- the comparison rule
def comparison_rule(scoring: ScoringConfig, pair: dict[str, Any] | ExtractionConfig | None = None, *,
                    k_shot: bool = True) -> dict[str, str]:
    """The run-level settings every method is scored under, in words: ``setting -> description``.

    The runner prints them in ``summary.md`` and keeps them in ``run.json``. ``pair``
    (:func:`visual_pair`, of a run that scores M_diff_V) adds the (timestep, block) pair; the
    older form, extraction settings (and ``k_shot``), adds theirs.

    >>> rule = comparison_rule(ScoringConfig(), visual_pair(ScoringConfig(), ExtractionConfig(timesteps=(50, 400, 261))))
    >>> print(rule["smoothing"])
    Gaussian sigma 4 px on every method's final map (shared)
    >>> rule["M_diff_V pair"]
    'query t=261 up_blocks.1, reference t=261 up_blocks.1'
    """
    from cfviz.evaluation.config import NATIVE, NATIVE_WORKING_GRID

    s = scoring
    if s.smoothing == "shared":
        smoothing = f"Gaussian sigma {s.sigma:g} px on every method's final map (shared)"
    else:
        smoothing = (f"each method's own (own): sigma {s.sigma:g} px on CLIPFusion, PatchCLIP and MapDiff; WinCLIP "
                     "unsmoothed as published; AA-CLIP its released blur only")
    norm = {"dataset": "min-max over each category's test maps (dataset; transductive)",
            "inductive": ("inductive: k-shot, language maps scaled by their range on the k references, visual maps "
                          "by their fixed distance range; zero-shot, each map alone; image scores kept as they are"),
            "image": "min-max of each map alone (image); image scores min-max over the category",
            "reference": "z-score against the references' maps (reference)",
            "none": "none"}[s.normalization]
    reduce = "max" if s.score_rule == "max" else (f"mean of the top {100 * s.topk:g} %" if s.score_rule == "topk_mean"
                                                  else "mean")
    score = {"eq9": (f"{reduce} of the classification map (eq9): CLIPFusion's maps fused with alpha_cls "
                     f"{s.alpha_cls:g} (paper eq. 9), every other method its own map"),
             "map": f"{reduce} of every method's final (segmentation) map (map)",
             "cls": f"the global (CLS) score of every method that has one (cls); MapDiff the {reduce} of its map",
             "own": "each method's own rule (own)"}[s.image_score]
    if s.eval_size == NATIVE:
        grid = f"each mask at its own size (native); maps fused on {NATIVE_WORKING_GRID} px, then resized bilinearly"
    else:
        grid = f"{s.grid} x {s.grid} px: masks resized nearest-neighbour, maps bilinearly"
    out = {"smoothing": smoothing, "normalization before fusion": norm, "image score": score,
           "evaluation grid": grid}
    if isinstance(pair, ExtractionConfig) or not k_shot:  # the older form: extraction settings and k_shot
        pair = visual_pair(s, pair) if k_shot else None
    if pair is not None:
        out["M_diff_V pair"] = (f"query t={pair['query_timestep']} {pair['query_block']}, "
                                f"reference t={pair['reference_timestep']} {pair['reference_block']}")
    return out


# ---------------------------------------------------------------------------------- raw branch maps
def visual_pair(scoring: ScoringConfig, extraction: ExtractionConfig) -> dict[str, Any]:
    """The (timestep, block) pairs M_diff_V compares, named: query and reference side.

    The runner writes it into ``run.json`` and ``summary.md``, so a table always says which pair
    its k-shot diffusion numbers come from.

    >>> visual_pair(ScoringConfig(), ExtractionConfig(timesteps=(50, 400, 261)))
    {'query_timestep': 261, 'query_block': 'up_blocks.1', 'reference_timestep': 261, 'reference_block': 'up_blocks.1'}
    """
    t_q, b_q, t_r, b_r = resolved_pair(scoring, extraction)
    return {"query_timestep": t_q, "query_block": b_q, "reference_timestep": t_r, "reference_block": b_r}


def _step_index(entry: Any, timestep: Any) -> int:
    ts = [float(t) for t in entry.timesteps]
    if float(timestep) not in ts:
        raise KeyError(f"{entry.image_id}: timestep {timestep} was not captured; captured: {ts}")
    return ts.index(float(timestep))


def diffusion_language_maps(store: CaptureStore, ids: Sequence[str], scoring: ScoringConfig,
                            extraction: ExtractionConfig | None = None) -> np.ndarray:
    """M_diff_L for each image: ``(N, h, w)`` at the finest resolution used.

    Layers: ``scoring.language_layers`` (default all) at ``language_min_resolution`` or finer.
    With an ensemble of [state] words (``extraction.state`` with commas, ``language_tokens``
    ``"state"``), each state is averaged first and the states weigh equally
    (:func:`cfviz.diffusion.mapdiff.state_groups`).
    """
    from cfviz.diffusion.mapdiff import language_map, state_groups
    from cfviz.evaluation.prompt_tokens import language_words

    extraction = extraction or extraction_of(store)
    ensemble = extraction.language_tokens == "state" and len(extraction.states) > 1
    out = []
    for image_id in ids:
        entry = store[image_id]
        cache = entry.cache(blocks=[])
        steps = None
        if scoring.language_steps is not None:
            steps = [_step_index(entry, t) for t in scoring.language_steps]
        # a store with every prompt token (extraction.tokens="all") lists the language words first:
        # M_diff_L averages those only, as a store of the language words alone does
        tokens: Any = language_words(entry)
        if ensemble:
            recorded = tokens if tokens is not None else list(cache.labels)
            tokens = state_groups(extraction.states, recorded) or tokens
        out.append(language_map(cache, tokens=tokens, layers=scoring.language_layers_list,
                                min_resolution=scoring.language_min_resolution, steps=steps)[0].numpy())
    return np.stack(out)


def diffusion_features(store: CaptureStore, ids: Sequence[str], block: str, timestep: Any) -> Any:
    """Feature maps ``(N, C, h, w)`` of one block at one timestep, read lazily per image."""
    import torch

    feats = []
    for image_id in ids:
        entry = store[image_id]
        name = f"feat/{block}"
        if name not in entry.names:
            stored = [n[5:] for n in entry.names if n.startswith("feat/")]
            if entry.meta.get("form") == "compact":
                from cfviz.evaluation.compact_form import CompactStoreError

                raise CompactStoreError(f"{image_id}: the compact capture store {store.path} keeps no UNet "
                                        "features (compaction replaced them by M_diff_V maps); extract into "
                                        "another store with {store_form} full to keep them", "store_form")
            raise KeyError(f"{image_id}: no feature maps of {block!r} in the store (stored blocks: {stored}); "
                           "add it to the extraction's features and re-run extraction into a new store")
        feats.append(entry[name][_step_index(entry, timestep)].float())
    return torch.stack(feats)


def diffusion_visual_maps(store: CaptureStore, ids: Sequence[str], ref_ids: Sequence[str], scoring: ScoringConfig,
                          extraction: ExtractionConfig, cache: BranchCache | None = None) -> np.ndarray:
    """M_diff_V: ``(N, h, w)`` nearest-neighbour distance to the references' features.

    Query and reference timestep/block default to matched; set ``reference_timestep`` /
    ``reference_block`` (and ``visual_timestep`` / ``visual_block``) for the matching ablation.
    With a ``cache``, the query features are read once for every reference draw. A compact store
    (:mod:`cfviz.evaluation.compact`) holds these maps instead of the test images' features:
    they are read back as stored (the same float32 values).
    """
    from cfviz.diffusion.mapdiff import visual_map
    from cfviz.evaluation.compact_form import stored_visual_maps

    memo = _memo(cache)
    t_q, b_q, t_r, b_r = pair = resolved_pair(scoring, extraction)
    stored = stored_visual_maps(store, ids, ref_ids, pair)
    if stored is not None:
        return stored
    refs = diffusion_features(store, ref_ids, b_r, t_r)
    query = memo("diff_features", (tuple(ids), b_q, float(t_q)), lambda: diffusion_features(store, ids, b_q, t_q))
    return visual_map(query, refs).numpy()


def pooled_diffusion_visual_maps(store: CaptureStore, ids: Sequence[str], ref_ids: Sequence[str],
                                 scoring: ScoringConfig, extraction: ExtractionConfig,
                                 cache: BranchCache | None = None) -> np.ndarray:
    """M_diff_V over ``scoring.visual_block``'s blocks (comma-separated), pooled by ``visual_pooling``.

    One block is :func:`diffusion_visual_maps` itself. Several: ``"mean"`` averages each block's
    :func:`diffusion_visual_maps` (so a compact store's per-block maps serve too) on the finest
    grid; ``"concat"`` reads each block's features for one joint nearest-neighbour search
    (:func:`cfviz.diffusion.mapdiff.pooled_visual_map`).
    """
    from dataclasses import replace

    import torch

    from cfviz.diffusion.mapdiff import mean_on_finest_grid, pooled_visual_map

    blocks, ref_blocks = scoring.visual_blocks, scoring.reference_blocks
    if len(blocks) == 1:
        one = replace(scoring, visual_block=blocks[0], reference_block=scoring.reference_block and ref_blocks[0])
        return diffusion_visual_maps(store, ids, ref_ids, one, extraction, cache)
    if scoring.visual_pooling == "mean":
        maps = [torch.from_numpy(diffusion_visual_maps(store, ids, ref_ids,
                                                       replace(scoring, visual_block=b, reference_block=r),
                                                       extraction, cache)) for b, r in zip(blocks, ref_blocks)]
        return mean_on_finest_grid(maps).numpy()
    memo = _memo(cache)
    t_q, _, t_r, _ = resolved_pair(scoring, extraction)
    query = [memo("diff_features", (tuple(ids), b, float(t_q)), lambda b=b: diffusion_features(store, ids, b, t_q))
             for b in blocks]
    refs = [diffusion_features(store, ref_ids, r, t_r) for r in ref_blocks]
    return pooled_visual_map(query, refs, "concat").numpy()


def clip_embeddings(store: CaptureStore, ids: Sequence[str]) -> dict[str, Any]:
    """The stored CLIP embeddings of the images, stacked: ``name -> (N, ...)`` float32."""
    import torch

    per: dict[str, list[Any]] = {}
    for image_id in ids:
        entry = store[image_id]
        names = [n for n in entry.names if n.startswith("clip_emb/")]
        for name, t in entry.load(names).items():
            per.setdefault(name, []).append(t.float())
    return {k: torch.stack(v) for k, v in per.items()}


# ---------------------------------------------------------------------------------- predictions
#: Fixed ranges of the visual (distance) maps, used by ``normalization="inductive"``: WinCLIP's visual
#: association score (1 - cos) / 2 for M_clip_V, the cosine distance 1 - cos for M_diff_V.
VISUAL_RANGES: dict[str, tuple[float, float]] = {"clip_visual": (0.0, 1.0), "diff_visual": (0.0, 2.0)}


def _norm(x: np.ndarray, scoring: ScoringConfig, reference: np.ndarray | None = None,
          bounds: tuple[float, float] | None = None) -> np.ndarray:
    method = scoring.normalization
    if np.ndim(x) < 2:
        if method == "inductive":  # an image score is kept as it is (CLS scores are probabilities)
            return np.asarray(x, dtype=np.float32)
        if method == "image":  # an image score has no pixels of its own: min-max over the set
            method = "dataset"
    return normalize_maps(x, method, reference=reference, bounds=bounds)  # type: ignore[arg-type]


def predict(store: CaptureStore, dataset: Any, category: str, method: str, *, shots: int = 0, seed: int = 0,
            scoring: ScoringConfig | None = None, extraction: ExtractionConfig | None = None,
            masks: np.ndarray | None = None, cache: BranchCache | None = None,
            references: Sequence[str] | None = None) -> Predictions:
    """Maps and image scores of ``method`` on the test images of ``category``, from the store.

    Parameters
    ----------
    store:
        A capture store holding every test image of the category and the references drawn.
    dataset:
        The data set (split "all" or one holding test images and, for k-shot, train images).
    shots, seed:
        k normal references drawn with :func:`cfviz.data.samples.sample_references`.
    references:
        The ids of those k references, when drawn already (a run's plan); drawn here otherwise.
    masks:
        Ground-truth masks on the ``eval_size`` grid (loaded from the data set when ``None``).
    cache:
        A :class:`BranchCache` shared by every call for this category (and these scoring and
        extraction settings): store reads and branch maps are then computed once, not once per
        method, shots and seed. The results are the same with or without it.
    """
    from cfviz.evaluation import aaclip_branch, clip_branch

    scoring = scoring or ScoringConfig()
    extraction = extraction or extraction_of(store)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    tests, refs, labels, masks = category_inputs(store, dataset, category, shots, seed, scoring.eval_size, masks,
                                                 references)
    ids = [r.image_id for r in tests]
    size = scoring.grid  # eval_size, or the working grid when pixel metrics use each mask's own size

    comps: dict[str, np.ndarray] = {}
    comp_scores: dict[str, np.ndarray] = {}
    need_clip = method in ("clipfusion", "patchclip")
    need_diff = method in ("clipfusion", "mapdiff")
    emb = ref_emb = None
    memo = _memo(cache, (scoring, extraction))  # every key carries the settings it was computed under
    key, ref_key = tuple(ids), tuple(refs)
    # inductive normalisation, k-shot: each language map is scaled by its range on the k references
    by_refs = scoring.normalization == "inductive" and bool(shots)
    cls_score: np.ndarray | None = None  # the method's global (CLS) image score, if it has one
    if method == "winclip" or (need_clip and shots):
        emb = memo("clip_embeddings", key, lambda: clip_embeddings(store, ids))
        ref_emb = memo("clip_embeddings", ref_key, lambda: clip_embeddings(store, refs)) if shots else None
    if need_clip:
        if scoring.clip_branch == "aaclip":  # AA-CLIP's pixel map and image score, as method "aaclip" has them
            amap, det = memo("aaclip", key, lambda: aaclip_branch.stored(store, ids))
            lang_px = aaclip_branch.upsample(amap, size, scoring.aaclip_upsample)
            img, cls_score = aaclip_branch.image_scores(lang_px, det), det
            ref_px = None
            if by_refs:
                ref_amap = memo("aaclip", ref_key, lambda: aaclip_branch.stored(store, refs))[0]
                ref_px = aaclip_branch.upsample(ref_amap, size, scoring.aaclip_upsample)
        else:
            form = scoring.patchclip_language
            lang, img = memo("clip_language", (key, form), lambda: clip_branch.stored_language(store, ids, form))
            cls_score = img
            lang_px = upsample(lang, size)
            ref_px = upsample(memo("clip_language", (ref_key, form),
                                   lambda: clip_branch.stored_language(store, refs, form))[0], size) if by_refs else None
        comps["clip_language"] = _norm(lang_px, scoring, reference=ref_px)
        clip_score = img
        if shots:
            vis, vis_img = memo("clip_visual", (key, ref_key, extraction.scales, scoring.patchclip_visual),
                                lambda: clip_branch.visual(emb, ref_emb, extraction, scoring.patchclip_visual))
            comps["clip_visual"] = _norm(upsample(vis, size), scoring, bounds=VISUAL_RANGES["clip_visual"])
            clip_score = clip_branch.combine_image_scores(img, vis_img)
        comp_scores["clip"] = _norm(clip_score, scoring)
    sigma = scoring.sigma
    if need_diff:
        lang_key = (key, scoring.language_steps, scoring.language_min_resolution, scoring.language_layers)
        diff_lang = memo("diff_language", lang_key, lambda: diffusion_language_maps(store, ids, scoring, extraction))
        ref_diff_lang = memo("diff_language", (ref_key, *lang_key[1:]),
                             lambda: diffusion_language_maps(store, refs, scoring, extraction)) if by_refs else None
        comps["diff_language"] = _norm(upsample(diff_lang, size), scoring,
                                       reference=None if ref_diff_lang is None else upsample(ref_diff_lang, size))
        if shots:
            vis_key = (key, ref_key, scoring.visual_timestep, scoring.reference_timestep, scoring.visual_block,
                       scoring.reference_block, extraction.timesteps)
            diff_vis = memo("diff_visual", (vis_key, scoring.visual_pooling),
                            lambda: pooled_diffusion_visual_maps(store, ids, refs, scoring, extraction, cache))
            comps["diff_visual"] = _norm(upsample(diff_vis, size), scoring, bounds=VISUAL_RANGES["diff_visual"])
        diff_map = smooth(comps["diff_language"] + comps.get("diff_visual", 0.0), sigma)  # MapDiff's map
        diff_img = image_scores(diff_map, scoring.score_rule, topk=scoring.topk)  # type: ignore[arg-type]
        comp_scores["diff"] = _norm(diff_img, scoring)

    # smoothing="shared": sigma on every method's final map; "own": WinCLIP and AA-CLIP as released
    own_sigma = 0.0 if scoring.smoothing == "own" else sigma
    cls_map = None  # the classification map when it is not the segmentation map (CLIPFusion's eq. 9)
    if method == "winclip":
        zero_shot = memo("winclip_zero_shot", key, lambda: clip_branch.stored_winclip(store, ids))
        wmap, wscore = memo("winclip", (key, ref_key, extraction.scales),
                            lambda: clip_branch.winclip_from(zero_shot, emb, ref_emb, extraction))
        comps["winclip"] = upsample(wmap, size)
        maps, own = smooth(comps["winclip"], own_sigma), wscore
        cls_score = zero_shot[1].numpy()  # WinCLIP's zero-shot image score
    elif method == "clipfusion":
        maps = fuse_components(comps, scoring.alpha_seg, sigma)
        if scoring.image_score == "eq9":
            cls_map = fuse_components(comps, scoring.alpha_cls, sigma)
        own = blend(comp_scores["clip"], comp_scores["diff"], scoring.alpha_cls)
    elif method == "aaclip":
        amap, det = memo("aaclip", key, lambda: aaclip_branch.stored(store, ids))
        comps["aaclip"] = aaclip_branch.upsample(amap, size, scoring.aaclip_upsample)
        maps, own, cls_score = smooth(comps["aaclip"], own_sigma), aaclip_branch.image_scores(comps["aaclip"], det), det
    elif method == "patchclip":
        maps = smooth(comps["clip_language"] + comps.get("clip_visual", 0.0), sigma)
        own = comp_scores["clip"]
    else:  # mapdiff: the diffusion branch's map and image score above
        maps, own = diff_map, diff_img
    scores = method_image_scores(scoring.image_score, maps, cls_map=cls_map, cls_score=cls_score, own=own,
                                 score_rule=scoring.score_rule, topk=scoring.topk)
    return Predictions(method=method, category=category, shots=shots, seed=seed, image_ids=ids, labels=labels,
                       masks=masks, maps=np.asarray(maps, dtype=np.float32), scores=np.asarray(scores, np.float32),
                       components=comps, component_scores=comp_scores, references=refs,
                       defect_types=[r.defect_type for r in tests],
                       cls_scores=None if cls_score is None else np.asarray(cls_score, np.float32))


def category_inputs(store: CaptureStore, dataset: Any, category: str, shots: int, seed: int, eval_size: int | str,
                    masks: np.ndarray | None = None, references: Sequence[str] | None = None) -> tuple:
    """``(test records, reference ids, labels, masks)`` of one category and draw (drawn, and masks
    loaded, unless given: a run passes its plan's references), every image in the store."""
    from cfviz.data.samples import sample_references

    tests = [r for r in dataset.records if r.category == category and r.split == "test"]
    if not tests:
        raise ValueError(f"no test images of category {category!r} in the data set")
    if references is None:
        references = [r.image_id for r in sample_references(dataset, category, shots, seed)] if shots else []
    missing = store.missing([r.image_id for r in tests] + list(references))
    if missing:
        raise KeyError(f"{len(missing)} images are not in the store yet (e.g. {missing[:3]}); run extraction first")
    if masks is None and dataset.has_masks:
        masks = load_masks(dataset, tests, eval_size)
    return tests, list(references), np.array([r.label for r in tests], dtype=np.int64), masks


def annotated_masks(dataset: Any, records: Sequence[Any], size: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Masks of ``records`` on a ``size`` grid, and which records have one.

    An anomalous image whose mask file was missing (``missing_masks="warn"``) has mask ``None``:
    it gets zeros here and ``False`` in the second array, so pixel metrics can leave out just
    that image (see :mod:`cfviz.data.samples`) instead of the whole category. ``size="native"``
    keeps each mask at its own size (:class:`~cfviz.metrics.native.NativeMasks`; zeros of the
    image's size for a missing one).
    """
    from cfviz.data.transforms import resize_mask

    out, annotated = [], []
    for rec in records:
        sample = dataset.load(rec)
        mask = sample.mask
        annotated.append(mask is not None)
        if size == "native":  # a missing mask: zeros of the image's own size
            hw = np.shape(sample.image if mask is None else mask)[:2]
            out.append(np.zeros(hw, np.uint8) if mask is None else resize_mask(mask, hw))
        else:
            out.append(np.zeros((size, size), np.uint8) if mask is None else resize_mask(mask, size))
    if size == "native":
        from cfviz.metrics.native import NativeMasks

        return NativeMasks.from_list(out), np.array(annotated, dtype=bool)
    return np.stack(out).astype(np.uint8), np.array(annotated, dtype=bool)


def load_masks(dataset: Any, records: Sequence[Any], size: int | str) -> np.ndarray | None:
    """Ground-truth masks of ``records`` on a ``size`` grid (nearest neighbour); None if any is missing.

    ``size="native"``: each mask at its own size (:class:`~cfviz.metrics.native.NativeMasks`).
    """
    masks, annotated = annotated_masks(dataset, records, size)
    return masks if annotated.all() else None
