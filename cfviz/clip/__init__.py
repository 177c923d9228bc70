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

_EXPORTS: dict[str, tuple[str, ...]] = {
    ".winclip": ("WinCLIP", "WinCLIPResult", "combine_maps"),
    ".patchclip": ("PatchCLIP", "PatchCLIPResult"),
    ".base": ("WindowClipModel", "NotFittedError"),
    ".prompts": ("prompt_ensemble", "clean_class_name", "NORMAL_STATES", "ANOMALOUS_STATES", "TEMPLATES"),
    ".text": ("text_anchors", "encode_prompts", "clear_text_cache"),
    ".windows": ("window_boxes", "window_patch_indices", "incidence_matrix", "harmonic_aggregation",
                 "mean_aggregation", "WindowEncoder", "VisualEmbeddings"),
    ".scores": ("class_scores", "visual_association_score", "harmonic_mean", "upsample"),
    ".posembed": ("resize_clip", "interpolate_pos_embed"),
    ".aaclip.model": ("AAClip",),
    ".aaclip.config": ("AAClipConfig",),
    ".aaclip.train": ("train_aaclip",),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
