"""Pixel-level metrics sharing one sort: :class:`PixelCurves`.

Building a :class:`PixelCurves` does the expensive work once: validate the masks and maps,
pick and sort the normal scores (in threads for large sets, while another thread labels the
defect regions and sorts the defect scores with their region weights), and count how they
interleave. Pixel AUROC,
AP, F1-max, AUPRO (for any FPR limit) and the PRO curve are then cheap reads of it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfviz.metrics._sort import count_below, kept_values, resolve_n_jobs, sort_in_place
from cfviz.metrics._validate import (MetricInputError, as_binary, as_map_stack, as_scores, check_connectivity,
                                     check_fpr_limit)
from cfviz.metrics._pro import aupro_from_stats, pro_curve_from_stats, region_weights
from cfviz.metrics.native import NativeMasks, at_mask_sizes, is_native
from cfviz.metrics.ranking import RankingStats, distinct_positives


@dataclass(frozen=True, eq=False)
class PixelCurves:
    """Sorted pixel statistics of a set of anomaly maps against ground-truth masks.

    Attributes
    ----------
    stats:
        :class:`~cfviz.metrics.ranking.RankingStats` over all pixels (mask 1 = positive), with
        AUPRO region weights.
    n_regions:
        Connected defect regions over all images.
    n_images, connectivity:
        How many maps, and the connectivity used for the regions.

    Example
    -------
    >>> masks = np.zeros((2, 8, 8), bool); masks[0, 2:5, 2:5] = True
    >>> maps = np.random.default_rng(0).random((2, 8, 8)) + masks
    >>> curves = PixelCurves.from_maps(masks, maps)
    >>> curves.auroc(), curves.aupro()
    (1.0, 1.0)
    >>> curves.summary()["n_regions"]
    1
    """

    stats: RankingStats
    n_regions: int
    n_images: int
    connectivity: int = 8

    @classmethod
    def from_maps(cls, masks: Any, maps: Any, *, connectivity: int = 8, n_jobs: int | None = None) -> PixelCurves:
        """Validate and sort once.

        Parameters
        ----------
        masks:
            ``(N, H, W)`` (or ``(N, 1, H, W)``) binary ground truth, bool or 0/1, or a list of
            equal-shape ``(H, W)`` masks; or masks at each image's own size
            (:class:`~cfviz.metrics.native.NativeMasks`, or a list of masks of different shapes).
        maps:
            Raw anomaly scores of the same shape, any finite range (float32 is fastest). With
            masks of their own sizes, ``(N, h, w)`` maps (or a list) are each resized bilinearly
            to their mask's size first (:mod:`cfviz.metrics.native`).
        connectivity:
            8 (default, as MVTec AD) or 4, for the AUPRO regions.
        n_jobs:
            Threads for sorting the normal pixels (``None``: all CPUs). The result does not
            depend on it.
        """
        if is_native(masks):
            return native_curves(masks, maps, connectivity)
        m = as_map_stack(as_binary(masks, "masks"), "masks")
        a = as_map_stack(as_scores(maps, "maps"), "maps")
        if m.shape != a.shape:
            raise MetricInputError(f"masks have shape {m.shape} but maps have shape {a.shape}; give one map per "
                                   "mask at the mask's resolution (resize the maps first, e.g. cfviz.fusion.upsample)")
        connectivity = check_connectivity(connectivity)
        jobs = resolve_n_jobs(n_jobs)
        flat_scores, flat_masks = a.reshape(-1), m.reshape(-1)  # views when contiguous
        with ThreadPoolExecutor(max_workers=jobs + 1) if jobs > 1 else nullcontext() as pool:
            # one thread labels the regions and sorts the few defect scores (mostly holding the
            # GIL) while the others pick and sort the normal scores (NumPy releases the GIL)
            defects = pool.submit(_defect_stats, m, a, connectivity) if pool is not None else None
            negatives = sort_in_place(kept_values(flat_scores, flat_masks, jobs, pool), jobs, pool)
            (values, counts, summed), n_regions = (defects.result() if defects is not None
                                                   else _defect_stats(m, a, connectivity))
            n_below, n_equal = count_below((negatives,), values, pool, jobs)
        stats = RankingStats((negatives,), values, counts, n_below, n_equal, summed)
        return cls(stats, n_regions, int(m.shape[0]), int(connectivity))

    @property
    def n_pixels(self) -> int:
        """All pixels."""
        return self.stats.n_pos + self.stats.n_neg

    def auroc(self) -> float:
        """Pixel AUROC, equal to ``roc_auc_score(masks.ravel(), maps.ravel())``."""
        return self.stats.auroc("masks")

    def average_precision(self) -> float:
        """Pixel average precision, equal to ``average_precision_score(masks.ravel(), maps.ravel())``."""
        return self.stats.average_precision("masks")

    def f1_max(self) -> tuple[float, float]:
        """Pixel F1-max over every distinct threshold, and its threshold (score ``>=`` it = defect)."""
        return self.stats.f1_max("masks")

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """AUPRO up to ``fpr_limit``, normalised by it (see :func:`cfviz.metrics.aupro` for the definition)."""
        return aupro_from_stats(self.stats, self.n_regions, fpr_limit)

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, pro, thresholds)`` over every distinct score, from ``(0, 0)`` at ``+inf``."""
        return pro_curve_from_stats(self.stats, self.n_regions)

    def summary(self, fpr_limit: float = 0.3) -> dict[str, float | int]:
        """All pixel metrics as a flat dict (keys prefixed ``pixel_``), plus the counts."""
        limit = check_fpr_limit(fpr_limit)
        self.stats._require("pixel AUROC", "masks")
        f1, threshold = self.f1_max()
        return {
            "pixel_auroc": self.auroc(),
            "pixel_ap": self.average_precision(),
            "pixel_f1_max": f1,
            "pixel_f1_threshold": threshold,
            "pixel_aupro": self.aupro(limit),
            "aupro_fpr_limit": limit,
            "n_images": self.n_images,
            "n_pixels": self.n_pixels,
            "n_anomalous_pixels": self.stats.n_pos,
            "n_regions": self.n_regions,
        }


def _defect_stats(masks: np.ndarray, maps: np.ndarray, connectivity: int
                  ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], int]:
    """Distinct defect scores with their counts and summed 1/|region| weights; the region count."""
    weights, n_regions = region_weights(masks, connectivity)
    return distinct_positives(maps[masks], weights), n_regions


def native_curves(masks: Any, maps: Any, connectivity: int = 8) -> PixelCurves:
    """:class:`PixelCurves` of maps against masks of different sizes."""
    connectivity = check_connectivity(connectivity)
    mask_list = masks.masks() if isinstance(masks, NativeMasks) else [np.asarray(m) > 0 for m in masks]
    map_list = at_mask_sizes(maps, mask_list)
    if not mask_list:
        raise MetricInputError("masks is empty; give at least one mask")
    negatives, positives, weights, n_regions = [], [], [], 0
    for m, a in zip(mask_list, map_list):
        m = np.asarray(m).astype(bool)
        a = as_scores(a, "maps")
        negatives.append(a[~m])
        positives.append(a[m])
        w, k = region_weights(m[None], connectivity)
        weights.append(w)
        n_regions += k
    neg = sort_in_place(np.concatenate(negatives))
    values, counts, summed = distinct_positives(np.concatenate(positives), np.concatenate(weights))
    n_below, n_equal = count_below((neg,), values)
    stats = RankingStats((neg,), values, counts, n_below, n_equal, summed)
    return PixelCurves(stats, n_regions, len(mask_list), int(connectivity))
