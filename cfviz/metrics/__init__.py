"""Evaluation metrics on raw scores: image AUROC/AP/F1-max and pixel AUROC/AP/F1-max/AUPRO.

All metrics are exact (no binning, no sigmoid, any score range) and sort-based: one sort is
shared by all metrics of a level (:class:`PixelCurves`). AUROC and AP equal scikit-learn's
``roc_auc_score`` and ``average_precision_score``, ties included. The exact AUPRO definition is
in :func:`aupro`'s docstring. Importing this package loads only NumPy (SciPy is imported when
AUPRO regions are labelled).

Example
-------
>>> from cfviz.metrics import image_metrics
>>> image_metrics([0, 1, 1], [0.2, 0.9, 0.5])["image_auroc"]
1.0
"""

from __future__ import annotations

from cfviz.metrics._validate import MetricInputError
from cfviz.metrics.aupro import aupro, pro_curve, region_weights
from cfviz.metrics.pixel import PixelCurves
from cfviz.metrics.ranking import RankingStats, auroc, average_precision, f1_max
from cfviz.metrics.summary import image_metrics, pixel_metrics

__all__ = [
    "MetricInputError",
    "PixelCurves",
    "RankingStats",
    "aupro",
    "auroc",
    "average_precision",
    "f1_max",
    "image_metrics",
    "pixel_metrics",
    "pro_curve",
    "region_weights",
]
