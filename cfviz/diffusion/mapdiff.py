"""MapDiff's two maps from captured records.

* :func:`language_map` — M_diff_L: cross-attention of the [state] tokens ("damage", ...),
  averaged over heads, layers, timesteps and tokens on one grid.
* :func:`visual_map` — M_diff_V: cosine distance of each query feature vector to its nearest
  neighbour among the same features of k normal references (a :class:`~cfviz.memory.MemoryBank`).

Defaults (the paper leaves these open; each is a parameter so that notebooks can sweep it):
layers — every recorded cross-attention layer at 16x16 or finer (DAAM skips 8x8); timesteps —
all recorded; grid — the finest recorded resolution, bilinear; M_diff_V block — ``up_blocks.1``
at the matched timestep (DIFT found SD2 ``up_blocks.1`` features best for correspondence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfviz.capture.cache import CaptureCache
from cfviz.capture.naming import NamesFilter, select_names
from cfviz.errors import CfvizError
from cfviz.memory import MemoryBank

DEFAULT_FEATURE_BLOCK = "up_blocks.1"
DEFAULT_MIN_RESOLUTION = 16


def language_map(cache: CaptureCache, *, tokens: str | Sequence[str] | None = None, layers: NamesFilter = None,
                 min_resolution: int = DEFAULT_MIN_RESOLUTION, steps: int | Sequence[int] | None = None,
                 size: int | tuple[int, int] | None = None, mode: str = "bilinear") -> Any:
    """M_diff_L: ``(B, h, w)`` mean cross-attention of the chosen tokens.

    Parameters
    ----------
    cache:
        A capture (or a store entry's ``.cache()``) with attention for the [state] tokens.
    tokens:
        Token labels to average (default: every recorded token).
    layers:
        Filter over recorded layers (default: all); layers coarser than ``min_resolution`` (on
        their shorter side) are dropped.
    steps:
        Step indices to average (default: all).
    size:
        Output grid (default: the finest resolution among the chosen layers).

    Example
    -------
    >>> m = language_map(cap.cache, tokens="damage")  # doctest: +SKIP
    >>> m.shape  # doctest: +SKIP
    torch.Size([1, 64, 64])
    """
    names = select_names(cache.attention, layers, what="recorded layer", argument="layers")
    names = [n for n in names if min(cache.resolution(n)) >= min_resolution]
    if not names:
        raise CfvizError(f"no recorded layer is at least {min_resolution}x{min_resolution}; "
                         "lower min_resolution or record finer layers")
    if size is None:
        size = max((cache.resolution(n) for n in names), key=lambda hw: hw[0] * hw[1])
    maps = cache.attention_maps(names, steps=steps, tokens=tokens, size=size, mode=mode)
    over = [d for d in ("step", "layer", "head", "token") if d in maps.dims]
    return maps.mean(over).data  # (B, h, w)


def match_channels(features: Any, channels: int) -> Any:
    """Average groups of channels so that ``(N, C, h, w)`` features get ``channels`` channels.

    Needed only to compare blocks of different widths in the block-matching ablation (e.g.
    SD2's 1280-channel ``up_blocks.1`` against 640-channel ``up_blocks.2``): parameter-free and
    deterministic; with equal widths the features are returned unchanged.
    """
    import torch.nn.functional as F

    n, c, h, w = features.shape
    if c == channels:
        return features
    if channels > c:
        raise CfvizError(f"cannot widen {c}-channel features to {channels}; reduce the wider side instead")
    pooled = F.adaptive_avg_pool1d(features.float().permute(0, 2, 3, 1).reshape(-1, 1, c), channels)
    return pooled.reshape(n, h, w, channels).permute(0, 3, 1, 2)


def visual_map(query: Any, references: Any, *, bank_chunk: int = 16384, query_chunk: int = 4096) -> Any:
    """M_diff_V: ``(B, h, w)`` nearest-neighbour cosine distance of query features to references.

    Parameters
    ----------
    query:
        ``(B, C, h, w)`` features of the query images (one block, one timestep).
    references:
        ``(R, C', h', w')`` the same kind of features of the k normal references (every location
        of every reference joins the memory bank). Mismatched blocks or timesteps are allowed (for
        the matching ablation); different widths are reconciled by :func:`match_channels`.

    Example
    -------
    >>> import torch
    >>> ref = torch.randn(2, 8, 4, 4)
    >>> visual_map(ref[:1], ref).abs().max() < 1e-5
    tensor(True)
    """
    import torch

    query, references = torch.as_tensor(query).float(), torch.as_tensor(references).float()
    c = min(query.shape[1], references.shape[1])
    bank = MemoryBank.from_maps(match_channels(references, c), bank_chunk=bank_chunk, query_chunk=query_chunk)
    return bank.distance_map(match_channels(query, c))
