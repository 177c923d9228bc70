"""Adapted forward passes through open_clip's towers, block by block (no hooks, no model surgery).

The transformer blocks are called one at a time; after block ``i < K`` the adapter output is
mixed in (:func:`~cfviz.clip.aaclip.adapters.residual_mix`), and the tokens after the requested
levels are kept. CLIP's weights are never modified, so one bundle serves plain CLIP and any
number of AA-CLIP adapters at once.

``vv_from`` runs blocks from that index on with V-V self-attention (``q = k = v``), the
"surgery" (DPAM) the released code applies to the frozen CLIP that produces stage-1 patch
features. ``vv_axis`` says what attends to what: ``"batch"`` (the released code: its surgery
``Attention`` receives sequence-first ``(L, N, D)`` tokens but reads them as ``(B, N, C)``, so at
each token position the images of the batch attend to each other) or ``"tokens"`` (ours, the
DPAM method as described: the tokens of each image attend to each other).

:func:`mlp_activation` runs the towers with another MLP activation (exact GELU or QuickGELU)
without changing the model outside the ``with`` block.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> b = tiny_clip(seed=0)
>>> x = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
>>> lv = vision_tokens(b, x, levels=(2, 4))
>>> sorted(lv), lv[4].shape
([2, 4], torch.Size([1, 226, 64]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn import functional as F

from cfviz.clip.aaclip.adapters import residual_mix
from cfviz.clip.aaclip.config import ACTIVATIONS
from cfviz.clip.token_order import blocks_take_batch_first, run_block

#: V-V attention axes: across the batch at each token (released code) or across each image's tokens.
VV_AXES = ("batch", "tokens")


def _mlps(model: Any) -> list[Any]:
    towers = [getattr(getattr(model, "visual", None), "transformer", None), getattr(model, "transformer", None)]
    return [b.mlp for t in towers if t is not None for b in getattr(t, "resblocks", [])
            if isinstance(getattr(getattr(b, "mlp", None), "gelu", None), torch.nn.Module)]


def model_activation(model: Any) -> str:
    """``"gelu"`` or ``"quick_gelu"``: the activation an open_clip CLIP's MLPs were built with.

    >>> from cfviz.models import tiny_clip
    >>> model_activation(tiny_clip(seed=0).model)
    'gelu'
    """
    from open_clip.transformer import QuickGELU

    kinds = {"quick_gelu" if isinstance(m.gelu, QuickGELU) else "gelu" for m in _mlps(model)}
    if len(kinds) != 1:
        raise ValueError("cannot tell the MLP activation of this CLIP (open_clip ResidualAttentionBlocks with an "
                         "'mlp.gelu' module expected)")
    return kinds.pop()


@contextmanager
def mlp_activation(model: Any, activation: str) -> Iterator[None]:
    """Run ``model``'s MLPs with exact GELU (``"gelu"``) or ``"quick_gelu"`` inside the block; ``"model"``: as built.

    The activation has no weights, so only the module is swapped, and put back in ``finally``.

    >>> from cfviz.models import tiny_clip
    >>> m = tiny_clip(seed=0).model
    >>> with mlp_activation(m, "quick_gelu"):
    ...     model_activation(m)
    'quick_gelu'
    >>> model_activation(m)
    'gelu'
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS} (released AA-CLIP: gelu), got {activation!r}")
    mlps = [] if activation == "model" else _mlps(model)
    if activation != "model" and not mlps:
        raise ValueError("activation needs open_clip ResidualAttentionBlocks with an 'mlp.gelu' module; use "
                         "activation='model' for this CLIP")
    if mlps:
        from open_clip.transformer import QuickGELU
    saved = [m.gelu for m in mlps]
    try:
        for m in mlps:
            m.gelu = QuickGELU() if activation == "quick_gelu" else torch.nn.GELU()
        yield
    finally:
        for m, g in zip(mlps, saved):
            m.gelu = g


