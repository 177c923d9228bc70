"""Input checks shared by the metrics: one clear error per bad input, naming the argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.errors import CfvizError


class MetricInputError(CfvizError, ValueError):
    """Labels, masks, scores or maps given to a metric are malformed (shape, values, classes)."""


def as_scores(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a real, finite NumPy array (no copy when already one).

    Bool scores become uint8; integer and floating dtypes are kept, so that ties are judged on
    the exact values given (a float64 cast of int64 or a float32 cast of float64 could merge
    distinct scores).
    """
    arr = _as_array(values, name)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise MetricInputError(f"{name} must hold real numbers, got dtype {arr.dtype}; "
                               f"convert it with np.asarray({name}, dtype=float)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        raise MetricInputError(f"{name} holds {bad} NaN or infinite value(s); scores must be finite "
                               f"(fix the map upstream or replace them, e.g. np.nan_to_num({name}))")
    return arr


def as_binary(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a bool array, accepting bool or numbers that are exactly 0 or 1."""
    arr = _as_array(values, name)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise MetricInputError(f"{name} must be binary (bool or 0/1), got dtype {arr.dtype}")
    if arr.size:
        if arr.dtype.kind == "f":
            ok = bool(np.all((arr == 0) | (arr == 1)))  # min/max alone would let 0.5 through
        else:
            ok = bool(arr.min() >= 0 and arr.max() <= 1)
        if not ok:
            bad = arr[(arr != 0) & (arr != 1)].flat[0].item()
            hint = (f"masks read from PNG files are often 0/255: pass ({name} > 0)"
                    if bad == 255 else f"binarise it first, e.g. ({name} > 0)")
            raise MetricInputError(f"{name} must be binary (bool or 0/1) but holds the value {bad!r}; {hint}")
    if arr.dtype.itemsize == 1:
        return arr.view(np.bool_)  # 0/1 bytes are valid bools: no copy
    return arr != 0


def _as_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) > 0 \
            and all(hasattr(v, "shape") for v in values):
        arrays = [np.asarray(v) for v in values]
        first = arrays[0].shape
        for i, a in enumerate(arrays):
            if a.shape != first:
                raise MetricInputError(f"{name}[{i}] has shape {a.shape} but {name}[0] has shape {first}; "
                                       f"all items of {name} must have the same shape")
        return np.stack(arrays)
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name} could not be read as a NumPy array ({exc}); give an array or a "
                               "list of equal-shape arrays") from None
    if arr.dtype == object:
        raise MetricInputError(f"{name} is ragged or holds non-numbers; give an array or a list of equal-shape arrays")
    return arr


def check_1d_pair(labels: np.ndarray, scores: np.ndarray, label_name: str, score_name: str) -> None:
    """Both must be 1-D, of equal, non-zero length."""
    for arr, name in ((labels, label_name), (scores, score_name)):
        if arr.ndim != 1:
            raise MetricInputError(f"{name} must be 1-D (one value per sample), got shape {arr.shape}")
    if labels.shape != scores.shape:
        raise MetricInputError(f"{label_name} has {labels.shape[0]} values but {score_name} has "
                               f"{scores.shape[0]}; give one score per label")
    if labels.size == 0:
        raise MetricInputError(f"{label_name} and {score_name} are empty; give at least one sample of each class")


def as_map_stack(values: np.ndarray, name: str) -> np.ndarray:
    """Accept ``(N, H, W)`` or ``(N, 1, H, W)``; return ``(N, H, W)``."""
    if values.ndim == 4 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 3:
        raise MetricInputError(f"{name} must have shape (N, H, W) (or (N, 1, H, W)), got {values.shape}")
    if values.size == 0:
        raise MetricInputError(f"{name} is empty (shape {values.shape})")
    return values


def check_classes(n_pos: int, n_neg: int, label_name: str, metric: str) -> None:
    """A ranking metric needs both classes."""
    if n_pos == 0 or n_neg == 0:
        present, missing = ("0 (normal)", "1 (anomalous)") if n_pos == 0 else ("1 (anomalous)", "0 (normal)")
        raise MetricInputError(f"{label_name} holds only class {present}; {metric} needs at least one "
                               f"{missing} sample as well")


def check_fpr_limit(fpr_limit: float) -> float:
    try:
        value = float(fpr_limit)
    except (TypeError, ValueError):
        raise MetricInputError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}") from None
    if not 0.0 < value <= 1.0:
        raise MetricInputError(f"fpr_limit must be in (0, 1] (MVTec AD uses 0.3), got {fpr_limit!r}")
    return value


def check_connectivity(connectivity: int) -> int:
    if connectivity not in (4, 8):
        raise MetricInputError(f"connectivity must be 4 or 8 (MVTec AD uses 8), got {connectivity!r}")
    return int(connectivity)
