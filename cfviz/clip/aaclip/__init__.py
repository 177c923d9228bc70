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

_LAZY: dict[str, str] = {
    "AAClipConfig": "cfviz.clip.aaclip.config",
    "AAClipPrompts": "cfviz.clip.aaclip.config",
    "AAClipAdapters": "cfviz.clip.aaclip.adapters",
    "AAClip": "cfviz.clip.aaclip.model",
    "AAClipResult": "cfviz.clip.aaclip.model",
    "TrainConfig": "cfviz.clip.aaclip.train",
    "TrainReport": "cfviz.clip.aaclip.train",
    "train_aaclip": "cfviz.clip.aaclip.train",
    "training_records": "cfviz.clip.aaclip.data",
    "TrainingDataError": "cfviz.clip.aaclip.data",
    "load_aaclip": "cfviz.clip.aaclip.model",
    "latest_checkpoint": "cfviz.clip.aaclip.checkpoint",
    "epoch_checkpoint": "cfviz.clip.aaclip.checkpoint",
    "PAPER_EPOCH": "cfviz.clip.aaclip.checkpoint",
    "prompt_name": "cfviz.clip.aaclip.names",
    "DESCRIPTIVE_NAMES": "cfviz.clip.aaclip.names",
    "study": "cfviz.clip.aaclip.compare",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
