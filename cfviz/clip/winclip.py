"""The WinCLIP / WinCLIP+ baseline (Jeong et al., CVPR 2023), as anomalib implements it.

Zero-shot (``methods.md`` section 2.3, ``tau = 0.07``):

1. ``ascore_0`` of the image embedding and of every window embedding (scales 2 and 3, stride 1)
   against the normal/anomalous prompt-ensemble anchors;
2. per scale, window scores are spread onto the patches they cover and merged by a harmonic
   mean (:func:`~cfviz.clip.windows.harmonic_aggregation`);
3. the zero-shot map is the harmonic mean of ``[image score broadcast, scale-2 map, scale-3 map]``;
   the zero-shot image score is ``ascore_0`` of the image embedding.

WinCLIP+ (k-shot, after :meth:`WinCLIP.fit`):

4. visual association scores ``VAS = 0.5 * min cosine distance`` of every query patch and window
   to memory banks built from the k references (a patch bank, one window bank per scale);
5. few-shot map = mean of ``[patch VAS map, harmonic-aggregated window VAS map per scale]``;
6. combined map, ``combination="mean"`` (anomalib, default): ``(zero-shot map + few-shot map) / 2``.
   Alternatives from other implementations: ``"sum"`` (Accurate-WinCLIP adds the maps) and
   ``"reciprocal"`` (caoyunkang/WinClip fuses text and visual maps as ``1 / (1/M_t + 1/M_v)``;
   its per-map recipes also differ, see ``methods.md``);
7. image score = ``(zero-shot image score + max of the few-shot map) / 2`` (anomalib and
   Accurate-WinCLIP alike).

anomalib's patch memory holds the ``ln_post`` patch tokens before projection, hence the default
``patch_features="tokens"`` here (``"embeds"`` uses the projected patch embeddings).

Maps are on the patch grid (15x15 for ViT-B-16-plus-240); :func:`~cfviz.clip.scores.upsample`
(or :meth:`WinCLIPResult.upsample`) makes pixel maps. With the offline random-weight models the
numbers show that the pipeline runs, not how well WinCLIP detects anomalies.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> g = torch.Generator().manual_seed(0)
>>> model = WinCLIP(tiny_clip(seed=0), class_name="bottle")
>>> res = model.predict(torch.randn(2, 3, 240, 240, generator=g))
>>> res.image_score.shape, res.anomaly_map.shape, res.few_shot_map is None
(torch.Size([2]), torch.Size([2, 15, 15]), True)
>>> res = model.fit(torch.randn(1, 3, 240, 240, generator=g)).predict(torch.randn(1, 3, 240, 240, generator=g))
>>> res.few_shot_map.shape
torch.Size([1, 15, 15])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cfviz.clip.base import BatchScores, WindowClipModel
from cfviz.clip.fewshot import few_shot_maps
from cfviz.clip.scores import TEMPERATURE, harmonic_mean, upsample
from cfviz.clip.windows import DEFAULT_CHUNK, check_choice, harmonic_aggregation

#: How WinCLIP+ merges the zero-shot and few-shot maps (see the module doc).
COMBINATIONS = ("mean", "sum", "reciprocal")


@dataclass
class WinCLIPResult(BatchScores):
    """WinCLIP scores of a batch; maps are ``(B, gh, gw)`` on the patch grid.

    Attributes
    ----------
    image_score, anomaly_map:
        The final outputs (zero-shot, or WinCLIP+ when the model was fitted).
    zero_shot_image, zero_shot_map:
        ``ascore_0`` of the image embedding; the multi-scale harmonic zero-shot map.
    scale_maps:
        ``scale -> (B, gh, gw)`` harmonic-aggregated window class scores.
    window_scores:
        ``scale -> (B, n)`` window class scores ``ascore_0``.
    patch_scores:
        ``(B, gh, gw)`` class scores of the projected patch embeddings. WinCLIP's maps do not
        use them (patch tokens are poorly aligned with text); kept for analysis.
    boxes:
        ``scale -> (n, 4)`` window boxes ``[row, col, h, w]``.
    few_shot_map, patch_vas, window_vas, window_vas_maps:
        WinCLIP+ only (``None`` in zero-shot): the few-shot map, the patch VAS map, the window
        VAS per scale ``(B, n)`` and their harmonic aggregation ``(B, gh, gw)``.
    """

    image_score: Any
    anomaly_map: Any
    zero_shot_image: Any
    zero_shot_map: Any
    scale_maps: dict[int, Any]
    window_scores: dict[int, Any]
    patch_scores: Any
    boxes: dict[int, Any]
    few_shot_map: Any = None
    patch_vas: Any = None
    window_vas: dict[int, Any] | None = None
    window_vas_maps: dict[int, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def upsample(self, size: int | Sequence[int], mode: str = "bilinear") -> Any:
        """The anomaly maps resized to pixels, ``(B, H, W)``."""
        return upsample(self.anomaly_map, size, mode)

    @property
    def clip_scores(self) -> list[Any]:
        """One :class:`~cfviz.capture.store.ClipScores` per image (CPU float32 copies).

        ``image`` is the final image score, ``patch`` the patch class scores, ``windows`` the
        window class scores; ``maps`` holds ``anomaly``, ``zero_shot``, ``window_<s>``,
        ``zero_shot_image`` (1x1) and, in WinCLIP+, ``few_shot``, ``vas_patch``, ``vas_window_<s>``.
        """
        def maps(i: int) -> dict[str, Any]:
            out = {"anomaly": self.anomaly_map[i], "zero_shot": self.zero_shot_map[i],
                   "zero_shot_image": self.zero_shot_image[i].reshape(1, 1),
                   **{f"window_{s}": m[i] for s, m in self.scale_maps.items()}}
            if self.few_shot_map is not None:
                out.update({"few_shot": self.few_shot_map[i], "vas_patch": self.patch_vas[i],
                            **{f"vas_window_{s}": m[i] for s, m in (self.window_vas_maps or {}).items()}})
            return out

        return self._per_image(maps)


class WinCLIP(WindowClipModel):
    """WinCLIP (zero-shot) and WinCLIP+ (k-shot after :meth:`fit`).

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle`; WinCLIP uses ``ViT-B-16-plus-240``.
    class_name:
        Object category in the prompts (required; ``"object"`` is the generic fallback).
    scales, stride:
        Window sides and stride in patches (WinCLIP: ``(2, 3)``, 1).
    temperature:
        Class-score temperature (0.07).
    chunk_size:
        Window sequences per transformer call (memory bound; results do not depend on it).
    normalize_prompts:
        Normalise prompt embeddings before averaging (``True``) or not (anomalib).
    patch_features:
        Patch memory features for WinCLIP+: ``"tokens"`` (anomalib) or ``"embeds"``.
    combination:
        How WinCLIP+ merges zero- and few-shot maps: ``"mean"`` (anomalib), ``"sum"``,
        ``"reciprocal"`` (see the module doc).
    prompts:
        Optional ``(normal_prompts, anomalous_prompts)`` replacing the ensemble.
    """

    method = "winclip"

    def __init__(self, bundle: Any, *, class_name: str | None, scales: Sequence[int] = (2, 3), stride: int = 1,
                 temperature: float = TEMPERATURE, chunk_size: int = DEFAULT_CHUNK, normalize_prompts: bool = True,
                 patch_features: str = "tokens", combination: str = "mean",
                 prompts: tuple[Sequence[str], Sequence[str]] | None = None) -> None:
        super().__init__(bundle, class_name=class_name, scales=scales, stride=stride, temperature=temperature,
                         chunk_size=chunk_size, normalize_prompts=normalize_prompts, prompts=prompts,
                         patch_features=patch_features)
        self.combination = check_choice(combination, COMBINATIONS, "combination")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "combination": self.combination}

    def predict_embeddings(self, emb: Any, *, few_shot: bool | None = None) -> WinCLIPResult:
        use_refs = self._few_shot_flag(few_shot, "predict(few_shot=True)")
        grid = emb.grid
        zs_image = self.text_scores(emb.image)  # (B,)
        window_scores = {s: self.text_scores(emb.windows[s]) for s in self.scales}
        scale_maps = {s: harmonic_aggregation(window_scores[s], emb.boxes[s], grid) for s in self.scales}
        image_layer = zs_image[:, None, None].expand(-1, *grid)
        zs_map = harmonic_mean([image_layer, *scale_maps.values()])
        patch_scores = self.text_scores(emb.patches).reshape(-1, *grid)
        result = WinCLIPResult(image_score=zs_image, anomaly_map=zs_map, zero_shot_image=zs_image,
                               zero_shot_map=zs_map, scale_maps=scale_maps, window_scores=window_scores,
                               patch_scores=patch_scores, boxes=dict(emb.boxes),
                               meta={"k_shot": self.k_shot if use_refs else 0, **self._meta()})
        if use_refs:  # WinCLIP+ (_few_shot_flag has checked the references)
            fs = few_shot_maps(self._banks, self._patch_bank_features(emb), {s: emb.windows[s] for s in self.scales},
                               emb.boxes, grid)  # harmonic window aggregation, mean of patch and scale maps
            fs_map = fs.map
            result.few_shot_map, result.patch_vas = fs_map, fs.patch
            result.window_vas, result.window_vas_maps = fs.windows, fs.window_maps
            result.anomaly_map = combine_maps(zs_map, fs_map, self.combination)
            result.image_score = (zs_image + fs_map.flatten(1).amax(dim=1)) / 2
        return result

    def _meta(self) -> dict[str, Any]:
        return {"method": self.method, "class_name": self.class_name, "scales": list(self.scales),
                "stride": self.stride, "combination": self.combination}


def combine_maps(zero_shot: Any, few_shot: Any, combination: str = "mean") -> Any:
    """Merge WinCLIP's zero-shot and few-shot maps (``"mean"``, ``"sum"`` or ``"reciprocal"``).

    >>> import torch
    >>> z, f = torch.tensor([0.2, 0.6]), torch.tensor([0.6, 0.0])
    >>> combine_maps(z, f), combine_maps(z, f, "sum"), combine_maps(z, f, "reciprocal")
    (tensor([0.4000, 0.3000]), tensor([0.8000, 0.6000]), tensor([0.1500, 0.0000]))
    """
    check_choice(combination, COMBINATIONS, "combination")
    if combination == "mean":
        return (zero_shot + few_shot) / 2
    if combination == "sum":
        return zero_shot + few_shot
    return (zero_shot.reciprocal() + few_shot.reciprocal()).reciprocal()  # 0 in either -> 0

