"""Reading images and masks from disk as plain numpy arrays.

Every image comes back as ``np.uint8`` of shape ``(H, W, 3)`` in RGB order, every mask as
``np.uint8`` of shape ``(H, W)`` holding only 0 and 1, whatever the file stores:

* RGB: kept.
* grayscale (``L``, ``1``): copied into three channels; normal (several MVTec-AD categories are
  grayscale); counted as ``"grayscale"``, not warned.
* palette (``P``): expanded to its RGB colours; ``"palette"``, not warned.
* with alpha (RGBA, LA, PA): alpha dropped; ``"alpha"``, warned.
* 16-bit, 32-bit or float samples: scaled from the file's bit depth to 8 bits;
  ``"high_bit_depth"``, warned.
* CMYK, YCbCr, LAB, ...: converted to RGB by Pillow; ``"colour_space"``, not warned.

Conversions are added to a :class:`collections.Counter` passed as ``conversions``; a data set
(:class:`cfviz.data.AnomalyDataset`) keeps one such counter and emits ONE
:class:`DataConversionWarning` per warned kind, so a folder of 1,000 RGBA files gives one
warning, not 1,000.

Bit depth: a 16-bit file is mapped with ``round(v * 255 / 65535)`` (Pillow already takes the
high byte of 16-bit RGB PNGs, which is the same scaling up to rounding). Pillow's 32-bit integer
mode ``I`` usually holds 16-bit data (TIFF/PNG readers widen it), so 16 bits are assumed when
every value fits in 0..65535, else 32 bits; float mode ``F`` is taken as [0, 1] when its maximum
is at most 1, else as 16-bit values. Values are never stretched per image (that would change
the contrast from image to image).

Masks are binarised at half their range: a pixel is a defect when its value is above half of
the mask's largest value (0 is always background), so a 0/255 mask is cut at 127.5 and a 0/1 mask
at 0.5. A mask saved as JPEG (or with anti-aliased edges) holds many grey levels around the
border of each defect; cutting at any value above 0 would grow every defect by its blurred
border (issue 10 measured 12-28 % more defect pixels on MVTec-AD masks saved as JPEG, and pixel
AUPRO falling from 15.1 to 7.0), cutting at half the range keeps the border where it was drawn. Such masks are counted as ``"mask_levels"`` (values
other than 0 and one foreground level) and warned about once per data set. Two exceptions,
whose values are class indices rather than intensities, count every value above 0 as a defect:
palette masks (on their indices, index 0 being background) and masks read with
``class_indices=True`` (VisA's format: 0 background, 1, 2, ... one per defect region) whose
largest value is below 128; a ``class_indices`` mask with a larger value holds intensities and
takes the half-range rule.

Example
-------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from PIL import Image
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> Image.fromarray(np.full((4, 6), 200, np.uint8)).save(d / "gray.png")
>>> img = read_image(d / "gray.png")
>>> img.shape, img.dtype.name, int(img[0, 0, 2])
((4, 6, 3), 'uint8', 200)
>>> Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(d / "mask.png")
>>> read_mask(d / "mask.png").tolist()
[[0, 1], [1, 0]]
>>> Image.fromarray(np.array([[0, 3], [7, 0]], np.uint8)).save(d / "index.png")
>>> read_mask(d / "index.png", class_indices=True).tolist()
[[0, 1], [1, 0]]
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfviz.errors import DatasetError

# Image file extensions every reader accepts (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Conversion kinds that deserve a (single, per data set) warning: they lose information.
WARNED_CONVERSIONS: frozenset[str] = frozenset({"alpha", "high_bit_depth", "missing_mask", "mask_levels",
                                                "empty_mask", "broken_link", "mask_without_image"})

# Class-index masks (VisA) hold small integers; a larger value means the mask holds intensities.
_MAX_CLASS_INDEX = 127

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


class DataConversionWarning(UserWarning):
    """An image was converted in a way that loses information (alpha dropped, bit depth reduced),
    a mask held more than two levels (JPEG noise), or an anomalous image had no mask or an
    empty one. Emitted once per kind per data set; the counts are in
    ``dataset.conversions``."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (any case) and is not hidden.

    >>> is_image_file("a/000.PNG"), is_image_file("a/.000.png"), is_image_file("a/notes.txt")
    (True, False, False)
    """
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _open(path: Path, what: str) -> tuple[Any, str]:
    """Open and decode ``path`` with Pillow, turning every failure into one DatasetError.

    Returns the image and its raw (file) mode, read before decoding: it tells whether Pillow
    narrowed 16-bit samples to 8 bits on its own (16-bit RGB PNGs).
    """
    from PIL import Image

    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}. Fix: check the path, or restore the file.")
    try:
        img = Image.open(path)
        rawmode = _raw_mode(img)
        img.load()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise DatasetError(
            f"cannot read {what} {path}: {type(exc).__name__}: {exc}. Fix: replace it with a valid "
            f"image file ({', '.join(IMAGE_EXTENSIONS)}) or remove it from the data set folder."
        ) from exc
    return img, rawmode


def _raw_mode(img: Any) -> str:
    tile = getattr(img, "tile", None) or []
    if not tile:
        return ""
    args = getattr(tile[0], "args", None)
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _scale_high_depth(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16/32-bit integer or float array to uint8 by the container's bit depth."""
    a = np.asarray(arr)
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if a.size == 0 or float(a.max()) <= 1.0 else 65535.0
    else:
        a = a.astype(np.float64)
        top = 65535.0 if a.size == 0 or float(a.max()) <= 65535 else float(2**32 - 1)
    return np.rint(np.clip(a, 0.0, top) * (255.0 / top)).astype(np.uint8)


