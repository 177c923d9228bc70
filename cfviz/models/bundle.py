"""``ClipBundle``: an open_clip model together with what cfviz needs to feed it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class ClipBundle:
    """A CLIP model in eval mode plus its tokenizer, input geometry and provenance.

    Every CLIP loader in :mod:`cfviz.models` returns one (``load_clip``, ``random_clip``,
    ``tiny_clip``).

    Attributes
    ----------
    model:
        The open_clip ``CLIP`` module, in eval mode.
    tokenizer:
        Callable ``list[str] -> LongTensor [N, context_length]`` (open_clip's tokenizer).
    image_size, patch_size:
        Square input side and patch side in pixels (240 and 16 for ``ViT-B-16-plus-240``).
    grid_size:
        Patch grid ``(h, w)``, e.g. ``(15, 15)``.
    embed_dim:
        Size of the joint image-text embedding.
    mean, std:
        Per-channel normalisation the weights were trained with.
    name:
        Architecture name (an open_clip model name or a cfviz config name).
    pretrained:
        Pretrained tag or checkpoint path; ``None`` for random weights.
    weights:
        ``"pretrained"`` or ``"random"``.
    seed:
        Seed of the random weights; ``None`` for pretrained weights.
    device, dtype:
        Where the model lives and its parameter dtype (as strings, e.g. ``"cpu"``, ``"float32"``).

    Example
    -------
    >>> from cfviz.models import tiny_clip
    >>> b = tiny_clip(seed=0)
    >>> b.grid_size, b.embed_dim, b.weights
    ((15, 15), 32, 'random')
    """

    model: Any
    tokenizer: Callable[[Sequence[str]], Any]
    image_size: int
    patch_size: int
    grid_size: tuple[int, int]
    embed_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    pretrained: str | None
    weights: str
    seed: int | None
    device: str
    dtype: str

    @property
    def context_length(self) -> int:
        """Number of text token positions (77 for CLIP)."""
        return int(self.model.context_length)

    @property
    def cfviz_info(self) -> dict[str, Any]:
        """Provenance (a new dict, read by :func:`cfviz.models.model_info`): the model's with this bundle's fields."""
        attached = getattr(self.model, "cfviz_info", None)
        info = dict(attached) if isinstance(attached, dict) else {}
        info.update(kind="clip", library="open_clip", name=self.name, revision=self.pretrained,
                    pretrained=self.pretrained, weights=self.weights, seed=self.seed, dtype=self.dtype,
                    device=self.device)
        info.setdefault("source", "config" if self.weights == "random" else "local")
        return info

    def info(self) -> dict[str, Any]:
        """Provenance as a JSON-ready dict (same as :func:`cfviz.models.model_info`)."""
        return self.cfviz_info
