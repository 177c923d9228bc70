"""Heat maps over images drawn straight from arrays, for interactive views (the explorer).

matplotlib needs 0.2-0.5 s to lay out a figure and write its PNG; an interactive view must show a
new state in well under 100 ms. Here a view is a few numpy operations on an RGB array: the map is
resized bilinearly (the same sampling as :func:`cfviz.viz.resize_bilinear`), scaled to [0, 1] and
looked up in a 256-entry table taken once from the matplotlib colour map, blended over the image
with integer arithmetic, outlined (ground truth, ranked boxes), and encoded as JPEG (4:4:4, no
chroma blur on thin outlines) or PNG. Titles, colour bars and legends are HTML next to the image,
so their text is crisp at any screen density. matplotlib stays for static, paper-ready figures.

Example
-------
>>> import numpy as np
>>> image = np.full((32, 32, 3), 128, np.uint8)
>>> heat = np.zeros((4, 4)); heat[1:3, 1:3] = 1.0
>>> colors, lo, hi = heat_colors(heat, (64, 64))
>>> rgb = blend(fit_image(image, (64, 64)), colors, opacity=0.5)
>>> rgb.shape, rgb.dtype, (lo, hi)
((64, 64, 3), dtype('uint8'), (0.0, 1.0))
>>> encode(rgb)[:3] == b"\\xff\\xd8\\xff"   # JPEG
True
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.viz._common import as_mask, as_rgb, finite_range

#: Image formats :func:`encode` writes (what ``ipywidgets.Image(format=...)`` is told).
FORMATS = ("jpeg", "png")


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """``(256, 3)`` uint8 colours of matplotlib's colour map ``name`` (computed once per name).

    >>> colormap_lut("gray")[[0, 255]].tolist()
    [[0, 0, 0], [255, 255, 255]]
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}; use a matplotlib name such as 'inferno'") from None
    lut = np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)  # shared by every caller
    return lut


@functools.lru_cache(maxsize=32)
def css_gradient(name: str = "inferno", stops: int = 17, direction: str = "to top") -> str:
    """A CSS ``linear-gradient`` through the colour map (an HTML colour bar, crisp at any zoom)."""
    lut = colormap_lut(name)
    idx = np.linspace(0, 255, stops).round().astype(int)
    parts = [f"#{r:02x}{g:02x}{b:02x} {100 * k / (stops - 1):.1f}%" for k, (r, g, b) in zip(range(stops), lut[idx])]
    return f"linear-gradient({direction}, {', '.join(parts)})"