def pil_to_rgb(img: Any, conversions: Counter[str] | None = None, *, rawmode: str | None = None) -> np.ndarray:
    """Convert a Pillow image of any mode to ``np.uint8 (H, W, 3)`` RGB, counting conversions.

    >>> from PIL import Image
    >>> c = Counter()
    >>> pil_to_rgb(Image.new("RGBA", (3, 2), (10, 20, 30, 0)), c)[0, 0].tolist(), dict(c)
    ([10, 20, 30], {'alpha': 1})
    """
    counts: Counter[str] = conversions if conversions is not None else Counter()
    mode = img.mode
    if rawmode is None:  # not decoded yet: the tile still names the file's raw mode
        rawmode = _raw_mode(img)
    if ";16" in rawmode and mode not in _HIGH_DEPTH_MODES:
        counts["high_bit_depth"] += 1  # Pillow already kept the high byte of each 16-bit sample
    if mode == "P":
        counts["palette"] += 1
        has_alpha = "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        counts["high_bit_depth"] += 1
        gray = _scale_high_depth(np.asarray(img), mode)
        counts["grayscale"] += 1
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in _ALPHA_MODES:
        counts["alpha"] += 1
        img = img.convert("RGBA").convert("RGB") if mode in ("RGBa", "La", "PA") else img
        mode = img.mode
        if mode == "LA":
            counts["grayscale"] += 1
            return np.repeat(np.asarray(img)[:, :, :1], 3, axis=2).astype(np.uint8)
        if mode == "RGBA":
            return np.ascontiguousarray(np.asarray(img)[:, :, :3], dtype=np.uint8)
    if mode in ("L", "1"):
        counts["grayscale"] += 1
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        counts["colour_space"] += 1
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def read_image(path: str | os.PathLike[str], *, conversions: Counter[str] | None = None) -> np.ndarray:
    """Read an image file as ``np.uint8 (H, W, 3)`` RGB (see the module docstring for conversions).

    Parameters
    ----------
    path : the image file.
    conversions : optional counter that receives one count per conversion applied.

    Raises
    ------
    DatasetError : the file is missing, unreadable or not an image (the message names it).
    """
    img, rawmode = _open(Path(path), "image")
    try:
        return pil_to_rgb(img, conversions, rawmode=rawmode)
    finally:
        img.close()


