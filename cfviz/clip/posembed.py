"""Run an open_clip ViT at another input size: position embeddings interpolated on the patch grid.

A ViT's learned position embeddings are one vector per patch of its training grid (plus the
class token's). To feed it larger images, the patch part is reshaped to its grid, resized
bicubically to the new grid and flattened again; the class token's embedding is kept as is.
This is open_clip's ``resize_pos_embed`` (bicubic, ``align_corners=False``, antialias), which
AA-CLIP's released ``model/clip.py:create_model(model_name, img_size, ...)`` applies when it sets
``vision_cfg.image_size = img_size`` (518 px for ViT-L-14-336: a 37x37 grid instead of 24x24;
``methods.md`` 3.1-3.2).

:func:`resize_clip` gives a new :class:`~cfviz.models.bundle.ClipBundle` whose image tower takes
``image_size`` pixels. It shares every weight with the original except the position embedding
(no copy of the model), so a 518-px AA-CLIP and the 336-px PatchCLIP run on one set of weights.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> b = tiny_clip(seed=0)
>>> big = resize_clip(b, 480)
>>> big.image_size, big.grid_size, b.grid_size
(480, (30, 30), (15, 15))
>>> big.model.encode_image(torch.zeros(1, 3, 480, 480)).shape
torch.Size([1, 32])
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch.nn import functional as F

from cfviz.errors import ConfigError

#: Keys added to a resized bundle's provenance (``bundle.info()``).
INFO_KEYS = ("image_size", "pos_embed")


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], *, extra_tokens: int = 1,
                          mode: str = "bicubic") -> torch.Tensor:
    """Position embeddings ``(extra + gh*gw, W)`` resized to ``grid`` ``(h, w)``; the first ``extra`` kept.

    The old grid is the square root of the patch count. At the same grid the result equals the
    input (a copy).

    >>> p = torch.randn(1 + 4, 8)
    >>> interpolate_pos_embed(p, (4, 4)).shape
    torch.Size([17, 8])
    >>> bool(torch.equal(interpolate_pos_embed(p, (2, 2)), p))
    True
    """
    if pos_embed.ndim != 2 or pos_embed.shape[0] <= extra_tokens:
        raise ValueError(f"pos_embed must be (extra_tokens + patches, width), got {tuple(pos_embed.shape)}")
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive (rows, cols), got {grid}")
    tok, img = pos_embed[:extra_tokens], pos_embed[extra_tokens:]
    side = int(round(math.sqrt(img.shape[0])))
    if side * side != img.shape[0]:
        raise ValueError(f"{img.shape[0]} patch position embeddings do not form a square grid")
    if (side, side) == (gh, gw):
        return pos_embed.detach().clone()
    dtype = pos_embed.dtype
    x = img.detach().float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    # the same call as open_clip's resize_pos_embed (what AA-CLIP's create_model runs)
    x = F.interpolate(x, size=(gh, gw), mode=mode, antialias=mode in ("bilinear", "bicubic"), align_corners=False)
    x = x.permute(0, 2, 3, 1).reshape(gh * gw, -1)
    return torch.cat([tok.detach().float(), x], dim=0).to(dtype)


def resize_clip(bundle: Any, image_size: int) -> Any:
    """A bundle whose image tower takes ``image_size`` px (grid ``image_size // patch_size``).

    Weights are shared with ``bundle`` (changing one changes the other), except the interpolated
    position embedding. ``image_size`` must be a multiple of the patch size (518 = 37 x 14 for
    ViT-L-14-336); the bundle's own size returns ``bundle`` itself.

    Raises :class:`~cfviz.errors.ConfigError` for a size that does not fit.
    """
    patch = int(bundle.patch_size)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < patch \
            or image_size % patch:
        lo = max(patch, (int(image_size) // patch) * patch) if isinstance(image_size, int) else patch
        raise ConfigError(f"image size {image_size!r} does not fit {bundle.name}: it must be a multiple of its "
                          f"{patch} px patches, e.g. {lo} or {lo + patch}")
    if image_size == int(bundle.image_size):
        return bundle
    visual = bundle.model.visual
    if getattr(visual, "positional_embedding", None) is None or not hasattr(visual, "grid_size"):
        raise ConfigError(f"{bundle.name} has no learned ViT position embedding to interpolate; resizing needs an "
                          "open_clip VisionTransformer")
    grid = (image_size // patch, image_size // patch)
    new_pos = interpolate_pos_embed(visual.positional_embedding, grid)
    new_visual = _shallow(visual)
    new_visual._parameters["positional_embedding"] = torch.nn.Parameter(new_pos, requires_grad=False)
    new_visual.image_size = (image_size, image_size)
    new_visual.grid_size = grid
    model = _shallow(bundle.model)
    model._modules["visual"] = new_visual
    native = int(bundle.image_size)
    info = dict(getattr(bundle.model, "cfviz_info", {}) or {})
    info.update(image_size=image_size, pos_embed=f"bicubic from {native} px ({bundle.grid_size[0]}x"
                                                 f"{bundle.grid_size[1]}) to {grid[0]}x{grid[1]}")
    model.cfviz_info = info
    return dataclasses.replace(bundle, model=model, image_size=image_size, grid_size=grid)


def _shallow(module: torch.nn.Module) -> Any:
    """A copy of ``module`` whose parameter and child dicts are its own (their tensors are shared)."""
    new = copy.copy(module)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._modules = dict(module._modules)
    return new
