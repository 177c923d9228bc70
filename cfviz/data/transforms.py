"""Model inputs from images: the CLIP and diffusion transforms, mask resizing, batching.

* :func:`clip_transform`: bicubic resize to ``size`` x ``size`` (240 for ``ViT-B-16-plus-240``),
  scale to [0, 1], normalise with CLIP's mean and std.
* :func:`diffusion_transform`: bilinear resize to ``size`` x ``size`` (512 for Stable
  Diffusion 2 inpainting), scale to [-1, 1].
* :func:`resize_mask`: nearest-neighbour resize, so a mask stays in {0, 1}.

Images are resized to a square WITHOUT keeping the aspect ratio and without cropping, so that
every pixel of the image (and of its mask) is seen by the model and a map can be resized back
onto the original image exactly; VisA's 3:2 images are squeezed, as in anomalib's WinCLIP.
Resizing uses Pillow (antialiased when shrinking), as open_clip's own preprocessing does.

Inputs are ``np.uint8`` arrays ``(H, W, 3)`` or ``(H, W)``, or Pillow images of any mode; see
:func:`to_rgb`. torch is imported inside the functions (``import cfviz.data`` stays light).

Example
-------
>>> import numpy as np
>>> x = clip_transform(np.zeros((30, 50, 3), np.uint8))
>>> tuple(x.shape), round(float(x[0, 0, 0]), 4)
((3, 240, 240), -1.7923)
>>> y = diffusion_transform(np.full((30, 50, 3), 255, np.uint8), size=64)
>>> tuple(y.shape), float(y.min()), float(y.max())
((3, 64, 64), 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.data.images import pil_to_rgb

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 240
DIFFUSION_SIZE = 512


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """An int side or an (height, width) pair, validated."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw


def to_rgb(image: Any) -> np.ndarray:
    """Any image as ``np.uint8 (H, W, 3)`` RGB.

    Accepts Pillow images of any mode (converted as by :func:`~cfviz.data.images.read_image`)
    and numpy arrays: ``(H, W)`` or ``(H, W, 1)`` grayscale, ``(H, W, 3)`` RGB, ``(H, W, 4)``
    RGBA (alpha dropped); ``uint8``, or floats in [0, 1].

    >>> to_rgb(np.array([[0, 255]], np.uint8)).shape
    (1, 2, 3)
    >>> to_rgb(np.ones((1, 1, 4))).tolist()
    [[[255, 255, 255]]]
    """
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        return pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.dtype == np.bool_ or arr.dtype.kind == "O":
        raise TypeError(f"expected an image array of numbers, got dtype {arr.dtype}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f":
            if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
                raise ValueError("float images must hold values in [0, 1]; convert to uint8 first")
            arr = np.rint(np.nan_to_num(arr) * 255.0).astype(np.uint8)
        else:
            raise TypeError(f"integer images must be uint8, got {arr.dtype}; use cfviz.data.read_image for 16-bit files")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[:, :, :3])
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")


def _resize_rgb(image: Any, size: int | tuple[int, int], resample: str) -> np.ndarray:
    from PIL import Image

    h, w = _size_hw(size)
    rgb = to_rgb(image)
    if rgb.shape[:2] == (h, w):
        return rgb
    filt = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[resample]
    return np.asarray(Image.fromarray(rgb).resize((w, h), filt), dtype=np.uint8)


def clip_transform(image: Any, size: int | tuple[int, int] = CLIP_SIZE, *,
                   mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Any:
    """CLIP input: ``torch.float32 (3, size, size)``, bicubic resize, ``(x / 255 - mean) / std``."""
    import torch

    rgb = _resize_rgb(image, size, "bicubic")
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).contiguous()


def diffusion_transform(image: Any, size: int | tuple[int, int] = DIFFUSION_SIZE) -> Any:
    """Diffusion input: ``torch.float32 (3, size, size)`` in [-1, 1], bilinear resize."""
    import torch

    rgb = _resize_rgb(image, size, "bilinear")
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def resize_mask(mask: Any, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a mask to ``size`` (int or (height, width)); ``np.uint8`` in {0, 1}.

    Any non-zero input value counts as 1.

    >>> resize_mask(np.array([[0, 1], [1, 0]]), 4).tolist()[0]
    [0, 0, 1, 1]
    """
    from PIL import Image

    h, w = _size_hw(size)
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {arr.shape}")
    binary = (np.nan_to_num(arr) > 0).astype(np.uint8)
    if binary.shape == (h, w):
        return binary
    return np.asarray(Image.fromarray(binary).resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)


def mask_to_tensor(mask: Any, size: int | tuple[int, int]) -> Any:
    """:func:`resize_mask` as a ``torch.float32 (size, size)`` tensor of 0.0 and 1.0."""
    import torch

    return torch.from_numpy(resize_mask(mask, size).astype(np.float32))


def _stack(items: Sequence[Any], fn: Any, what: str, **kwargs: Any) -> Any:
    import torch

    if len(items) == 0:
        raise ValueError(f"{what} needs at least one image")
    return torch.stack([fn(it, **kwargs) for it in items])


def clip_batch(images: Sequence[Any], size: int | tuple[int, int] = CLIP_SIZE) -> Any:
    """:func:`clip_transform` of each image, stacked to ``(N, 3, size, size)``."""
    return _stack(images, clip_transform, "clip_batch", size=size)


def diffusion_batch(images: Sequence[Any], size: int | tuple[int, int] = DIFFUSION_SIZE) -> Any:
    """:func:`diffusion_transform` of each image, stacked to ``(N, 3, size, size)``."""
    return _stack(images, diffusion_transform, "diffusion_batch", size=size)


def mask_batch(masks: Sequence[Any], size: int | tuple[int, int]) -> Any:
    """:func:`mask_to_tensor` of each mask, stacked to ``(N, size, size)``.

    Raises ``ValueError`` for a None mask (an unannotated sample): leave those samples out of
    pixel metrics rather than count them as defect-free.
    """
    if any(m is None for m in masks):
        raise ValueError("mask_batch got a None mask (a sample without pixel annotation); leave such samples "
                         "out of pixel-level batches")
    return _stack(masks, mask_to_tensor, "mask_batch", size=size)
