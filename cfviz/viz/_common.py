"""Input checks and small drawing helpers shared by the figure modules.

Inputs are accepted as NumPy arrays, torch tensors, Pillow images or
:class:`~cfviz.capture.labelled.LabelledMaps`; they are turned into NumPy here (torch is never
imported by cfviz.viz itself), and every bad input raises one error that names the argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


# ---------------------------------------------------------------------------------- conversion
def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (array, tensor, LabelledMaps, nested list) as a float64 NumPy array."""
    if x is None:
        raise TypeError(f"{name} is None; pass an array")
    if hasattr(x, "dims") and hasattr(x, "numpy") and hasattr(x, "coords"):  # LabelledMaps
        x = x.numpy()
    elif hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__} ({exc})") from None
    return arr


def as_map(x: Any, name: str) -> np.ndarray:
    """A 2-D float map; leading dimensions of size 1 are dropped. Infinite values are errors."""
    arr = to_numpy(x, name)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be a 2-D (height, width) map, got shape {arr.shape}; "
                         "select or average the other dimensions first")
    if np.isinf(arr).any():
        raise ValueError(f"{name} holds infinite values; clip or mask them before plotting")
    return arr


def as_rgb(image: Any, name: str = "image") -> np.ndarray:
    """An image as ``uint8 (H, W, 3)``: arrays (H, W[, 1|3|4]) or (1|3, H, W), tensors, Pillow.

    Float images must hold values in [0, 1] (convert model inputs in [-1, 1] first).
    """
    from cfviz.data.transforms import to_rgb

    if hasattr(image, "detach") and hasattr(image, "cpu"):
        image = image.detach().float().cpu().numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[0] in (1, 3) \
            and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # channel-first tensors
    try:
        return to_rgb(image)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def as_mask(mask: Any, shape: tuple[int, int] | None, name: str = "mask") -> np.ndarray:
    """A boolean ``(H, W)`` mask (non-zero = anomalous), resized by nearest neighbour to ``shape``."""
    arr = to_numpy(mask, name)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (height, width) mask, got shape {arr.shape}")
    binary = arr > (0.5 if arr.size and arr.max() <= 1 else 0)
    if shape is not None and binary.shape != tuple(shape):
        rows = np.minimum((np.arange(shape[0]) + 0.5) * binary.shape[0] / shape[0], binary.shape[0] - 1)
        cols = np.minimum((np.arange(shape[1]) + 0.5) * binary.shape[1] / shape[1], binary.shape[1] - 1)
        binary = binary[rows.astype(int)][:, cols.astype(int)]
    return binary


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` interpolation matrix with half-pixel centres (torch's align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0), 1 - frac)
    np.add.at(w, (rows, i1), frac)
    return w


def resize_bilinear(heatmap: Any, size: int | tuple[int, int], name: str = "heatmap") -> np.ndarray:
    """Resize a 2-D map to ``size`` = ``(height, width)`` (or a side) bilinearly.

    Same sampling as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    (no antialiasing), so a map resized here lines up with maps resized by the capture code.

    >>> resize_bilinear(np.array([[0.0, 1.0]]), (1, 4)).tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    arr = as_map(heatmap, name)
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if arr.shape == (h, w):
        return arr.copy()
    return bilinear_weights(arr.shape[0], h) @ arr @ bilinear_weights(arr.shape[1], w).T


def wrap_title(text: str, width: int) -> str:
    """``text`` wrapped at spaces to lines of ``width`` characters, so a long title stays over its panel.

    >>> wrap_title("highest-scoring normal #2 (correct)", 18)
    'highest-scoring\\nnormal #2\\n(correct)'
    """
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


# ---------------------------------------------------------------------------------- colour scales
def finite_range(values: Sequence[np.ndarray] | np.ndarray, robust: bool = False) -> tuple[float, float]:
    """``(min, max)`` of the finite values (1st/99th percentile when ``robust``); never empty."""
    if isinstance(values, np.ndarray):
        values = [values]
    flat = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if len(values) else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    if not flat.size:
        return 0.0, 1.0
    lo, hi = (np.percentile(flat, [1, 99]) if robust else (flat.min(), flat.max()))
    lo, hi = float(lo), float(hi)
    if hi <= lo:  # a constant map: widen so the colour bar has a range
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def minmax(values: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its finite min and max (a constant map becomes zeros)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return values.copy()
    lo, hi = float(finite.min()), float(finite.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


# ---------------------------------------------------------------------------------- axes helpers
def clean_image_axes(ax: Any) -> None:
    """No ticks on image panels; keep a thin frame so panels stay separated."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.4)
        spine.set_color("0.6")


def add_colorbar(fig: Any, norm: Any, cmap: Any, axes: Any, label: str, **kwargs: Any) -> Any:
    """A fully opaque colour bar (even for a translucent overlay) for ``norm`` and ``cmap``.

    For one Axes the bar is an inset exactly as tall as the axes box (an image panel's box is
    shorter than its layout cell, so a layout colour bar would stick out); for a list of Axes it
    is a constrained-layout colour bar next to all of them.
    """
    from matplotlib.cm import ScalarMappable

    mappable = ScalarMappable(norm=norm, cmap=cmap)
    if hasattr(axes, "inset_axes") and not kwargs:
        cax = axes.inset_axes([1.04, 0.0, 0.06, 1.0])
        cb = fig.colorbar(mappable, cax=cax)
    else:
        kwargs.setdefault("shrink", 0.9)
        cb = fig.colorbar(mappable, ax=axes, **kwargs)
    cb.set_label(label)
    cb.ax.set_gid("cfviz-colorbar")  # lets callers and tests find the bars among the axes
    cb.ax.tick_params(labelsize="small", width=0.5, length=2)
    cb.outline.set_linewidth(0.5)
    return cb


def draw_mask_contour(ax: Any, mask: np.ndarray, color: str | None = None, linewidth: float = 0.9) -> Any:
    """Outline a boolean mask (pixel centres on integer coordinates, like ``imshow``)."""
    from cfviz.viz.style import MASK_COLOR

    if not mask.any() or mask.all():
        return None  # nothing to outline: contour() would warn about a constant field
    cs = ax.contour(mask.astype(float), levels=[0.5], colors=[color or MASK_COLOR], linewidths=linewidth)
    cs.set_gid("cfviz-mask-contour")
    return cs


def show_mask(ax: Any, mask: np.ndarray) -> Any:
    """Show a ground-truth mask as white on black (how papers show it)."""
    im = ax.imshow(mask.astype(float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    clean_image_axes(ax)
    return im


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(int(ncols), n))
    return math.ceil(n / ncols), ncols


def check_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise KeyError(f"{where}: unknown keys {unknown}; allowed keys are {list(allowed)}")


def finish_heatmap_axes(ax: Any, im: Any, *, mask: Any, shape: tuple[int, int], title: str | None,
                        colorbar: bool, label: str) -> Any:
    """The common end of a heat-map panel: tag the image, outline the mask, tidy, title, colour bar."""
    im.set_gid("cfviz-heatmap")
    if mask is not None:
        draw_mask_contour(ax, as_mask(mask, shape))
    clean_image_axes(ax)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        add_colorbar(ax.figure, im.norm, im.cmap, ax, label)
    return im
