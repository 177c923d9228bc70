"""AA-CLIP: anomaly-aware CLIP adapters (Ma et al., CVPR 2025), trainable and usable as a CLIP branch.

Residual adapters on the first ``K_T`` text and ``K_I`` vision transformer blocks of a frozen
open_clip model, projections of multi-level patch features for segmentation and a detection
projection for the image score, trained in two stages (text, then vision). See
``methods.md`` section 3 for the equations and the paper-vs-code discrepancies.

Modules (one concern each): ``config`` (hyper-parameters resolved against a model's depths),
``adapters`` (the trainable modules), ``encoders`` (the adapted forward passes), ``model``
(:class:`AAClip`: anchors, maps, scores, save/load), ``losses``, ``data`` (training sample
selection and batches), ``checkpoint`` (safetensors I/O, the epoch to evaluate), ``names``
(plain or the released code's descriptive class names), ``train`` (the two-stage loop),
``compare`` (before/after comparisons for notebooks).

Importing this package is light; names load on first use.

Example
-------
>>> import torch
>>> from cfviz.clip.aaclip import AAClip
>>> from cfviz.models import tiny_clip
>>> m = AAClip(tiny_clip(seed=0))
>>> m.predict(torch.zeros(1, 3, 240, 240), class_names=["brick"]).anomaly_map.shape
torch.Size([1, 15, 15])
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_EXPORTS: dict[str, tuple[str, ...]] = {
    ".config": ("AAClipConfig", "AAClipPrompts"),
    ".adapters": ("AAClipAdapters",),
    ".model": ("AAClip", "AAClipResult", "load_aaclip"),
    ".train": ("TrainConfig", "TrainReport", "train_aaclip"),
    ".data": ("training_records", "TrainingDataError"),
    ".checkpoint": ("latest_checkpoint", "epoch_checkpoint", "PAPER_EPOCH"),
    ".names": ("prompt_name", "DESCRIPTIVE_NAMES"),
    ".compare": ("study",),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
