"""The CLIP branch: prompts, window/patch embeddings, WinCLIP / WinCLIP+ and PatchCLIP.

Importing this package is light (no torch, no open_clip); the names below load on first use.

Modules: ``prompts`` (WinCLIP's prompt ensemble), ``text`` (cached text anchors), ``windows``
(window boxes, batched window embeddings, harmonic aggregation), ``scores`` (class scores, visual
association scores, upsampling), ``base`` (shared model code), ``winclip``, ``patchclip``,
``posembed`` (a ViT at another input size: position embeddings interpolated), ``aaclip``.

Example
-------
>>> import torch
>>> from cfviz.clip import WinCLIP
>>> from cfviz.models import tiny_clip
>>> WinCLIP(tiny_clip(seed=0), class_name="bottle").predict(torch.zeros(1, 3, 240, 240)).anomaly_map.shape
torch.Size([1, 15, 15])
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    "WinCLIP": "cfviz.clip.winclip",
    "WinCLIPResult": "cfviz.clip.winclip",
    "combine_maps": "cfviz.clip.winclip",
    "PatchCLIP": "cfviz.clip.patchclip",
    "PatchCLIPResult": "cfviz.clip.patchclip",
    "WindowClipModel": "cfviz.clip.base",
    "NotFittedError": "cfviz.clip.base",
    "prompt_ensemble": "cfviz.clip.prompts",
    "clean_class_name": "cfviz.clip.prompts",
    "NORMAL_STATES": "cfviz.clip.prompts",
    "ANOMALOUS_STATES": "cfviz.clip.prompts",
    "TEMPLATES": "cfviz.clip.prompts",
    "text_anchors": "cfviz.clip.text",
    "encode_prompts": "cfviz.clip.text",
    "clear_text_cache": "cfviz.clip.text",
    "window_boxes": "cfviz.clip.windows",
    "window_patch_indices": "cfviz.clip.windows",
    "incidence_matrix": "cfviz.clip.windows",
    "harmonic_aggregation": "cfviz.clip.windows",
    "mean_aggregation": "cfviz.clip.windows",
    "WindowEncoder": "cfviz.clip.windows",
    "VisualEmbeddings": "cfviz.clip.windows",
    "class_scores": "cfviz.clip.scores",
    "visual_association_score": "cfviz.clip.scores",
    "harmonic_mean": "cfviz.clip.scores",
    "upsample": "cfviz.clip.scores",
    "resize_clip": "cfviz.clip.posembed",
    "interpolate_pos_embed": "cfviz.clip.posembed",
    "AAClip": "cfviz.clip.aaclip.model",
    "AAClipConfig": "cfviz.clip.aaclip.config",
    "train_aaclip": "cfviz.clip.aaclip.train",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
