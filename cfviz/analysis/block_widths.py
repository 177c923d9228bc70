"""Channel widths of UNet blocks, and which (query, reference) block pairs M_diff_V can compare as they are.

The block-matching ablation (paper Table 5, :func:`cfviz.analysis.ablations.matching_table`)
compares query features of one block with reference features of another. Two blocks of the same
width compare directly (cosine distance of the feature vectors). Blocks of different widths do not:
cfviz can bridge them by averaging groups of adjacent channels of the wider one
(:func:`cfviz.diffusion.mapdiff.match_channels`, ours), but that changes the features of one
side whatever the hypothesis, so a bridged pair measures the bridge as much as the mismatch. By
default the ablation compares only blocks of equal width (``width_bridge="none"``);
``width_bridge="average"`` adds the bridged pairs, marked as such.

Widths of Stable Diffusion 1.x and 2.x (``block_out_channels`` 320, 640, 1280, 1280; the output
of each block, which is what ``feat/<block>`` records):

==========  =====================================================================
width       blocks (each pair of two of them compares as it is)
==========  =====================================================================
320         ``down_blocks.0``, ``up_blocks.3``
640         ``down_blocks.1``, ``up_blocks.2``
1280        ``down_blocks.2``, ``down_blocks.3``, ``mid_block``, ``up_blocks.0``, ``up_blocks.1``
==========  =====================================================================

So among the decoder blocks ``up_blocks.1`` (1280), ``up_blocks.2`` (640) and ``up_blocks.3``
(320) every mismatched pair has different widths: only ``up_blocks.0``/``up_blocks.1`` (and the
encoder's 1280-wide blocks and ``mid_block``) mismatch at equal width.

>>> from cfviz.models._config import model_config
>>> w = unet_block_widths(model_config("sd2_inpainting_unet"))
>>> w["up_blocks.1"], w["up_blocks.2"], w["up_blocks.3"], w["mid_block"]
(1280, 640, 320, 1280)
>>> equal_width_pairs(["up_blocks.0", "up_blocks.1", "up_blocks.2"], w)
[('up_blocks.0', 'up_blocks.0'), ('up_blocks.0', 'up_blocks.1'), ('up_blocks.1', 'up_blocks.0'), ('up_blocks.1', 'up_blocks.1'), ('up_blocks.2', 'up_blocks.2')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: How the block-matching ablation treats blocks of different widths: leave the pair out
#: (``"none"``, default) or average adjacent channels of the wider block (``"average"``, ours).
WIDTH_BRIDGES = ("none", "average")


def unet_block_widths(config: Mapping[str, Any]) -> dict[str, int]:
    """Output channels of every block of a diffusers ``UNet2DConditionModel`` configuration.

    ``down_blocks.i`` gives ``block_out_channels[i]``, ``mid_block`` the last of them, and
    ``up_blocks.i`` the reversed list's ``i``-th (the decoder mirrors the encoder).
    """
    widths = [int(c) for c in config["block_out_channels"]]
    out = {f"down_blocks.{i}": c for i, c in enumerate(widths)}
    out["mid_block"] = widths[-1]
    out.update({f"up_blocks.{i}": c for i, c in enumerate(reversed(widths))})
    return out


def stored_block_widths(store: Any, blocks: Sequence[str]) -> dict[str, int]:
    """Widths of ``blocks`` as a store holds them: the channel axis of any entry's ``feat/<block>``.

    Read from the entries' recorded shapes (no tensor is loaded). A compact store keeps no
    features (:mod:`cfviz.evaluation.compact`); then the widths come from the shipped
    configuration of its denoiser when the store's identity names an SD 1.x/2.x UNet (tiny,
    random or real weights: the architectures the configurations describe). Raises ``ValueError``
    naming the blocks it could not find.
    """
    want = list(dict.fromkeys(blocks))
    found: dict[str, int] = {}
    for image_id in store.ids:
        shapes = store[image_id].meta.get("tensors", {})
        for b in want:
            shape = shapes.get(f"feat/{b}", {}).get("shape")
            if b not in found and shape and len(shape) >= 3:
                found[b] = int(shape[-3])  # (timesteps, C, h, w)
        if len(found) == len(want):
            return found
    known = _config_widths(store)
    found.update({b: known[b] for b in want if b not in found and b in known})
    missing = [b for b in want if b not in found]
    if missing:
        raise ValueError(f"the store at {store.path} records no feature widths of {missing} (a compact store of "
                         "a denoiser cfviz has no configuration for); give the pairs to compare explicitly")
    return found


def _config_widths(store: Any) -> dict[str, int]:
    """Block widths of the store's denoiser from the shipped UNet configurations (SD 1.x/2.x only)."""
    from cfviz.models._config import model_config

    models = (getattr(store, "config", None) or {}).get("models", {})
    if models.get("family", "sd") != "sd":  # SDXL and transformer families: not tabled here
        return {}
    diffusion = str(models.get("diffusion", ""))
    if diffusion.startswith("tiny") and diffusion != "tiny":  # the other tiny families have other widths
        return {}
    return unet_block_widths(model_config("tiny_inpainting_unet" if diffusion == "tiny" else "sd2_inpainting_unet"))


def equal_width_pairs(blocks: Sequence[str], widths: Mapping[str, int]) -> list[tuple[str, str]]:
    """Every (query, reference) pair of ``blocks`` whose widths are equal, matched pairs included."""
    return [(q, r) for q in blocks for r in blocks if widths[q] == widths[r]]


def block_pairs(blocks: Sequence[str], widths: Mapping[str, int], width_bridge: str = "none") -> Any:
    """What the block-matching grid does with each (query, reference) pair of ``blocks``: a DataFrame.

    Columns query, reference (short names), query_width, reference_width and ``cell``: ``"as
    is"`` (equal widths), ``"bridged"`` (different widths, adjacent channels averaged: only with
    ``width_bridge="average"``) or ``"left out"`` (different widths, the default).

    >>> block_pairs(["up_blocks.1", "up_blocks.2"], {"up_blocks.1": 1280, "up_blocks.2": 640}).cell.tolist()
    ['as is', 'left out', 'left out', 'as is']
    """
    import pandas as pd

    from cfviz.capture.naming import short_name

    if width_bridge not in WIDTH_BRIDGES:
        raise ValueError(f"width_bridge must be one of {', '.join(WIDTH_BRIDGES)}, got {width_bridge!r}")
    rows = []
    for q in blocks:
        for r in blocks:
            same = widths[q] == widths[r]
            cell = "as is" if same else ("bridged" if width_bridge == "average" else "left out")
            rows.append({"query": short_name(q), "reference": short_name(r), "query_width": widths[q],
                         "reference_width": widths[r], "cell": cell})
    return pd.DataFrame(rows)