def panel_shape(image_shape: Sequence[int], side: int) -> tuple[int, int]:
    """``(height, width)`` of a panel whose longer side is ``side`` pixels, keeping the aspect ratio."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h >= w:
        return side, max(1, round(side * w / h))
    return max(1, round(side * h / w)), side


def fit_image(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """The image as uint8 RGB ``shape`` (bilinear; antialiased when shrinking)."""
    from PIL import Image

    rgb = as_rgb(image, "image")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    if rgb.shape[:2] == tuple(shape):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.BILINEAR))


def resize_map(heat: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """A 2-D map resized to ``shape``: bilinear (as :func:`cfviz.viz.resize_bilinear`) or nearest (patch
    blocks, NaN kept)."""
    heat = np.asarray(heat, np.float32)
    if heat.shape == tuple(shape):
        return heat
    if nearest:
        rows = np.minimum((np.arange(shape[0]) * heat.shape[0]) // shape[0], heat.shape[0] - 1)
        cols = np.minimum((np.arange(shape[1]) * heat.shape[1]) // shape[1], heat.shape[1] - 1)
        return heat[rows][:, cols]
    # two taps per output row and column (a gather, not a dense matrix product: ~1 ms for 512 px)
    r0, r1, fr = _taps(heat.shape[0], shape[0])
    c0, c1, fc = _taps(heat.shape[1], shape[1])
    rows = heat[r0] * (1 - fr)[:, None] + heat[r1] * fr[:, None]
    return rows[:, c0] * (1 - fc) + rows[:, c1] * fc


@functools.lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source indices and the weight of the second, per output pixel: the same sampling as
    :func:`cfviz.viz._common.bilinear_weights` (half-pixel centres, clamped at the borders)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, None)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def heat_colors(heat: Any, shape: tuple[int, int], *, cmap: str = "inferno", vmin: float | None = None,
                vmax: float | None = None, nearest: bool = False) -> tuple[np.ndarray, float, float]:
    """The map's colours at ``shape``: ``(rgba uint8 (h, w, 4), vmin, vmax)``.

    Limits default to the map's finite range (min-max per map, as :func:`cfviz.viz.overlay`);
    the alpha channel is 0 where the map is NaN (e.g. patches no window covers), 255 elsewhere.
    """
    arr = np.asarray(heat, np.float32)
    if arr.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {arr.shape}")
    lo, hi = finite_range(arr)
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if hi <= lo:
        raise ValueError(f"vmax ({hi}) must be larger than vmin ({lo})")
    finite = np.isfinite(arr)
    holes = not finite.all()
    big = resize_map(np.where(finite, arr, lo) if holes else arr, shape, nearest=nearest)
    big = big - np.float32(lo)  # a new array: ``arr`` may be the caller's
    big *= np.float32(255.0 / (hi - lo))
    np.clip(big, 0, 255, out=big)
    # one gather of packed RGBA words (4x faster than indexing a (256, 3) table)
    out = _packed_lut(cmap)[big.astype(np.uint8, order="C")].view(np.uint8).reshape(*shape, 4)
    if holes:
        out[..., 3] = np.where(resize_map(finite.astype(np.float32), shape, nearest=True) > 0.5, 255, 0)
    return out, lo, hi


@functools.lru_cache(maxsize=16)
def _packed_lut(name: str) -> np.ndarray:
    rgba = np.concatenate([colormap_lut(name), np.full((256, 1), 255, np.uint8)], axis=1)
    return np.ascontiguousarray(rgba).view(np.uint32).ravel()


def blend(base: np.ndarray, colors: np.ndarray, opacity: float) -> np.ndarray:
    """``base * (1 - opacity) + colors * opacity`` in uint8 (where ``colors``' alpha channel is set)."""
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    a = np.uint16(round(float(opacity) * 256))
    rgb = colors[..., :3]
    out = ((base.astype(np.uint16) * (256 - a) + rgb.astype(np.uint16) * a) >> 8).astype(np.uint8)
    if colors.shape[-1] == 4 and not colors[..., 3].all():
        hole = colors[..., 3] == 0
        out[hole] = base[hole]
    return out


def mask_outline(mask: Any, shape: tuple[int, int], width: int = 2) -> np.ndarray:
    """Boolean ``shape``: the inner border (``width`` pixels) of the ground-truth mask."""
    m = as_mask(mask, shape)
    inner = m.copy()
    for _ in range(max(1, int(width))):  # erode by one pixel per pass (4-neighbourhood)
        e = inner.copy()
        e[1:, :] &= inner[:-1, :]
        e[:-1, :] &= inner[1:, :]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        inner = e
    return m & ~inner


def hex_rgb(color: str) -> tuple[int, int, int]:
    """``"#00e5ff"`` -> ``(0, 229, 255)``."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return round(r * 255), round(g * 255), round(b * 255)


def paint(rgb: np.ndarray, where: np.ndarray, color: str) -> np.ndarray:
    """Set the pixels ``where`` to ``color`` (in place); return ``rgb``."""
    rgb[where] = hex_rgb(color)
    return rgb


def draw_box(rgb: np.ndarray, top: int, left: int, bottom: int, right: int, color: str, width: int = 2,
             edge: str | None = "#000000") -> np.ndarray:
    """Outline the box rows ``top..bottom-1``, columns ``left..right-1`` (in place), with a thin dark edge
    on both sides so that the colour shows on bright and dark areas alike."""
    h, w = rgb.shape[:2]
    top, left = max(0, int(top)), max(0, int(left))
    bottom, right = min(h, int(bottom)), min(w, int(right))
    if bottom <= top or right <= left:
        return rgb

    def frame(t: int, le: int, b: int, r: int, wd: int, col: str) -> None:
        t, le, b, r = max(0, t), max(0, le), min(h, b), min(w, r)
        c = hex_rgb(col)
        rgb[t:min(b, t + wd), le:r] = c
        rgb[max(t, b - wd):b, le:r] = c
        rgb[t:b, le:min(r, le + wd)] = c
        rgb[t:b, max(le, r - wd):r] = c

    if edge is not None:
        frame(top - 1, left - 1, bottom + 1, right + 1, width + 2, edge)
    frame(top, left, bottom, right, width, color)
    return rgb


def encode(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """JPEG (4:4:4 chroma, so thin coloured lines stay sharp; ~1 ms for 512 px) or PNG (level 1) bytes."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    else:
        im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def placeholder(shape: tuple[int, int], level: int = 235) -> np.ndarray:
    """A flat light-grey panel (what a hidden panel shows, so the row keeps its layout)."""
    return np.full((*shape, 3), level, np.uint8)
