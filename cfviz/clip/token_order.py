"""Token order for open_clip transformers, right on every open_clip release cfviz supports.

open_clip has had two conventions:

- **open_clip < 2.26** (e.g. 2.24.0, the version anomalib pins): ``Transformer`` has no
  ``batch_first`` attribute; the whole stack *and* each block expect sequence-first tokens
  ``(L, N, D)`` (the towers permute before calling it).
- **open_clip >= 2.26**: ``Transformer.batch_first`` exists. The stack always takes batch-first
  ``(N, L, D)`` input and, when built with ``batch_first=False``, transposes it itself; each
  block takes ``(N, L, D)`` only when ``batch_first`` is true.

So the rule for a whole transformer is *attribute present → batch-first*, and for its blocks
*attribute true → batch-first*. ``getattr(t, "batch_first", True)`` gets both old cases wrong.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> tr = tiny_clip(seed=0).model.visual.transformer
>>> x = torch.randn(2, 5, tr.width)
>>> bool(torch.equal(run_transformer(tr, x), tr(x)))
True
"""

from __future__ import annotations

from typing import Any


def transformer_takes_batch_first(transformer: Any) -> bool:
    """Whether ``transformer(x)`` takes ``(N, L, D)`` (open_clip >= 2.26, any ``batch_first`` value)."""
    return hasattr(transformer, "batch_first")


def blocks_take_batch_first(transformer: Any) -> bool:
    """Whether each of ``transformer.resblocks`` takes ``(N, L, D)`` (``batch_first`` set and true)."""
    return bool(getattr(transformer, "batch_first", False))


def run_transformer(transformer: Any, x: Any, **kwargs: Any) -> Any:
    """Run the whole ``transformer`` on batch-first tokens ``x`` ``(N, L, D)``; return ``(N, L, D)``."""
    if transformer_takes_batch_first(transformer):
        return transformer(x, **kwargs)
    return transformer(x.transpose(0, 1), **kwargs).transpose(0, 1)


def run_block(block: Any, x: Any, batch_first: bool, **kwargs: Any) -> Any:
    """Run one block on batch-first tokens ``x``; ``batch_first`` is :func:`blocks_take_batch_first`."""
    if batch_first:
        return block(x, **kwargs)
    return block(x.transpose(0, 1), **kwargs).transpose(0, 1)
