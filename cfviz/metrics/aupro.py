"""AUPRO: area under the per-region-overlap (PRO) curve up to a false-positive-rate limit.

Implementations in the field disagree (region connectivity, the FPR cut, the normalisation);
the exact definition used here is in :func:`aupro`'s docstring, how it is computed (one exact sort,
shared with the other pixel metrics) in :mod:`cfviz.metrics._pro`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cfviz.metrics._pro import aupro_from_stats, pro_curve_from_stats, region_weights  # noqa: F401
from cfviz.metrics.pixel import PixelCurves


def pro_curve(masks: Any, maps: Any, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve ``(fpr, pro)`` over every distinct score, starting at ``(0, 0)``, FPR ascending.

    See :func:`aupro` for the exact definition. For the curve's thresholds and to share
    the sort with the other pixel metrics use :class:`cfviz.metrics.PixelCurves`.

    Example
    -------
    >>> masks = np.array([[[0, 1], [0, 0]], [[0, 0], [0, 0]]])
    >>> maps = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.3, 0.4], [0.0, 0.1]]])
    >>> fpr, pro = pro_curve(masks, maps)
    >>> (fpr * 7).round(9).tolist()  # 7 normal pixels, 5 distinct normal scores
    [0.0, 0.0, 1.0, 3.0, 4.0, 6.0, 7.0]
    >>> pro.tolist()                 # the one region is found at the first threshold (0.9)
    [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    fpr, pro, _ = PixelCurves.from_maps(masks, maps, connectivity=connectivity).pro_curve()
    return fpr, pro


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (1 = perfect).

    Definition (MVTec AD's, made explicit):

    1. **Regions.** Each ground-truth mask is split into connected components, per image
       (8-connectivity by default, as the MVTec AD evaluation code does; ``connectivity=4`` is
       available). Every component of every image is one region ``r`` with ``|r|`` pixels.
    2. **Overlap.** For a threshold ``t`` (a pixel is predicted anomalous when its score is
       ``>= t``), the overlap of region ``r`` is the fraction of its pixels predicted anomalous:
       ``O_r(t) = |{p in r : s(p) >= t}| / |r|``.
    3. **PRO(t)** = mean of ``O_r(t)`` over **all** regions of **all** images (each region counts
       once, whatever its size or image).
    4. **FPR(t)** = fraction of **all** normal pixels (mask 0, over all images, including images
       without any defect) with score ``>= t``.
    5. **Curve.** ``t`` runs over every distinct score (tied pixels enter together), from the
       largest down; the curve starts at ``(FPR, PRO) = (0, 0)`` (threshold above every score)
       and ends at ``(1, 1)``.
    6. **Area.** Trapezoid rule on PRO against FPR from 0 to ``fpr_limit`` (default 0.3); where no
       curve point lies exactly at ``fpr_limit`` the point there is linearly interpolated between
       its neighbours. The area is divided by ``fpr_limit``, so a perfect map scores 1 and the
       value is always in ``[0, 1]``.

    Images without a defect contribute only normal pixels (to FPR). A set without any defect
    pixel, or without any normal pixel, is an error.

    Parameters
    ----------
    masks:
        ``(N, H, W)`` binary ground truth (bool or 0/1), or a list of ``(H, W)`` masks.
    maps:
        ``(N, H, W)`` raw anomaly scores of any range (or a list), same shape as ``masks``.
    fpr_limit:
        Upper end of the FPR integration range, in ``(0, 1]``; MVTec AD reports 0.3.
    connectivity:
        8 (default, as MVTec AD) or 4: which neighbours join a defect region.

    Example
    -------
    >>> masks = np.zeros((2, 8, 8), bool); masks[0, 2:4, 2:4] = True; masks[0, 6, 6] = True
    >>> aupro(masks, masks.astype(float))     # a perfect map
    1.0
    >>> maps = masks.astype(float); maps[0, 6, 6] = -1.0  # one of two regions scored below all normals
    >>> round(aupro(masks, maps), 4)
    0.5
    """
    return PixelCurves.from_maps(masks, maps, connectivity=connectivity).aupro(fpr_limit)
