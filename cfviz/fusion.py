"""Map normalisation and alpha fusion of the CLIP and diffusion branches.

CLIPFusion (Lee et al., TMLR 2025, eqs. 4 and 9) fuses four maps::

    M = alpha * (M_clip_L + M_clip_V) + (1 - alpha) * (M_diff_L + M_diff_V)

with alpha = 0.25 for segmentation and 0.75 for classification; zero-shot uses the language
maps only (the visual maps are absent). The paper does not say how maps of different ranges are
made comparable, nor how an image score is taken from a map. Here:

* every map is first brought to one grid (bilinear upsampling to the evaluation size);
* then to a comparable range by :func:`normalize_maps`. Default ``"dataset"``: min-max over all
  maps of the evaluated set (per category) — transductive, as AA-CLIP's evaluation normalises
  per class. Alternatives: ``"inductive"`` (ours: min-max against the range of the same map on
  the k normal references, or a fixed range, or, with neither, each map alone: no other test
  image is used), ``"image"`` (per-image min-max; loses cross-image comparability, bad for
  classification), ``"reference"`` (z-score against the same map computed on the k normal
  reference images; k-shot only, inductive), ``"none"``;
* a map is reduced to a number by :func:`image_scores`: ``"max"`` (default), ``"topk_mean"``
  (mean of the top fraction of pixels) or ``"mean"``;
* optional Gaussian smoothing (``sigma`` in pixels of the evaluation grid) after fusion.

Classification: the paper's eq. 9 is eq. 4's fusion with alpha = 0.75. How an image score is then
taken is one rule for every method (:data:`IMAGE_SCORES`, :func:`method_image_scores`); the
default ``"eq9"`` reduces the map fused with the classification alpha (a one-branch method: its
own map). ``"own"`` keeps each method's favourite, for CLIPFusion the score fusion
``s = alpha * s_clip + (1 - alpha) * s_diff`` (``s_clip`` the CLIP branch's image score, ``s_diff``
the image score of the diffusion map, both normalised over the set): cfviz's rule before issue 20.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np

Normalization = Literal["dataset", "image", "reference", "none", "inductive"]
ScoreRule = Literal["max", "topk_mean", "mean"]
ImageScore = Literal["eq9", "map", "cls", "own"]

#: The image-score rules every method follows alike (``ScoringConfig.image_score``):
#: ``eq9`` the classification map (fused with alpha_cls; a one-branch method's own map) reduced by
#: the score rule; ``map`` the segmentation map reduced by it; ``cls`` the global (CLS) score,
#: the map's where a method has none; ``own`` each method's favourite.
IMAGE_SCORES: tuple[str, ...] = ("eq9", "map", "cls", "own")

ALPHA_SEGMENTATION = 0.25
ALPHA_CLASSIFICATION = 0.75


def upsample(maps: Any, size: int | tuple[int, int], mode: str = "bilinear", *,
             align_corners: bool = False) -> np.ndarray:
    """Resize ``(N, h, w)`` maps to ``size`` (float32 NumPy). Torch does the interpolation; ``align_corners``
    applies to bilinear and bicubic (AA-CLIP's released maps use ``True``).

    >>> upsample(np.ones((2, 4, 4)), 8).shape
    (2, 8, 8)
    """
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if t.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {tuple(t.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    if tuple(t.shape[-2:]) == (h, w):
        return t.numpy()
    kwargs = {"align_corners": align_corners} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(t[:, None], size=(h, w), mode=mode, **kwargs)[:, 0].numpy()


def normalize_maps(maps: np.ndarray, method: Normalization = "dataset", *, reference: np.ndarray | None = None,
                   bounds: tuple[float, float] | None = None, eps: float = 1e-12) -> np.ndarray:
    """Bring ``(N, h, w)`` maps (or ``(N,)`` scores) to a comparable range.

    Parameters
    ----------
    method:
        ``"dataset"``: (x - min) / (max - min) over all N maps together; ``"image"``: the same per
        map; ``"reference"``: (x - mean) / std of ``reference`` (maps of normal references);
        ``"inductive"``: (x - lo) / (hi - lo) with the min and max of ``reference`` (maps of
        normal references), else with ``bounds`` (a fixed range), else per map (``"image"``);
        ``"none"``: unchanged.

    >>> normalize_maps(np.array([[1.0, 3.0], [5.0, 9.0]]), "dataset").tolist()
    [[0.0, 0.25], [0.5, 1.0]]
    >>> normalize_maps(np.array([[1.0, 3.0], [5.0, 9.0]]), "inductive", reference=np.array([1.0, 5.0])).tolist()
    [[0.0, 0.5], [1.0, 2.0]]
    """
    x = np.asarray(maps, dtype=np.float32)
    if method == "none":
        return x
    if method == "inductive":
        if reference is not None and np.asarray(reference).size:
            ref = np.asarray(reference, dtype=np.float32)
            lo, hi = float(ref.min()), float(ref.max())
        elif bounds is not None:
            lo, hi = float(bounds[0]), float(bounds[1])
        else:
            method = "image"
    if method == "dataset":
        lo, hi = float(x.min()), float(x.max())
    if method in ("inductive", "dataset"):
        return (x - lo) / max(hi - lo, eps)
    if method == "image":
        if x.ndim < 2:
            raise ValueError("image normalisation needs maps of shape (N, h, w)")
        axes = tuple(range(1, x.ndim))
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        return (x - lo) / np.maximum(hi - lo, eps)
    if method == "reference":
        if reference is None or np.asarray(reference).size == 0:
            raise ValueError("normalization='reference' needs the same maps computed on normal reference "
                             "images (k-shot); use 'dataset' in zero-shot")
        ref = np.asarray(reference, dtype=np.float32)
        return (x - float(ref.mean())) / max(float(ref.std()), eps)
    raise ValueError(f"normalization must be 'dataset', 'image', 'reference', 'inductive' or 'none', got {method!r}")


def fuse(clip: Mapping[str, np.ndarray | None], diffusion: Mapping[str, np.ndarray | None], alpha: float) -> np.ndarray:
    """``alpha * sum(clip maps) + (1 - alpha) * sum(diffusion maps)``; ``None`` maps are absent.

    Parameters
    ----------
    clip, diffusion:
        ``{"language": M_L, "visual": M_V}`` per branch, each ``(N, H, W)`` on one grid and in a
        comparable range (see :func:`normalize_maps`); ``"visual"`` is ``None`` in zero-shot.
    alpha:
        Weight of the CLIP branch in [0, 1].

    >>> m = fuse({"language": np.ones((1, 2, 2)), "visual": None}, {"language": np.zeros((1, 2, 2))}, 0.25)
    >>> float(m[0, 0, 0])
    0.25
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")

    def total(branch: Mapping[str, np.ndarray | None], name: str) -> np.ndarray:
        present = [np.asarray(m, dtype=np.float32) for m in branch.values() if m is not None]
        if not present:
            raise ValueError(f"the {name} branch has no map; pass at least its language map")
        shapes = {m.shape for m in present}
        if len(shapes) > 1:
            raise ValueError(f"{name} maps differ in shape {sorted(shapes)}; upsample them to one grid first")
        return np.sum(present, axis=0)

    c, d = total(clip, "CLIP"), total(diffusion, "diffusion")
    if c.shape != d.shape:
        raise ValueError(f"CLIP maps {c.shape} and diffusion maps {d.shape} differ; upsample to one grid first")
    return float(alpha) * c + (1.0 - float(alpha)) * d


#: The branch maps :func:`fuse_components` fuses, by the names :class:`~cfviz.evaluation.scoring.Predictions`
#: gives them (``components``): CLIP branch, diffusion branch.
CLIP_KEYS = ("clip_language", "clip_visual")
DIFF_KEYS = ("diff_language", "diff_visual")


def fuse_components(components: Mapping[str, np.ndarray], alpha: float, sigma: float = 0.0) -> np.ndarray:
    """:func:`fuse` of the maps named in :data:`CLIP_KEYS` and :data:`DIFF_KEYS` (absent ones skipped),
    then :func:`smooth`: CLIPFusion's map, as the runner scores it and the explorer redraws it.

    >>> c = {"clip_language": np.ones((1, 2, 2)), "diff_language": np.zeros((1, 2, 2))}
    >>> float(fuse_components(c, 0.25)[0, 0, 0])
    0.25
    """
    clip, diff = ({k.split("_", 1)[1]: components.get(k) for k in keys} for keys in (CLIP_KEYS, DIFF_KEYS))
    return smooth(fuse(clip, diff, alpha), sigma)


def blend(clip: Any, diff: Any, alpha: float) -> Any:
    """``alpha * clip + (1 - alpha) * diff`` in the inputs' own precision (floats, arrays).

    Fusion of what each branch already summed: CLIPFusion's score fusion (``s_clip``, ``s_diff``;
    image score ``"own"``) and the explorer's maps at another weight from the smoothed branch sums.

    >>> blend(1.0, 0.0, 0.75)
    0.75
    """
    return alpha * clip + (1 - alpha) * diff


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each ``(h, w)`` map with ``sigma`` pixels (0 = unchanged)."""
    if sigma <= 0:
        return np.asarray(maps, dtype=np.float32)
    from scipy.ndimage import gaussian_filter

    x = np.asarray(maps, dtype=np.float32)
    return gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (sigma, sigma), mode="nearest")


def image_scores(maps: np.ndarray, rule: ScoreRule = "max", *, topk: float = 0.01) -> np.ndarray:
    """One score per ``(h, w)`` map: its maximum, the mean of its top ``topk`` fraction, or its mean.

    >>> image_scores(np.arange(8.0).reshape(2, 2, 2), "topk_mean", topk=0.5).tolist()
    [2.5, 6.5]
    """
    x = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    if rule == "max":
        return x.max(axis=1)
    if rule == "mean":
        return x.mean(axis=1)
    if rule == "topk_mean":
        if not 0 < topk <= 1:
            raise ValueError(f"topk must be a fraction in (0, 1], got {topk}")
        k = max(1, int(round(topk * x.shape[1])))
        return np.sort(x, axis=1)[:, -k:].mean(axis=1)
    raise ValueError(f"image score rule must be 'max', 'topk_mean' or 'mean', got {rule!r}")


def method_image_scores(rule: ImageScore | str, seg_map: np.ndarray, *, cls_map: np.ndarray | None = None,
                        cls_score: np.ndarray | None = None, own: np.ndarray | None = None,
                        score_rule: ScoreRule | str = "max", topk: float = 0.01) -> np.ndarray:
    """One method's image scores ``(N,)`` under one of :data:`IMAGE_SCORES`, the same for every method.

    Parameters
    ----------
    seg_map:
        ``(N, h, w)`` the method's final (segmentation) maps.
    cls_map:
        The maps fused with the classification weight (CLIPFusion's eq. 9); ``None``: ``seg_map``.
    cls_score:
        The method's global image score (PatchCLIP's CLS score, WinCLIP's zero-shot image score,
        AA-CLIP's detection score); ``None`` for a method without one (MapDiff: ``"cls"`` then
        reduces its map).
    own:
        The method's own favourite score (needed by ``"own"``).

    >>> m = np.arange(8.0).reshape(2, 2, 2)
    >>> method_image_scores("map", m).tolist(), method_image_scores("cls", m, cls_score=np.array([0.5, 0.25])).tolist()
    ([3.0, 7.0], [0.5, 0.25])
    """
    if rule == "own":
        if own is None:
            raise ValueError("image score rule 'own' needs the method's own scores")
        return np.asarray(own, dtype=np.float32)
    if rule == "cls" and cls_score is not None:
        return np.asarray(cls_score, dtype=np.float32)
    reduce = cast(ScoreRule, score_rule)  # image_scores checks it
    if rule == "eq9" and cls_map is not None:
        return image_scores(cls_map, reduce, topk=topk)
    if rule in IMAGE_SCORES:
        return image_scores(seg_map, reduce, topk=topk)
    raise ValueError(f"image score rule must be one of {', '.join(IMAGE_SCORES)}, got {rule!r}")
