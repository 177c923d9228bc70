"""One-call metric summaries: :func:`image_metrics` and :func:`pixel_metrics`.

Both return flat dicts whose keys carry an ``image_`` or ``pixel_`` prefix (anomalib's naming),
so that ``{**image_metrics(...), **pixel_metrics(...)}`` is one row of a results table.
"""

from __future__ import annotations

from typing import Any

from cfviz.metrics._validate import check_fpr_limit
from cfviz.metrics.pixel import PixelCurves
from cfviz.metrics.ranking import RankingStats


def image_metrics(labels: Any, scores: Any) -> dict[str, float | int]:
    """Image-level AUROC, AP, F1-max and the F1-max threshold, from one sort of raw scores.

    Parameters
    ----------
    labels:
        ``(N,)`` bool or 0/1, 1 = anomalous image; both classes must be present.
    scores:
        ``(N,)`` finite image scores, higher = more anomalous, any range.

    Example
    -------
    >>> image_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])  # doctest: +NORMALIZE_WHITESPACE
    {'image_auroc': 0.75, 'image_ap': 0.8333333333333333, 'image_f1_max': 0.8,
     'image_f1_threshold': 0.35, 'n_images': 4, 'n_anomalous_images': 2}
    """
    stats = RankingStats.from_scores(labels, scores)
    auroc = stats.auroc()  # raises first if a class is missing
    f1, threshold = stats.f1_max()
    return {
        "image_auroc": auroc,
        "image_ap": stats.average_precision(),
        "image_f1_max": f1,
        "image_f1_threshold": threshold,
        "n_images": stats.n_pos + stats.n_neg,
        "n_anomalous_images": stats.n_pos,
    }


def pixel_metrics(masks: Any, maps: Any, *, fpr_limit: float = 0.3, connectivity: int = 8,
                  n_jobs: int | None = None) -> dict[str, float | int]:
    """Pixel-level AUROC, AP, F1-max (+ threshold) and AUPRO, sharing one sort of all pixels.

    Parameters
    ----------
    masks:
        ``(N, H, W)`` binary ground truth (bool or 0/1; images without defect are fine), or a
        list of equal-shape masks.
    maps:
        Raw anomaly scores of the same shape (float32 is fastest), any finite range.
    fpr_limit:
        AUPRO integration limit on the FPR axis, in ``(0, 1]`` (MVTec AD: 0.3).
    connectivity:
        8 (default, as MVTec AD) or 4, for AUPRO's defect regions.
    n_jobs:
        Threads for the big sort (``None``: all CPUs); results do not depend on it.

    Returns
    -------
    dict with ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max``, ``pixel_f1_threshold``,
    ``pixel_aupro``, ``aupro_fpr_limit``, ``n_images``, ``n_pixels``, ``n_anomalous_pixels``
    and ``n_regions``. See :func:`cfviz.metrics.aupro` for the exact AUPRO definition.

    Example
    -------
    >>> import numpy as np
    >>> masks = np.zeros((3, 16, 16), bool); masks[0, 4:8, 4:8] = True; masks[1, 0:2, 10:16] = True
    >>> maps = masks + np.random.default_rng(0).normal(0, 0.4, masks.shape)
    >>> m = pixel_metrics(masks, maps)
    >>> round(m["pixel_auroc"], 3), round(m["pixel_aupro"], 3), m["n_regions"]
    (0.943, 0.856, 2)
    """
    check_fpr_limit(fpr_limit)  # fail before the expensive part
    return PixelCurves.from_maps(masks, maps, connectivity=connectivity, n_jobs=n_jobs).summary(fpr_limit)
