"""Plain, slow reference implementations for the metric tests (one threshold at a time).

Written for clarity, not speed, and independent of cfviz.metrics' sorted-statistics design:
loop over every distinct score, count directly, integrate with an explicit trapezoid loop.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def regions(masks: np.ndarray, connectivity: int = 8) -> list[tuple[int, np.ndarray]]:
    structure = np.ones((3, 3), int) if connectivity == 8 else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    out = []
    for i, m in enumerate(masks):
        lab, k = ndimage.label(m, structure=structure)
        out.extend((i, lab == r) for r in range(1, k + 1))
    return out


def pro_curve(masks: np.ndarray, maps: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    masks = masks.astype(bool)
    regs = regions(masks, connectivity)
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fprs.append(np.count_nonzero(pred & normal) / np.count_nonzero(normal))
        pros.append(float(np.mean([np.count_nonzero(pred[i] & r) / np.count_nonzero(r) for i, r in regs])))
    return np.array(fprs), np.array(pros)


def trapezoid_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    area = 0.0
    for k in range(1, len(x)):
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        if x0 >= limit:
            break
        if x1 > limit:
            y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_limit) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
    fpr, pro = pro_curve(masks, maps, connectivity)
    return trapezoid_up_to(fpr, pro, fpr_limit) / fpr_limit


def f1_max(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Max F1 over every distinct threshold (largest threshold on ties)."""
    y = np.asarray(y).astype(bool)
    best, best_t = -1.0, None
    for t in sorted(set(np.asarray(s).tolist()), reverse=True):
        pred = np.asarray(s) >= t
        tp = np.count_nonzero(pred & y)
        fp = np.count_nonzero(pred & ~y)
        fn = np.count_nonzero(~pred & y)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best:
            best, best_t = f1, t
    return best, best_t


def blob_masks(rng: np.random.Generator, n: int, h: int, w: int, p_empty: float = 0.3,
               max_blobs: int = 4) -> np.ndarray:
    """Masks with a few random blobs (squares, lines, single pixels), some images empty."""
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        if rng.random() < p_empty:
            continue
        for _ in range(rng.integers(1, max_blobs + 1)):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            dy, dx = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
            masks[i, y0:y0 + dy, x0:x0 + dx] = True
    return masks
