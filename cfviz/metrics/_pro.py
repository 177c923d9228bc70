"""PRO-curve arithmetic on sorted pixel statistics: region weights, AUPRO and the full curve.

How it is computed (exact, one sort): each defect pixel gets the weight ``1 / |its region|``,
so that PRO(t) is the weighted count of defect pixels ``>= t`` divided by the number of
regions (anomalib's design since PR #3115). Normal scores are sorted once (shared with pixel
AUROC, AP and F1-max, see :class:`cfviz.metrics.PixelCurves`); PRO only changes at defect
scores and FPR only at normal scores, so (integrating by parts) the area needs only a sum over
the distinct defect scores of ``dPRO x FPR``, plus the interpolated piece at the limit. The
full curve (:func:`pro_curve_from_stats`) merges both sets of thresholds.
"""

from __future__ import annotations

import math

import numpy as np

from cfviz.metrics._sort import count_scalar, kth_largest, searchsorted_ascending
from cfviz.metrics._validate import MetricInputError, as_binary, as_map_stack, check_connectivity, check_fpr_limit
from cfviz.metrics.ranking import RankingStats


def region_weights(masks: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Weight ``1 / |region|`` of every defect pixel, and the number of regions.

    ``masks`` is a binary ``(N, H, W)`` array (bool or 0/1); the weights follow the order of
    ``masks[masks]`` (C order), so that they line up with ``maps[masks]``. Regions are connected components of
    each image's mask, never across images.

    Example
    -------
    >>> m = np.zeros((1, 4, 4), bool); m[0, 0, 0] = m[0, 1, 1] = True; m[0, 3, 3] = True
    >>> region_weights(m)                    # diagonal neighbours join under 8-connectivity
    (array([0.5, 0.5, 1. ]), 2)
    >>> region_weights(m, connectivity=4)[1]
    3
    """
    from scipy import ndimage  # heavy-ish: only when AUPRO is asked for

    connectivity = check_connectivity(connectivity)
    masks = as_map_stack(as_binary(masks, "masks"), "masks")  # no copy for bool input
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    parts: list[np.ndarray] = []
    n_regions = 0
    # Label only the bounding box of each image's defects (empty masks: nothing). Outside it the
    # mask is all False, and C order inside the box is C order of the image, so the weights and
    # their order are those of labelling the whole image, at a fraction of the cost.
    rows_hit = masks.any(axis=2)
    for i in np.flatnonzero(rows_hit.any(axis=1)):
        rows = np.flatnonzero(rows_hit[i])
        band = masks[i, rows[0]:rows[-1] + 1]
        cols = np.flatnonzero(band.any(axis=0))
        box = band[:, cols[0]:cols[-1] + 1]
        labels, k = ndimage.label(box, structure=structure)
        ids = labels[box]
        inverse_size = 1.0 / np.bincount(ids, minlength=k + 1)[1:]
        parts.append(inverse_size[ids - 1])
        n_regions += int(k)
    weights = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return weights, n_regions


def _check_pro_inputs(stats: RankingStats, n_regions: int) -> None:
    if stats.weights is None:
        raise MetricInputError("these statistics carry no region weights; build them with "
                               "PixelCurves.from_maps(masks, maps) to compute AUPRO")
    if n_regions == 0:
        raise MetricInputError("masks hold no defect pixel in any image; AUPRO needs at least one defect region")
    if stats.n_neg == 0:
        raise MetricInputError("masks mark every pixel as defective; AUPRO needs normal pixels for its FPR axis")


def _limit_count(n_neg: int, fpr_limit: float) -> int:
    """Smallest k with k / n_neg >= fpr_limit, in the same float arithmetic as the FPR axis."""
    k = max(1, math.ceil(fpr_limit * n_neg))
    while k > 1 and (k - 1) / n_neg >= fpr_limit:
        k -= 1
    while k < n_neg and k / n_neg < fpr_limit:
        k += 1
    return k


def aupro_from_stats(stats: RankingStats, n_regions: int, fpr_limit: float = 0.3) -> float:
    """AUPRO (as defined in :func:`aupro`) from shared sorted statistics with region weights."""
    _check_pro_inputs(stats, n_regions)
    limit = check_fpr_limit(fpr_limit)
    runs, values = stats.runs, stats.values
    n = stats.n_neg
    # t_star: the largest score whose FPR reaches the limit (the k-th largest normal score).
    t_star = kth_largest(runs, _limit_count(n, limit))
    n_le = count_scalar(runs, t_star, "right")
    n_lt = count_scalar(runs, t_star, "left")
    fpr_a, fpr_b = (n - n_le) / n, (n - n_lt) / n  # the curve segment A -> B crosses the limit
    j_eq = int(np.searchsorted(values, t_star, side="left"))
    j_gt = int(np.searchsorted(values, t_star, side="right"))
    dpro = stats.weights / n_regions  # PRO gained at each distinct defect score
    pro_a, pro_b = _pro_at(dpro, j_gt), _pro_at(dpro, j_eq)
    # Area from FPR 0 to A, by parts: fpr_a * pro_a minus each PRO step times the FPR where it
    # is taken (the middle of its segment). Exact at the ends: a perfect map gives fpr_a * 1.
    fpr_mid = (n - stats.n_below[j_gt:] - 0.5 * stats.n_equal[j_gt:]) / n
    area = fpr_a * pro_a - float(np.dot(dpro[j_gt:], fpr_mid))
    pro_limit = pro_a + (limit - fpr_a) / (fpr_b - fpr_a) * (pro_b - pro_a)
    area += 0.5 * (limit - fpr_a) * (pro_a + pro_limit)
    return min(max(area / limit, 0.0), 1.0)  # clip rounding at the ends only


def _pro_at(dpro: np.ndarray, j: int) -> float:
    """PRO at threshold ``values[j]``: the sum of ``dpro[j:]``, exact when it is all or nothing."""
    if j == 0:
        return 1.0  # every region fully found (the float sum could be 1 - 1e-16)
    if j >= dpro.size:
        return 0.0
    return min(float(dpro[j:].sum()), 1.0)


def pro_curve_from_stats(stats: RankingStats, n_regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full PRO curve: ``(fpr, pro, thresholds)``, one point per distinct score plus ``(0, 0)``.

    ``thresholds[0]`` is ``+inf`` (nothing predicted anomalous); the others descend. The curve has
    as many points as there are distinct scores (up to the number of pixels): meant for plots and
    checks; :func:`aupro_from_stats` does not build it.
    """
    _check_pro_inputs(stats, n_regions)
    neg, values = stats.negatives, stats.values
    n = neg.size
    distinct_neg = neg[np.concatenate((neg[1:] != neg[:-1], [True]))]
    thresholds = np.concatenate((distinct_neg, values))
    thresholds.sort(kind="stable")  # two sorted runs: a linear merge
    thresholds = thresholds[np.concatenate(([True], thresholds[1:] != thresholds[:-1]))]  # ascending
    fpr = (n - searchsorted_ascending(neg, thresholds, "left")) / n
    suffix = np.append(np.cumsum(stats.weights[::-1])[::-1], 0.0) / n_regions
    suffix[0] = 1.0  # all regions found at the smallest defect score, exactly
    pro = np.minimum(suffix[searchsorted_ascending(values, thresholds, "left")], 1.0)
    # descending thresholds = ascending FPR; (0, 0) first, at a threshold above every score
    return (np.concatenate(([0.0], fpr[::-1])), np.concatenate(([0.0], pro[::-1])),
            np.concatenate(([np.inf], thresholds[::-1].astype(np.float64))))
