"""Pixel metrics at each image's own size (``ScoringConfig.eval_size = "native"``).

Data sets whose images differ in size (VisA: several sizes within some categories) cannot be
stacked into one ``(N, H, W)`` array at their own resolution. :class:`NativeMasks` holds one
mask per image at its own size; :func:`pixel_metrics` (through :meth:`PixelCurves.from_maps`)
then resizes each map (bilinear, from the working grid the maps were fused on) to its mask's
size and pools every pixel of every image, as the stacked form does: each pixel counts once,
so a larger image weighs more, and AUPRO regions are each image's own connected components.

Example
-------
>>> import numpy as np
>>> masks = NativeMasks.from_list([np.eye(4, dtype=np.uint8), np.zeros((6, 8), np.uint8)])
>>> masks.shapes, bool(masks.any()), bool(masks[[False, True]].any())
([(4, 4), (6, 8)], True, False)
>>> [m.shape for m in at_mask_sizes(np.zeros((2, 3, 3), np.float32), masks)]
[(4, 4), (6, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.metrics._validate import MetricInputError
from cfviz.utils.lazy import lazy_names


class NativeMasks(np.ndarray):
    """One binary ``(H_i, W_i)`` ``uint8`` mask per image, each at its own size (a 1-D object array).

    Indexing with a boolean or integer array keeps the type; :meth:`any` says whether any mask
    has a defect pixel (as ``masks.any()`` does for a stacked array).
    """

    @classmethod
    def from_list(cls, masks: Sequence[Any]) -> NativeMasks:
        out = np.empty(len(masks), dtype=object)
        for i, m in enumerate(masks):  # element by element: equal shapes must not broadcast into 2-D
            arr = np.asarray(m)
            if arr.ndim != 2:
                raise MetricInputError(f"mask {i} must have shape (H, W), got {arr.shape}")
            out[i] = (arr > 0).astype(np.uint8)
        return out.view(cls)

    def any(self, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        return any(bool(np.any(m)) for m in np.asarray(self, dtype=object))

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(H_i, W_i)`` of every mask."""
        return [tuple(m.shape) for m in np.asarray(self, dtype=object)]  # type: ignore[misc]

    def masks(self) -> list[np.ndarray]:
        """The masks as a plain list."""
        return list(np.asarray(self, dtype=object))


def is_native(masks: Any) -> bool:
    """Whether ``masks`` are per-image masks of their own sizes (not one stacked array)."""
    return isinstance(masks, NativeMasks) or (isinstance(masks, (list, tuple)) and len(masks) > 0
                                              and len({np.shape(m) for m in masks}) > 1)


def at_mask_sizes(maps: Any, masks: Sequence[Any]) -> list[np.ndarray]:
    """Each map resized (bilinear, float32) to its mask's size; maps already there are kept.

    ``maps`` is an ``(N, h, w)`` stack on the working grid or a list of per-image maps.
    """
    from cfviz.fusion import upsample  # torch: only on this path

    shapes = [tuple(np.shape(m)) for m in (masks.masks() if isinstance(masks, NativeMasks) else masks)]
    if len(maps) != len(shapes):
        raise MetricInputError(f"{len(maps)} maps for {len(shapes)} masks; give one map per mask")
    out = []
    for m, hw in zip(maps, shapes):
        m = np.asarray(m, dtype=np.float32)
        if m.ndim != 2:
            raise MetricInputError(f"each map must be (h, w), got {m.shape}")
        out.append(m if m.shape == hw else upsample(m[None], hw)[0])
    return out


# native_curves builds PixelCurves, so it lives in .pixel (which reads these masks); the old import path keeps working
__getattr__, __dir__ = lazy_names(__name__, {"native_curves": "cfviz.metrics.pixel"})