def in_own_dtype(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` computed in the module's parameter dtype, returned in ``x``'s dtype.

    The adapters are kept in float32 (they are small and trained in float32) while the CLIP may run
    in bfloat16 or float16 (``--dtype``); without the cast the two meet in one matmul and fail.
    """
    p = next(module.parameters(), None)
    if p is None or p.dtype == x.dtype:
        return module(x)
    return module(x.to(p.dtype)).to(x.dtype)


def run_blocks(transformer: Any, x: torch.Tensor, *, adapters: Sequence[Any] = (), weight: float = 0.0,
               levels: Sequence[int] = (), attn_mask: Any = None, vv_from: int | None = None,
               vv_axis: str = "batch", stop_early: bool = True) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run ``transformer.resblocks`` on batch-first tokens ``x`` with adapters after the first blocks.

    Returns the final tokens and ``{level: tokens after block level}`` (1-based). With
    ``stop_early`` the blocks after the deepest requested level are skipped. Blocks from index
    ``vv_from`` on use V-V attention along ``vv_axis`` (:func:`vv_block`).
    """
    # open_clip < 2.26 (no attribute) and batch_first=False builds: blocks take (L, N, D)
    batch_first = blocks_take_batch_first(transformer)
    keep = set(int(lv) for lv in levels)
    last = max(keep) if (keep and stop_early) else len(transformer.resblocks)
    out: dict[int, torch.Tensor] = {}
    for i, block in enumerate(transformer.resblocks[:last]):
        if vv_from is not None and i >= vv_from:  # V-V attention, computed here from the block's weights
            x = vv_block(block, x, axis=vv_axis)
        else:  # batch_first: the layout the block itself takes
            x = run_block(block, x, batch_first, attn_mask=attn_mask)
        if i < len(adapters):
            x = residual_mix(x, in_own_dtype(adapters[i], x), weight)
        if i + 1 in keep:
            out[i + 1] = x
    return x, out


def vv_block(block: Any, x: torch.Tensor, batch_first: bool = True, *, axis: str = "batch") -> torch.Tensor:
    """A ``ResidualAttentionBlock`` whose attention uses values as queries and keys (V-V attention).

    ``batch_first`` says the layout of ``x`` (and of the result); the attention is computed here
    from the block's weights, so the block's own layout does not matter. ``axis="batch"``: at
    each token position the images of the batch attend to each other (the released code; one
    image alone gets back its own values); ``"tokens"``: each image's tokens attend to each other.
    """
    if axis not in VV_AXES:
        raise ValueError(f"V-V attention axis must be one of {VV_AXES}, got {axis!r}")
    attn = getattr(block, "attn", None)
    if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise ValueError("V-V attention (surgery_blocks > 0) needs open_clip ResidualAttentionBlocks with "
                         "torch MultiheadAttention; set surgery_blocks=0 for this model")
    if not batch_first:
        x = x.transpose(0, 1)
    h = block.ln_1(x)
    width, heads = h.shape[-1], attn.num_heads
    w_v = attn.in_proj_weight[2 * width:]
    b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    v = F.linear(h, w_v, b_v)  # (B, L, W)
    if axis == "batch":  # the released block reads (L, B, W) as (batch, sequence, width)
        v = v.transpose(0, 1)
    b, n, _ = v.shape
    v = v.reshape(b, n, heads, width // heads).transpose(1, 2)  # (B, H, L, d)
    y = F.scaled_dot_product_attention(v, v, v).transpose(1, 2).reshape(b, n, width)
    if axis == "batch":
        y = y.transpose(0, 1)
    x = x + block.ls_1(attn.out_proj(y))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x if batch_first else x.transpose(0, 1)


def image_tokens(bundle: Any, images: torch.Tensor) -> torch.Tensor:
    """Class + patch tokens ``(B, 1 + L, W)`` after positional embedding and ``ln_pre``."""
    from cfviz.clip.windows import WindowEncoder

    return WindowEncoder(bundle, scales=()).tokens(images)


def vision_tokens(bundle: Any, images: torch.Tensor, *, levels: Sequence[int], adapters: Sequence[Any] = (),
                  weight: float = 0.0, vv_from: int | None = None, vv_axis: str = "batch") -> dict[int, torch.Tensor]:
    """``{level: (B, 1 + L, W)}`` vision tokens (before ``ln_post``) after the given 1-based blocks."""
    visual = bundle.model.visual
    _, out = run_blocks(visual.transformer, image_tokens(bundle, images), adapters=adapters, weight=weight,
                        levels=levels, vv_from=vv_from, vv_axis=vv_axis)
    return out


def text_features(bundle: Any, tokens: torch.Tensor, *, adapters: Sequence[Any] = (), weight: float = 0.0,
                  projection: Any = None) -> torch.Tensor:
    """Text embeddings ``(N, D)`` (not normalised) of tokenised prompts, with adapters.

    ``projection`` replaces CLIP's ``text_projection`` (AA-CLIP's ``text_proj``); ``None``
    keeps CLIP's, so without adapters this equals ``model.encode_text``.
    """
    from open_clip.transformer import text_global_pool

    model = bundle.model
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)
    x, _ = run_blocks(model.transformer, x, adapters=adapters, weight=weight, attn_mask=model.attn_mask,
                      stop_early=False)
    x = model.ln_final(x)
    eos = getattr(model, "text_eos_id", None)  # open_clip < 2.26 has neither the attribute nor the argument
    extra = {} if eos is None else {"eos_token_id": eos}
    x = text_global_pool(x, tokens, model.text_pool_type, **extra)
    if isinstance(x, tuple):  # older open_clip returns (pooled, tokens)
        x = x[0]
    if projection is not None:
        return projection(x.float())
    tp = model.text_projection
    if tp is None:
        return x.float()
    return (tp(x) if isinstance(tp, torch.nn.Linear) else x @ tp).float()
