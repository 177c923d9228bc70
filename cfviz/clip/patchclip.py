"""PatchCLIP: the CLIP branch of CLIPFusion (Lee et al., TMLR 2025).

It shares every piece of window and text code with WinCLIP (:class:`~cfviz.clip.base.WindowClipModel`)
and produces the two CLIP maps that CLIPFusion fuses with the diffusion maps:

* **language map** ``M_clip_L`` (zero-shot): the anomalous-class probability (temperature 0.07,
  WinCLIP's prompt ensemble) of every projected patch embedding, giving a patch map, and of
  every window embedding, aggregated per scale onto the patches (``aggregation``, harmonic by
  default as in WinCLIP). The patch map and the scale maps are then merged by ``combine``:
  ``"mean"`` (default: arithmetic mean of ``[patch map, scale-2 map, scale-3 map]``) or
  ``"harmonic"`` (WinCLIP's rule for merging scales). ``use_patches=False`` leaves the patch map
  out, ``scales=()`` leaves the windows out.
* **visual map** ``M_clip_V`` (k-shot, after :meth:`PatchCLIP.fit` on k normal training images):
  ``0.5 * (1 - max cos)`` (WinCLIP's visual association score, in [0, 1] like the language map)
  of each query patch to the reference patch bank and of each query window to the same-scale
  reference window bank, aggregated and merged exactly like the language map.
* **image score**: the class score of the global image embedding; in k-shot, when
  ``image_from_visual`` (default), ``(global score + max of the visual map) / 2`` as WinCLIP+
  does, otherwise the global score alone.

The paper does not spell these rules out (``methods.md`` section 1); each is a parameter with the
default above so that notebooks can sweep it. The evaluation runner's default is the patch form of
both maps (``ScoringConfig.patchclip_language`` / ``patchclip_visual`` ``"patches"``: one forward
pass, as the method's name and the paper's latency table suggest), the class with ``scales=()``;
this class keeps WinCLIP's windows by default so that its API stays as it was. Maps are on the patch grid; upsampling to pixels
is left to the fusion step (:func:`~cfviz.clip.scores.upsample`). With the offline random-weight
models the numbers show that the pipeline runs, not how well PatchCLIP detects anomalies.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> g = torch.Generator().manual_seed(0)
>>> pc = PatchCLIP(tiny_clip(seed=0), class_name="screw").fit(torch.randn(2, 3, 240, 240, generator=g))
>>> res = pc.predict(torch.randn(3, 3, 240, 240, generator=g))
>>> res.language_map.shape, res.visual_map.shape, res.image_score.shape, len(res.clip_scores)
(torch.Size([3, 15, 15]), torch.Size([3, 15, 15]), torch.Size([3]), 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cfviz.clip.base import BatchScores, WindowClipModel
from cfviz.clip.fewshot import few_shot_maps
from cfviz.clip.scores import MEANS, TEMPERATURE, upsample
from cfviz.clip.windows import AGGREGATIONS, DEFAULT_CHUNK, aggregate, check_choice


@dataclass
class PatchCLIPResult(BatchScores):
    """PatchCLIP maps and scores of a batch; maps are ``(B, gh, gw)`` on the patch grid.

    Attributes
    ----------
    language_map:
        ``M_clip_L``.
    visual_map:
        ``M_clip_V``, or ``None`` in zero-shot.
    image_score:
        ``(B,)`` image-level score.
    zero_shot_image:
        ``(B,)`` class score of the global image embedding.
    patch_scores:
        ``(B, gh, gw)`` patch class scores (the patch part of the language map).
    window_scores, window_maps:
        ``scale -> (B, n)`` window class scores and ``scale -> (B, gh, gw)`` their aggregation.
    boxes:
        ``scale -> (n, 4)`` window boxes ``[row, col, h, w]``.
    patch_distance, window_distance, window_distance_maps:
        k-shot only: the visual scores of patches ``(B, gh, gw)``, of windows ``(B, n)`` and
        their aggregation ``(B, gh, gw)`` per scale.
    """

    language_map: Any
    visual_map: Any
    image_score: Any
    zero_shot_image: Any
    patch_scores: Any
    window_scores: dict[int, Any]
    window_maps: dict[int, Any]
    boxes: dict[int, Any]
    patch_distance: Any = None
    window_distance: dict[int, Any] | None = None
    window_distance_maps: dict[int, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def upsample(self, size: int | Sequence[int], mode: str = "bilinear") -> tuple[Any, Any]:
        """``(language_map, visual_map)`` resized to pixels (``visual_map`` stays ``None`` in zero-shot)."""
        vis = None if self.visual_map is None else upsample(self.visual_map, size, mode)
        return upsample(self.language_map, size, mode), vis

    @property
    def clip_scores(self) -> list[Any]:
        """One :class:`~cfviz.capture.store.ClipScores` per image (CPU float32 copies).

        ``image`` = image score, ``patch`` = patch class scores, ``windows`` = window class
        scores; ``maps``: ``language``, ``language_window_<s>``, ``zero_shot_image`` (1x1) and,
        in k-shot, ``visual``, ``visual_patch``, ``visual_window_<s>``.
        """
        def maps(i: int) -> dict[str, Any]:
            out = {"language": self.language_map[i], "zero_shot_image": self.zero_shot_image[i].reshape(1, 1),
                   **{f"language_window_{s}": m[i] for s, m in self.window_maps.items()}}
            if self.visual_map is not None:
                out.update({"visual": self.visual_map[i], "visual_patch": self.patch_distance[i],
                            **{f"visual_window_{s}": m[i] for s, m in (self.window_distance_maps or {}).items()}})
            return out

        return self._per_image(maps)


class PatchCLIP(WindowClipModel):
    """CLIPFusion's CLIP branch: language map (zero-shot) and visual map (k-shot).

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle` (CLIPFusion: ``ViT-B-16-plus-240``).
    class_name:
        Object category in the prompts (required; ``"object"`` is the generic fallback).
    scales, stride:
        Window sides and stride in patches (default ``(2, 3)``, 1, as WinCLIP).
    temperature:
        Class-score temperature (0.07, as WinCLIP).
    chunk_size:
        Window sequences per transformer call (memory bound; results do not depend on it).
    use_patches:
        Include the patch-level map in both maps (default ``True``).
    aggregation:
        Window scores onto patches: ``"harmonic"`` (WinCLIP) or ``"mean"``.
    combine:
        Patch map + scale maps into one map: ``"mean"`` (default) or ``"harmonic"``.
    image_from_visual:
        In k-shot, average the global score with the max of the visual map (default ``True``).
    patch_features:
        Patch memory features: ``"embeds"`` (projected, default) or ``"tokens"`` (``ln_post``).
    normalize_prompts, prompts:
        See :class:`~cfviz.clip.base.WindowClipModel`.
    """

    method = "patchclip"

    def __init__(self, bundle: Any, *, class_name: str | None, scales: Sequence[int] = (2, 3), stride: int = 1,
                 temperature: float = TEMPERATURE, chunk_size: int = DEFAULT_CHUNK, use_patches: bool = True,
                 aggregation: str = "harmonic", combine: str = "mean", image_from_visual: bool = True,
                 patch_features: str = "embeds", normalize_prompts: bool = True,
                 prompts: tuple[Sequence[str], Sequence[str]] | None = None) -> None:
        super().__init__(bundle, class_name=class_name, scales=scales, stride=stride, temperature=temperature,
                         chunk_size=chunk_size, normalize_prompts=normalize_prompts, prompts=prompts,
                         patch_features=patch_features)
        if not use_patches and not self.scales:
            raise ValueError("PatchCLIP needs patches or windows: set use_patches=True or give scales=(2, 3)")
        self.use_patches = bool(use_patches)
        self.aggregation = check_choice(aggregation, AGGREGATIONS, "aggregation")
        self.combine = check_choice(combine, MEANS, "combine")
        self.image_from_visual = bool(image_from_visual)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "use_patches": self.use_patches, "aggregation": self.aggregation,
                "combine": self.combine, "image_from_visual": self.image_from_visual}

    def _merge(self, patch_map: Any, window_maps: dict[int, Any]) -> Any:
        layers = ([patch_map] if self.use_patches else []) + list(window_maps.values())
        return MEANS[self.combine](layers)

    def predict_embeddings(self, emb: Any, *, few_shot: bool | None = None) -> PatchCLIPResult:
        use_refs = self._few_shot_flag(few_shot, "predict(few_shot=True)")
        grid = emb.grid
        zs_image = self.text_scores(emb.image)
        patch_scores = self.text_scores(emb.patches).reshape(-1, *grid)
        window_scores = {s: self.text_scores(emb.windows[s]) for s in self.scales}
        window_maps = {s: aggregate(window_scores[s], emb.boxes[s], grid, self.aggregation) for s in self.scales}
        result = PatchCLIPResult(language_map=self._merge(patch_scores, window_maps), visual_map=None,
                                 image_score=zs_image, zero_shot_image=zs_image, patch_scores=patch_scores,
                                 window_scores=window_scores, window_maps=window_maps, boxes=dict(emb.boxes),
                                 meta={"k_shot": self.k_shot if use_refs else 0, "method": self.method,
                                       "class_name": self.class_name})
        if use_refs:  # _few_shot_flag has checked the references
            fs = few_shot_maps(self._banks, self._patch_bank_features(emb), {s: emb.windows[s] for s in self.scales},
                               emb.boxes, grid, aggregation=self.aggregation, combine=self.combine,
                               use_patches=self.use_patches)
            result.visual_map = fs.map
            result.patch_distance, result.window_distance, result.window_distance_maps = fs.patch, fs.windows, \
                fs.window_maps
            if self.image_from_visual:
                result.image_score = (zs_image + result.visual_map.flatten(1).amax(dim=1)) / 2
        return result

    def language_map(self, images: Any) -> Any:
        """``M_clip_L`` only, ``(B, gh, gw)``."""
        return self.predict(images, few_shot=False).language_map

    def visual_map(self, images: Any) -> Any:
        """``M_clip_V`` only, ``(B, gh, gw)``; needs :meth:`fit` first."""
        self._require_fit("visual_map")
        return self.predict(images, few_shot=True).visual_map

