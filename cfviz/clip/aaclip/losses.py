"""AA-CLIP's training losses, as in the released ``forward_utils.py``.

* :func:`focal_loss` — FocalLoss(gamma=2, smooth=1e-5) on 2-channel probabilities;
* :func:`dice_loss` — binary Dice (smooth 1) of one probability channel against a target;
* :func:`segmentation_loss` — focal + Dice(channel 0, 1 - mask) + Dice(channel 1, mask) of the
  softmax of the similarity logits upsampled bilinearly to the mask (``align_corners=True`` as
  released in ``calculate_similarity_map``; ``False`` is ours, the rule of cfviz's other maps);
* :func:`disentangle_loss` — ``(mean_b <T_N, T_A>)^2`` (paper: ``|<T_N, T_A>|^2``, weight gamma = 0.1);
* :func:`classification_loss` — cross-entropy of ``det @ [T_N, T_A]`` (no temperature) against labels.

Example
-------
>>> import torch
>>> logits = torch.zeros(1, 2, 4, 4); logits[:, 1, :2] = 9.0; logits[:, 0, 2:] = 9.0
>>> mask = torch.zeros(1, 4, 4); mask[:, :2] = 1
>>> bool(segmentation_loss(logits, mask) < segmentation_loss(logits, 1 - mask))
True
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def focal_loss(probs: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Mean of ``-(1 - p_t)^gamma log p_t`` with label smoothing, for ``probs (B, C, H, W)`` and integer ``target (B, H, W)``."""
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)
    one_hot = F.one_hot(target.reshape(-1).long(), c).to(p.dtype)
    one_hot = one_hot.clamp(smooth / max(c - 1, 1), 1.0 - smooth)
    pt = (one_hot * p).sum(dim=1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean_b (2 |P T| + s) / (|P| + |T| + s)`` for ``(B, H, W)`` probabilities and targets."""
    n = probs.shape[0]
    p, t = probs.reshape(n, -1), target.reshape(n, -1).to(probs.dtype)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1 - dice.sum() / n


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, *, align_corners: bool = True) -> torch.Tensor:
    """Focal + Dice loss of 2-channel similarity logits ``(B, 2, h, w)`` against masks ``(B, H, W)``.

    Logits are upsampled (bilinear, ``align_corners`` as released unless told otherwise) to the
    mask size, then soft-maxed over the two channels ``[normal, anomalous]``.
    """
    if logits.ndim != 4 or logits.shape[1] != 2:
        raise ValueError(f"logits must be (B, 2, h, w), got {tuple(logits.shape)}")
    if masks.ndim != 3 or masks.shape[0] != logits.shape[0]:
        raise ValueError(f"masks must be (B, H, W) with B = {logits.shape[0]}, got {tuple(masks.shape)}")
    up = F.interpolate(logits, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=bool(align_corners))
    probs = up.softmax(dim=1)
    m = (masks > 0.5).to(probs.dtype)
    return focal_loss(probs, m) + dice_loss(probs[:, 0], 1 - m) + dice_loss(probs[:, 1], m)


def disentangle_loss(anchors: torch.Tensor) -> torch.Tensor:
    """``(mean over the batch of <T_N, T_A>)^2`` for anchors ``(B, 2, D)`` or ``(2, D)``.

    >>> disentangle_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor(0.)
    """
    a = anchors if anchors.ndim == 3 else anchors[None]
    return (a[:, 0] * a[:, 1]).sum(-1).mean().pow(2)


def classification_loss(det: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``det (B, D) . anchors (B, 2, D)`` (no temperature, as released) against labels ``(B,)``."""
    logits = torch.einsum("bd,bkd->bk", det, anchors)
    return F.cross_entropy(logits, labels.long())
