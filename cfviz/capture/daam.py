"""DAAM's aggregation of cross-attention maps, as DAAM 0.2.0 (castorini/daam, Tang et al. 2022) does it.

``cache.aggregate(method="daam")`` gives DAAM's global heat map from a capture. What DAAM's
``trace`` does (``daam/trace.py`` and ``daam/hook.py`` at v0.2.0, read, not copied):

* **layers**: the ``attn2`` of every cross-attention block of the UNet's **down and up blocks**; the
  mid block only when heads are saved or loaded (not in the default trace), so never here;
* **resolutions**: a map is dropped when its *factor* is 8, where ``factor = int(sqrt(latent_hw //
  queries))`` and ``latent_hw`` is fixed by the model's configured image size (``unet.config.
  sample_size * vae_scale_factor``): 4096 (64x64) for 512 or 1024 px models, else 9216 (96x96). It
  depends on the image size, not on a resolution: 8x8 at 512 px on a 512 px model (SD1, SD2-base,
  SD2-inpainting: only the mid block has 8x8 layers), 12x12 at 384 px on a 768 px model (SD2-v),
  nothing at 384 px on a 512 px model;
* **time**: every UNet call's maps are **summed** (never divided by the number of steps);
* **space**: each (layer, head) sum is upsampled bicubically to ``sqrt(latent_hw)`` squared (64 or
  96, whatever the image size) and clamped at zero, then the **mean over (layer, head) pairs** is
  taken: a layer weighs as many heads as it has (SD2: 5, 10, 20), unlike cfviz's default
  aggregation (the mean over layers of each layer's head mean, every layer and resolution kept).

Where cfviz cannot be exact (ours, said so): with ``heads="mean"`` the clamp acts on each layer's head
mean instead of each head (they differ only where bicubic undershoots), and a word of several
sub-tokens is averaged before the clamp (DAAM: after). Capture with ``heads="all"`` and per-position
tokens for DAAM's numbers to float precision.

Example
-------
>>> daam_factor(12 * 12, model_size=768), daam_factor(8 * 8, model_size=512), daam_factor(12 * 12, model_size=512)
(8, 8, 5)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cfviz.errors import CaptureError

if TYPE_CHECKING:  # pragma: no cover
    from cfviz.capture.labelled import LabelledMaps

#: The factor DAAM drops (its ``factor != 8`` test).
DROPPED_FACTOR = 8


def daam_latent_hw(model_size: int) -> int:
    """DAAM's ``latent_hw``: 4096 for a 512 or 1024 px model, else 9216."""
    return 4096 if int(model_size) in (512, 1024) else 9216


def daam_factor(n_queries: int, model_size: int) -> int:
    """DAAM's spatial factor of a map with ``n_queries`` positions on a model of ``model_size`` px."""
    return int(math.sqrt(daam_latent_hw(model_size) // int(n_queries)))


def daam_layers(cache: Any, model_size: int) -> list[str]:
    """The recorded layers DAAM averages: down and up blocks, factor not 8, in recorded order."""
    kept = []
    for name in cache.attention:
        if not name.startswith(("down_blocks.", "up_blocks.")) or not cache.attention[name]:
            continue
        h, w = cache.resolution(name)
        if daam_factor(h * w, model_size) != DROPPED_FACTOR:
            kept.append(name)
    return kept


def daam_aggregate(cache: Any, *, steps: Any = None, tokens: Any = None,
                   model_size: int | None = None) -> LabelledMaps:
    """DAAM's global heat map ``(batch, token, h, w)`` from a capture (see the module docstring).

    ``model_size``: the model's configured image size in px (default: recorded by the capture for
    SD UNets: ``unet.config.sample_size * 8``).
    """
    import torch

    from cfviz.capture.labelled import LabelledMaps, resize_maps

    model_size = model_size if model_size is not None else cache.model_size
    if model_size is None:
        raise CaptureError("DAAM's aggregation depends on the model's configured image size, which this cache "
                           "does not record: pass model_size=pipe.unet.config.sample_size * pipe.vae_scale_factor")
    names = daam_layers(cache, model_size)
    if not names:
        raise CaptureError(f"no recorded layer is one DAAM averages (down/up-block cross-attention whose DAAM factor "
                           f"is not 8 on a {model_size} px model); recorded: {list(cache.attention)}")
    if cache.heads == "all":
        heads = cache.head_counts(names)
    else:
        missing = [n for n in names if n not in cache.layer_heads]
        if missing:
            raise CaptureError("DAAM weighs each layer by its head count, which this cache does not record: capture "
                               "with heads='all', or aggregate the cache of the live capture")
        heads = {n: int(cache.layer_heads[n]) for n in names}
    step_ids = cache._steps(steps)
    tok = cache._token_index(tokens)
    # a cache reduced over steps holds the mean: DAAM's sum is the mean times the steps it covers
    n_summed = len(cache.reduced_steps) if cache.reduced_steps is not None else 1
    side = math.isqrt(daam_latent_hw(model_size))
    total, pairs = None, 0
    for name in names:
        per = cache.attention[name]
        summed = torch.stack([per[s].float() for s in step_ids]).sum(0) * n_summed  # (B, [H,] K, h, w)
        if tok is not None:
            summed = summed.index_select(-3, torch.as_tensor(tok, device=summed.device))
        up = resize_maps(summed, side, "bicubic").clamp_min(0)  # DAAM interpolates (and clamps) every map
        if cache.heads == "all":
            part = up.sum(1)  # every head's clamped map
        else:
            part = up * heads[name]  # the head mean stands for each of the layer's heads
        total = part if total is None else total + part
        pairs += heads[name]
    assert total is not None
    labels = cache.labels if tok is None else [cache.labels[i] for i in tok]
    return LabelledMaps(total / pairs, ("batch", "token", "h", "w"), {"token": labels})