@dataclass(frozen=True)
class MaskLevels:
    """How a mask file was binarised.

    Attributes
    ----------
    n_levels : distinct values in the file (after taking the largest colour channel).
    low, high : its smallest and largest value.
    threshold : a pixel is a defect when its value is above this.
    two_level : True when every value is 0 or ``high`` (a clean binary mask), or the mask holds
        class indices; False flags lossy (JPEG) or anti-aliased masks.
    """

    n_levels: int
    low: float
    high: float
    threshold: float
    two_level: bool

    def describe(self) -> str:
        """``"holds 37 distinct values (0..255); binarised at value > 127.5"``."""
        return (f"holds {self.n_levels} distinct values ({_fmt(self.low)}..{_fmt(self.high)}), not two; "
                f"binarised at value > {_fmt(self.threshold)}")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _distinct(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a bincount for 8-bit masks (much faster than a sort)."""
    if arr.dtype == np.uint8:
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    return np.unique(arr)


def binarise_mask(arr: Any, *, class_indices: bool = False) -> tuple[np.ndarray, MaskLevels]:
    """Binarise a 2-D mask array at half its range (see the module docstring).

    Returns ``(np.uint8 (H, W) in {0, 1}, MaskLevels)``.

    >>> m, lv = binarise_mask(np.array([[0, 3, 130, 255]], np.uint8))
    >>> m.tolist(), lv.threshold, lv.two_level
    ([[0, 0, 1, 1]], 127.5, False)
    >>> binarise_mask(np.array([[0, 1, 2]], np.uint8), class_indices=True)[0].tolist()
    [[0, 1, 1]]
    """
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    levels = _distinct(a) if a.size else np.zeros(1, a.dtype)
    low, high = float(levels[0]), float(levels[-1])
    is_int = a.dtype.kind in "iub" or bool(np.all(np.mod(levels, 1) == 0))
    if high <= 0:  # empty mask (or only negative values, which are no defect either)
        return np.zeros(a.shape, np.uint8), MaskLevels(len(levels), low, high, 0.0, len(levels) == 1)
    if class_indices and is_int and high <= _MAX_CLASS_INDEX:
        return (a > 0).astype(np.uint8), MaskLevels(len(levels), low, high, 0.0, True)
    threshold = high / 2.0
    two_level = bool(np.all((levels == 0) | (levels == high)))
    return (a > threshold).astype(np.uint8), MaskLevels(len(levels), low, high, threshold, two_level)


def load_mask(path: str | os.PathLike[str], *, class_indices: bool = False) -> tuple[np.ndarray, MaskLevels]:
    """Read and binarise a mask file; also return how (:class:`MaskLevels`).

    Colour masks use their largest channel (alpha is ignored); palette masks are binarised on
    their indices (any index above 0 is a defect).

    Raises
    ------
    DatasetError : the file is missing or unreadable (the message names it).
    """
    img, _ = _open(Path(path), "mask")
    try:
        palette = img.mode in ("P", "PA")
        arr = np.asarray(img)
        if img.mode in _ALPHA_MODES:
            arr = arr[..., :-1]
    finally:
        img.close()
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return binarise_mask(arr, class_indices=class_indices or palette)


def read_mask(path: str | os.PathLike[str], *, class_indices: bool = False,
              conversions: Counter[str] | None = None) -> np.ndarray:
    """Read a mask file as ``np.uint8 (H, W)`` in {0, 1}, binarised at half its range.

    Parameters
    ----------
    path : the mask file.
    class_indices : the mask holds class indices (VisA): every value above 0 is a defect.
    conversions : optional counter; ``"mask_levels"`` is counted when the mask holds values
        other than 0 and one foreground level (JPEG noise, anti-aliased edges).

    Raises
    ------
    DatasetError : the file is missing or unreadable (the message names it).
    """
    mask, levels = load_mask(path, class_indices=class_indices)
    if conversions is not None and not levels.two_level:
        conversions["mask_levels"] += 1
    return mask


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header only (no pixel decoding)."""
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as img:
            w, h = img.size
    except Exception as exc:
        raise DatasetError(f"cannot read image header of {p}: {exc}. Fix: replace or remove the file.") from exc
    return int(h), int(w)
