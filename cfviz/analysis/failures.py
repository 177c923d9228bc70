"""Failure cases of one method's predictions: worst false positives and negatives, defect types,
and where the CLIP and diffusion branches disagree. Everything works on a
:class:`~cfviz.evaluation.scoring.Predictions` (cheap: from the store).

Example
-------
>>> import numpy as np
>>> from cfviz.evaluation.scoring import Predictions
>>> p = Predictions(method="m", category="c", shots=0, seed=0, image_ids=["a", "b", "c", "d"],
...                 labels=np.array([0, 0, 1, 1]), masks=None, maps=np.zeros((4, 2, 2), np.float32),
...                 scores=np.array([0.1, 0.9, 0.2, 0.8], np.float32), defect_types=["good", "good", "hole", "cut"])
>>> rank_failures(p, k=1, threshold=0.5)[["kind", "image_id", "case"]].values.tolist()
[['false positive', 'b', 'false positive #1'], ['false negative', 'c', 'false negative #1']]
>>> rank_failures(p, k=2, threshold=0.5)["case"].tolist()[1]  # 'a' (0.1) is below 0.5: classified correctly
'highest-scoring normal #2 (correct)'
>>> rank_failures(p, k=1)["case"].tolist()  # at the F1-max threshold (0.2) 'c' is detected
['false positive #1', 'lowest-scoring anomalous #1 (correct)']
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _threshold(p: Any, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    if len(set(p.labels.tolist())) < 2:
        return float(np.median(p.scores))
    from cfviz.metrics import image_metrics

    return float(image_metrics(p.labels, p.scores)["image_f1_threshold"])


def case_title(kind: str, rank: int, wrong: bool) -> str:
    """How a ranked case is called on screen: a failure only when it is one.

    The ``k`` highest-scoring normal images are not all false positives: only those at or above
    the threshold are; the others are "highest-scoring normal #r (correct)".

    >>> case_title("false positive", 2, True), case_title("false negative", 1, False)
    ('false positive #2', 'lowest-scoring anomalous #1 (correct)')
    """
    if wrong:
        return f"{kind} #{rank}"
    if kind not in _CORRECT_TITLES:
        raise ValueError(f"kind must be one of {sorted(_CORRECT_TITLES)}, got {kind!r}")
    return f"{_CORRECT_TITLES[kind]} #{rank} (correct)"


_CORRECT_TITLES = {"false positive": "highest-scoring normal", "false negative": "lowest-scoring anomalous"}


def rank_failures(p: Any, k: int = 4, threshold: float | None = None) -> Any:
    """The ``k`` highest-scoring normal images and the ``k`` lowest-scoring anomalous ones.

    ``threshold`` (default: the F1-max threshold of the image scores) decides ``wrong``: whether
    the image is misclassified at that threshold. Rank 1 is the worst case of each kind. ``kind``
    says which end was ranked; ``case`` is the label to show (:func:`case_title`): "false positive
    #2" only when the image is one.

    Returns a DataFrame: kind, rank, case, image_id, label, defect_type, score, threshold, wrong.
    """
    import pandas as pd

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    thr = _threshold(p, threshold)
    frame = p.frame()
    fp = frame[frame.label == 0].sort_values("score", ascending=False, kind="stable").head(k)
    fn = frame[frame.label == 1].sort_values("score", ascending=True, kind="stable").head(k)
    parts = []
    for kind, part, wrong in (("false positive", fp, fp.score >= thr), ("false negative", fn, fn.score < thr)):
        part = part.assign(kind=kind, rank=np.arange(1, len(part) + 1), threshold=thr, wrong=wrong.values)
        part["case"] = [case_title(kind, r, bool(w)) for r, w in zip(part["rank"], part["wrong"])]
        parts.append(part)
    cols = ["kind", "rank", "case", "image_id", "label", "defect_type", "score", "threshold", "wrong"]
    return pd.concat(parts, ignore_index=True)[cols]


def defect_breakdown(p: Any, threshold: float | None = None) -> Any:
    """Per defect type: images, mean image score and the share of images whose image score reaches
    ``threshold`` (F1-max default).

    ``normal`` marks the normal images' row ("good"): there ``detected`` is the false-positive
    rate, not a detection rate. ``n_detected`` counts the images at or above the threshold.

    >>> import numpy as np
    >>> from cfviz.evaluation.scoring import Predictions
    >>> p = Predictions(method="m", category="c", shots=0, seed=0, image_ids=["a", "b", "c"],
    ...                 labels=np.array([0, 1, 1]), masks=None, maps=np.zeros((3, 2, 2), np.float32),
    ...                 scores=np.array([0.6, 0.2, 0.8], np.float32), defect_types=["good", "hole", "hole"])
    >>> defect_breakdown(p, 0.5)[["defect_type", "normal", "images", "n_detected", "detected"]].values.tolist()
    [['good', True, 1, 1, 1.0], ['hole', False, 2, 1, 0.5]]
    """
    thr = _threshold(p, threshold)
    frame = p.frame()
    frame["detected"] = frame.score >= thr
    out = frame.groupby("defect_type").agg(images=("image_id", "size"), mean_score=("score", "mean"),
                                           n_detected=("detected", "sum"), detected=("detected", "mean"),
                                           normal=("label", lambda y: bool((y == 0).all()))).reset_index()
    out["threshold"] = thr
    return out[["defect_type", "normal", "images", "n_detected", "detected", "mean_score", "threshold"]]


def branch_maps(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """The CLIP and diffusion branch totals (M_clip_L [+ M_clip_V], M_diff_L [+ M_diff_V]) of ``p``."""
    c = p.components
    if "clip_language" not in c or "diff_language" not in c:
        raise ValueError(f"predictions of method {p.method!r} lack a branch; use method='clipfusion'")
    clip = c["clip_language"] + c.get("clip_visual", 0.0)
    diff = c["diff_language"] + c.get("diff_visual", 0.0)
    return np.asarray(clip, np.float32), np.asarray(diff, np.float32)


def _minmax(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def disagreement_maps(p: Any) -> np.ndarray:
    """``M_clip - M_diff`` per image after min-max scaling each branch map to [0, 1] (signed).

    Positive where CLIP calls a pixel more anomalous than diffusion does.
    """
    clip, diff = branch_maps(p)
    return _minmax(clip) - _minmax(diff)


def disagreement(p: Any) -> Any:
    """Per image: how much the branches disagree (mean |M_clip - M_diff| and the Pearson
    correlation of the two maps), with the branch image scores; sorted most disagreeing first.
    """

    clip, diff = branch_maps(p)
    d = disagreement_maps(p)
    a = clip.reshape(len(clip), -1)
    b = diff.reshape(len(diff), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    corr = np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1.0), 0.0)
    frame = p.frame()
    frame["mean_abs_difference"] = np.abs(d).reshape(len(d), -1).mean(1)
    frame["correlation"] = corr
    frame["clip_score"] = p.component_scores.get("clip", np.full(len(frame), np.nan))
    frame["diff_score"] = p.component_scores.get("diff", np.full(len(frame), np.nan))
    return frame.sort_values("mean_abs_difference", ascending=False, kind="stable").reset_index(drop=True)
