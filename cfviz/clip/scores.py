"""Score functions shared by WinCLIP and PatchCLIP: text class scores, visual association
scores, the harmonic mean of maps, and bilinear upsampling.

Equations (``methods.md`` section 2.3, ``tau = 0.07``)::

    ascore_0(x) = exp(<f,g_a>/tau) / (exp(<f,g_n>/tau) + exp(<f,g_a>/tau))   # = sigmoid((<f,g_a> - <f,g_n>)/tau)
    VAS(z)      = 0.5 * min_r (1 - cos(z, r))
    H(M_1..M_m) = m / sum_i 1/M_i                                          # 0 where any M_i = 0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: WinCLIP's softmax temperature (anomalib ``TEMPERATURE``; Accurate-WinCLIP divides by 0.07).
TEMPERATURE = 0.07


def class_scores(embeddings: Any, anchors: Any, temperature: float = TEMPERATURE) -> Any:
    """Probability of the anomalous anchor, ``(...)``, from embeddings ``(..., D)``.

    Softmax over the cosine similarities to ``[normal, anomalous]`` divided by ``temperature``,
    written as a sigmoid of their difference (the same value, without overflow).

    >>> import torch
    >>> anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> class_scores(torch.tensor([[1.0, 1.0], [0.0, 3.0]]), anchors).round(decimals=4)
    tensor([0.5000, 1.0000])
    """
    import torch
    from torch.nn.functional import normalize

    check_temperature(temperature)
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    emb = torch.as_tensor(embeddings).float()
    if anchors.ndim != 2 or anchors.shape[0] != 2 or emb.shape[-1] != anchors.shape[1]:
        raise ValueError(f"anchors must be (2, D) [normal, anomalous] matching embeddings (..., D); got "
                         f"{tuple(anchors.shape)} and {tuple(emb.shape)}")
    cos = normalize(emb, dim=-1) @ normalize(anchors.to(emb.device), dim=-1).T  # (..., 2)
    return torch.sigmoid((cos[..., 1] - cos[..., 0]) / temperature)


def check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number (WinCLIP: 0.07), got {temperature!r}")


def visual_association_score(bank: Any, queries: Any) -> Any:
    """WinCLIP+'s VAS ``0.5 * (1 - max cos)`` of each query ``(..., D)`` to a memory bank: ``(...)``.

    ``bank`` is a :class:`cfviz.memory.MemoryBank`. Rounding can make ``1 - max cos`` a hair
    below 0 for a query that is in the bank; it is clamped to 0 so that harmonic means stay
    defined.

    >>> import torch
    >>> from cfviz.memory import MemoryBank
    >>> visual_association_score(MemoryBank(torch.eye(2)), torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]))
    tensor([[0.0000, 0.5000]])
    """
    import torch

    q = torch.as_tensor(queries)
    if q.ndim < 1 or q.shape[-1] != bank.dim:
        raise ValueError(f"queries must end with the bank's dimension {bank.dim}, got shape {tuple(q.shape)}")
    flat = q.reshape(-1, q.shape[-1])
    return (0.5 * bank.distance(flat).clamp_min(0.0)).reshape(q.shape[:-1])


def harmonic_mean(maps: Sequence[Any]) -> Any:
    """Element-wise harmonic mean of same-shape maps (0 wherever one of them is 0).

    >>> import torch
    >>> harmonic_mean([torch.tensor([0.5, 0.2]), torch.tensor([0.5, 0.0])])
    tensor([0.5000, 0.0000])
    """
    import torch

    if not maps:
        raise ValueError("harmonic_mean needs at least one map")
    stacked = torch.stack([torch.as_tensor(m).float() for m in maps])
    return len(maps) / stacked.reciprocal().sum(dim=0)  # 1/0 = inf -> result 0


def arithmetic_mean(maps: Sequence[Any]) -> Any:
    """Element-wise mean of same-shape maps."""
    import torch

    if not maps:
        raise ValueError("arithmetic_mean needs at least one map")
    return torch.stack([torch.as_tensor(m).float() for m in maps]).mean(dim=0)


MEANS = {"mean": arithmetic_mean, "harmonic": harmonic_mean}


def upsample(maps: Any, size: int | Sequence[int], mode: str = "bilinear") -> Any:
    """Resize ``(h, w)`` or ``(B, h, w)`` maps to ``size`` (bilinear, ``align_corners=False``).

    WinCLIP's maps live on the patch grid; this gives pixel maps for metrics and overlays.

    >>> import torch
    >>> upsample(torch.zeros(2, 15, 15), 240).shape
    torch.Size([2, 240, 240])
    """
    import torch
    from torch.nn.functional import interpolate

    maps = torch.as_tensor(maps).float()
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be (h, w) or (batch, h, w), got shape {tuple(maps.shape)}")
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    x = maps[None, None] if maps.ndim == 2 else maps[:, None]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = interpolate(x, size=size, mode=mode, **kwargs)
    return out[0, 0] if maps.ndim == 2 else out[:, 0]
