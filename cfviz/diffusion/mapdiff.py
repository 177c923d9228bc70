"""MapDiff's two maps from captured records.

* :func:`language_map` — M_diff_L: cross-attention of the [state] tokens ("damage", ...),
  averaged over heads, layers, timesteps and tokens on one grid.
* :func:`visual_map` — M_diff_V: cosine distance of each query feature vector to its nearest
  neighbour among the same features of k normal references (a :class:`~cfviz.memory.MemoryBank`).

Defaults (the paper leaves these open; each is a parameter so that notebooks can sweep it):
layers — every recorded cross-attention layer at 16x16 or finer (ours; DAAM 0.2 also leaves out
SD2's 8x8 mid block at 512 px, see :mod:`cfviz.capture.daam`); timesteps —
all recorded; grid — the finest recorded resolution, bilinear; M_diff_V block — ``up_blocks.1``
at the matched timestep (DIFT found SD2 ``up_blocks.1`` features best for correspondence).

Two more choices, ours (see the README's "Choices"): several [state] words as an *ensemble*
(one prompt lists them; :func:`language_map` with ``tokens`` given as groups weighs each state
equally, :func:`state_groups`), and M_diff_V over several blocks of different widths
(:func:`pooled_visual_map`: the mean of per-block distance maps, or one nearest-neighbour search
over their concatenated, per-block normalised features).
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
#: How :func:`pooled_visual_map` pools blocks: mean of per-block distance maps, or concatenated features.
VISUAL_POOLINGS = ("mean", "concat")


def state_groups(states: Sequence[Sequence[str]], recorded: Sequence[str] | None = None) -> list[list[str]] | None:
    """The token groups M_diff_L weighs equally: one per state of an ensemble, ``None`` for one state.

    ``states`` is :attr:`cfviz.evaluation.config.ExtractionConfig.states`; with ``recorded`` (the
    entry's language words) only groups whose words were all recorded are kept.

    Why one prompt listing every state (ours): the UNet runs once per timestep whatever the
    number of states, and every word's map is in the store, so each state's share can be read
    back. The cost of this choice: in one prompt CLIP's causal text encoder lets later words see
    earlier ones, so a word's map is not the map of a prompt with that word alone. A
    prompt-per-state ensemble (as WinCLIP's compositional ensemble does for CLIP text
    embeddings) would cost one UNet call per state and timestep; it is not implemented.

    >>> state_groups([["damage"]]) is None, state_groups([["crack", "damage"], ["scratch"]])
    (True, [['crack', 'damage'], ['scratch']])
    """
    groups = [list(g) for g in states if g and (recorded is None or all(w in recorded for w in g))]
    return groups if len(groups) > 1 else None


def language_map(cache: CaptureCache, *, tokens: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
                 layers: NamesFilter = None,
                 min_resolution: int = DEFAULT_MIN_RESOLUTION, steps: int | Sequence[int] | None = None,
                 size: int | tuple[int, int] | None = None, mode: str = "bilinear") -> Any:
    """M_diff_L: ``(B, h, w)`` mean cross-attention of the chosen tokens.

    Parameters
    ----------
    cache:
        A capture (or a store entry's ``.cache()``) with attention for the [state] tokens.
    tokens:
        Token labels to average (default: every recorded token). Groups of labels (a list of
        lists: the states of an ensemble, :func:`state_groups`) are each averaged first, then the
        groups are averaged, so a two-word state weighs as much as a one-word one.
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
    groups = None
    if tokens is not None and not isinstance(tokens, str) and any(not isinstance(t, (str, int)) for t in tokens):
        groups = [[t] if isinstance(t, (str, int)) else list(t) for t in tokens]
        tokens = list(dict.fromkeys(t for g in groups for t in g))
    maps = cache.attention_maps(names, steps=steps, tokens=tokens, size=size, mode=mode)
    if groups is None:
        over = [d for d in ("step", "layer", "head", "token") if d in maps.dims]
        return maps.mean(over).data  # (B, h, w)
    per_token = maps.mean([d for d in ("step", "layer", "head") if d in maps.dims])  # (B, token, h, w)
    labels = list(per_token.coords["token"])
    axis = per_token.dims.index("token")
    parts = [per_token.data.index_select(axis, _index(labels, g, per_token.data.device)).float().mean(axis)
             for g in groups]
    return sum(parts[1:], parts[0]) / len(parts)


def _index(labels: list[Any], group: Sequence[Any], device: Any) -> Any:
    import torch

    return torch.as_tensor([labels.index(t) if not isinstance(t, int) else t for t in group], device=device)


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


def mean_on_finest_grid(maps: Sequence[Any]) -> Any:
    """Mean of ``(N, h_b, w_b)`` maps, each bilinearly resized to the finest grid among them.

    >>> import torch
    >>> mean_on_finest_grid([torch.zeros(1, 4, 4), torch.ones(1, 2, 2)]).shape
    torch.Size([1, 4, 4])
    """
    import torch
    import torch.nn.functional as F

    maps = [torch.as_tensor(m).float() for m in maps]
    grid = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    resized = [m if tuple(m.shape[-2:]) == grid else
               F.interpolate(m[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0] for m in maps]
    return torch.stack(resized).mean(0)


def pooled_visual_map(queries: Sequence[Any], references: Sequence[Any], pooling: str = "mean") -> Any:
    """M_diff_V over several blocks: ``(B, h, w)`` on the finest block grid.

    Parameters
    ----------
    queries, references:
        Per block, ``(B, C_b, h_b, w_b)`` query and ``(R, C_b', h_b', w_b')`` reference features
        (blocks may differ in width and grid).
    pooling:
        ``"mean"`` (default, ours): each block's :func:`visual_map` (cosine distance, in [0, 2]
        whatever the width, so blocks weigh equally), bilinearly resized to the finest grid,
        then averaged: a nearest neighbour per block. ``"concat"``: each block's features
        resized to the finest grid and L2-normalised per location, then concatenated along
        channels for one nearest-neighbour search (so every block weighs equally in the cosine,
        whatever its width): one joint nearest neighbour. This follows PatchCore's released code
        (Roth et al. 2022), which resizes layer 2 and 3 features to one grid and concatenates them
        at equal dimension per layer.

    One block is exactly :func:`visual_map`.

    >>> import torch
    >>> q = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    >>> pooled_visual_map(q, q, "concat").abs().max() < 1e-5, pooled_visual_map(q, q).shape
    (tensor(True), torch.Size([1, 4, 4]))
    """
    import torch
    import torch.nn.functional as F

    if pooling not in VISUAL_POOLINGS:
        raise CfvizError(f"pooling must be one of {', '.join(VISUAL_POOLINGS)}, got {pooling!r}")
    if len(queries) != len(references) or not queries:
        raise CfvizError(f"give the same number of query and reference blocks (at least one), got "
                         f"{len(queries)} and {len(references)}")
    if len(queries) == 1:
        return visual_map(queries[0], references[0])
    queries = [torch.as_tensor(q).float() for q in queries]
    references = [torch.as_tensor(r).float() for r in references]
    if pooling == "mean":
        return mean_on_finest_grid([visual_map(q, r) for q, r in zip(queries, references)])
    grid = max((tuple(q.shape[-2:]) for q in queries), key=lambda hw: hw[0] * hw[1])

    def joined(parts: Sequence[Any], size: tuple[int, int]) -> Any:
        parts = [p if tuple(p.shape[-2:]) == size else F.interpolate(p, size=size, mode="bilinear",
                                                                     align_corners=False) for p in parts]
        return torch.cat([F.normalize(p, dim=1) for p in parts], dim=1)

    widths = [(q.shape[1], r.shape[1]) for q, r in zip(queries, references)]
    if any(a != b for a, b in widths):
        raise CfvizError(f"pooling='concat' needs each query block as wide as its reference block, got {widths}")
    ref_grid = max((tuple(r.shape[-2:]) for r in references), key=lambda hw: hw[0] * hw[1])
    return visual_map(joined(queries, grid), joined(references, ref_grid))
