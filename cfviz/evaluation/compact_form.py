"""What a compacted capture store entry holds, and how scoring reads it (see :mod:`cfviz.evaluation.compact`).

A compacted test entry keeps M_diff_V's distance maps under ``mdv/<tq>/<bq>/<tr>/<br>/<draw>``
(:func:`map_name`) in place of its UNet features; :func:`stored_visual_maps` reads them back for
scoring, or says which setting the compaction did not keep. The compaction itself (which needs
scoring's functions to compute the maps) is :mod:`cfviz.evaluation.compact`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.capture.store import CaptureStore
from cfviz.errors import ConfigError
from cfviz.evaluation.config import Pair, whole_timestep

#: Tensor group of the stored M_diff_V maps in a compacted test entry.
MAP_GROUP = "mdv"


class CompactStoreError(ConfigError):
    """A compact store lacks what a setting needs (its features were replaced by distance maps)."""


def draw_key(ref_ids: Sequence[str]) -> str:
    """A short stable name for a reference draw (the maps depend on which images, in which order)."""
    return hashlib.sha1("\n".join(ref_ids).encode("utf-8")).hexdigest()[:12]


def map_name(pair: Pair, ref_ids: Sequence[str]) -> str:
    """The tensor name of one stored M_diff_V map.

    >>> map_name((100, "up_blocks.1", 400, "up_blocks.2"), ["a/train/good/000"])
    'mdv/100/up_blocks.1/400/up_blocks.2/49c6df01704e'
    """
    t_q, b_q, t_r, b_r = pair
    return f"{MAP_GROUP}/{whole_timestep(t_q)}/{b_q}/{whole_timestep(t_r)}/{b_r}/{draw_key(ref_ids)}"


def is_compacted(meta: dict[str, Any]) -> bool:
    """True for an entry rewritten by compaction (its ``feat/*`` are gone)."""
    return meta.get("form") == "compact"


#: The end of every refusal of a compact store: the settings that would have kept what is asked for.
FLAGS_HINT = ("extract into another store with {store_form} full (it keeps the features), or with {store_form} "
              "compact and {shots}/{seeds} listing every setting you will score (compaction keeps the matching "
              "grid of the stored {extraction.timesteps} and {extraction.features})")
FLAG_MENTIONS = ("shots", "seeds", "extraction.timesteps", "extraction.features")


def describe_pair(pair: Pair) -> str:
    return f"query timestep {pair[0]} of {pair[1]}, reference timestep {pair[2]} of {pair[3]}"


def kept_maps(meta: dict[str, Any]) -> str:
    kept = meta.get("visual_maps") or {}
    pairs = [tuple(p) for p in kept.get("pairs", [])]
    draws = sorted((d["shots"], s) for d in (kept.get("draws") or {}).values() for s in d["seeds"])
    shown = "; ".join(describe_pair(p) for p in pairs[:4]) + (f"; and {len(pairs) - 4} more" if len(pairs) > 4 else "")
    return f"pairs: {shown or 'none'}; (shots, seed): {draws or 'none'}"


def stored_visual_maps(store: CaptureStore, ids: Sequence[str], ref_ids: Sequence[str], pair: Pair) -> np.ndarray | None:
    """M_diff_V ``(N, h, w)`` read from a compact store, or ``None`` when the test entries hold features.

    Raises :class:`CompactStoreError` naming the pair and the reference draw when the store was
    compacted without them, or when a compaction was cut short (some entries compacted, some not).
    """
    entries = [store[i] for i in ids]
    compacted = [e for e in entries if is_compacted(e.meta)]
    if not compacted:
        return None
    name = map_name(pair, ref_ids)
    if len(compacted) != len(entries):
        raise CompactStoreError(f"the compaction of the capture store {store.path} was cut short ({len(compacted)} "
                                f"of {len(entries)} images of this set compacted); rerun the same evaluation with "
                                "{store_form} compact to finish it", "store_form")
    if not all(name in e.meta.get("tensors", {}) for e in entries):
        raise CompactStoreError(
            f"the compact capture store {store.path} has no M_diff_V for {describe_pair(pair)} with the "
            f"{len(ref_ids)}-shot references {list(ref_ids)[:4]}{' ...' if len(ref_ids) > 4 else ''}: compaction "
            f"replaced the test images' features by the maps it was asked for ({kept_maps(compacted[0].meta)}); "
            + FLAGS_HINT, "store_form", mentions=FLAG_MENTIONS)
    return np.stack([e[name].numpy() for e in entries])
