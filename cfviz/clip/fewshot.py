"""Few-shot map composition shared by WinCLIP+, PatchCLIP and the evaluation runner (no model needed).

From the embeddings of k normal references and of the queries (a
:class:`~cfviz.clip.windows.VisualEmbeddings` each, or its arrays read back from a capture store):

1. :func:`memory_banks` — one :class:`~cfviz.memory.MemoryBank` of reference patch features and
   one of reference window embeddings per scale;
2. :func:`few_shot_maps` — the visual association score ``0.5 * (1 - max cos)`` of every query
   patch and window against the same-kind bank, window scores aggregated onto the patches
   (harmonic by default, as WinCLIP+), then the patch map and the per-scale maps merged
   (arithmetic mean by default, as WinCLIP+ and PatchCLIP).

:meth:`WinCLIP.predict_embeddings <cfviz.clip.winclip.WinCLIP.predict_embeddings>`,
:meth:`PatchCLIP.predict_embeddings <cfviz.clip.patchclip.PatchCLIP.predict_embeddings>` and
:mod:`cfviz.evaluation.clip_branch` all call these two functions, so a model run on images and
a run scored from stored embeddings compose their maps by one piece of code.

>>> import torch
>>> from cfviz.clip.windows import window_boxes
>>> g = torch.Generator().manual_seed(0)
>>> ref, query = torch.randn(1, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
>>> boxes = {2: window_boxes((3, 3), 2, 1)}
>>> banks = memory_banks(ref, {2: torch.randn(1, 4, 4, generator=g)})
>>> fs = few_shot_maps(banks, query, {2: torch.randn(2, 4, 4, generator=g)}, boxes, (3, 3))
>>> fs.map.shape, fs.patch.shape, fs.windows[2].shape, fs.window_maps[2].shape
(torch.Size([2, 3, 3]), torch.Size([2, 3, 3]), torch.Size([2, 4]), torch.Size([2, 3, 3]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.clip.scores import MEANS, visual_association_score
from cfviz.clip.windows import AGGREGATIONS, aggregate, check_choice

#: Patch features a memory bank can hold: the projected patch embeddings (joint space) or the
#: ``ln_post`` patch tokens before projection (what anomalib's WinCLIP+ stores).
PATCH_FEATURES = ("embeds", "tokens")


@dataclass
class FewShotMaps:
    """Few-shot maps of a batch of queries (all on the patch grid ``(gh, gw)``).

    Attributes
    ----------
    map:
        ``(B, gh, gw)`` the merged few-shot map (WinCLIP+'s few-shot map, PatchCLIP's ``M_clip_V``).
    patch:
        ``(B, gh, gw)`` visual association scores of the patches.
    windows:
        ``scale -> (B, n)`` visual association scores of the windows.
    window_maps:
        ``scale -> (B, gh, gw)`` the window scores aggregated onto the patches.
    """

    map: Any
    patch: Any
    windows: dict[int, Any]
    window_maps: dict[int, Any]


def patch_features(emb: Any, kind: str = "embeds") -> Any:
    """The patch features of ``emb`` that a bank holds: ``"embeds"`` (projected) or ``"tokens"`` (``ln_post``)."""
    return emb.patch_tokens if check_choice(kind, PATCH_FEATURES, "patch_features") == "tokens" else emb.patches


def memory_banks(patches: Any, windows: Mapping[int, Any], *, device: Any = None) -> dict[Any, Any]:
    """``{"patch": bank, scale: bank, ...}`` from reference patch features ``(..., D)`` and window embeddings.

    Leading dimensions (references, patches or windows) are flattened: every reference patch
    (window) is one bank entry.
    """
    from cfviz.memory import MemoryBank

    banks = {"patch": MemoryBank(patches.reshape(-1, patches.shape[-1]), device=device)}
    banks.update({s: MemoryBank(w.reshape(-1, w.shape[-1]), device=device) for s, w in windows.items()})
    return banks


def association_scores(banks: Mapping[Any, Any], patches: Any, windows: Mapping[int, Any],
                       grid: Sequence[int]) -> tuple[Any, dict[int, Any]]:
    """Visual association scores of query patches ``(B, gh, gw)`` and, per scale, windows ``(B, n)``."""
    gh, gw = grid
    patch = visual_association_score(banks["patch"], patches).reshape(-1, gh, gw)
    return patch, {s: visual_association_score(banks[s], w) for s, w in windows.items()}


def few_shot_maps(banks: Mapping[Any, Any], patches: Any, windows: Mapping[int, Any], boxes: Mapping[int, Any],
                  grid: Sequence[int], *, aggregation: str = "harmonic", combine: str = "mean",
                  use_patches: bool = True) -> FewShotMaps:
    """Score queries against reference banks (:func:`memory_banks`) and compose the few-shot map.

    Parameters
    ----------
    banks:
        From :func:`memory_banks` (a ``"patch"`` bank and one per scale in ``windows``).
    patches, windows:
        The queries' patch features ``(B, P, D)`` (the kind the patch bank holds) and window
        embeddings ``scale -> (B, n, D)``.
    boxes, grid:
        Window boxes per scale and the patch grid (:class:`~cfviz.clip.windows.VisualEmbeddings`).
    aggregation:
        Window scores onto patches: ``"harmonic"`` (WinCLIP, the default) or ``"mean"``.
    combine:
        Patch map and per-scale maps into one: ``"mean"`` (WinCLIP+ and PatchCLIP) or ``"harmonic"``.
    use_patches:
        Include the patch map in the merge (``False``: windows only).
    """
    check_choice(aggregation, AGGREGATIONS, "aggregation")
    check_choice(combine, MEANS, "combine")
    if not use_patches and not windows:
        raise ValueError("a few-shot map needs patches or windows: use_patches=True or give window scales")
    patch, window_scores = association_scores(banks, patches, windows, grid)
    window_maps = {s: aggregate(window_scores[s], boxes[s], grid, aggregation) for s in windows}
    layers = ([patch] if use_patches else []) + list(window_maps.values())
    return FewShotMaps(map=MEANS[combine](layers), patch=patch, windows=window_scores, window_maps=window_maps)
