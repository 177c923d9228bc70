"""``AAClip``: a frozen CLIP plus AA-CLIP adapters, giving anomaly maps and image scores.

Test-time computation, as in the released ``test.py`` / ``forward_utils.py``:

* anchors ``T = [T_N, T_A]``: per state group, every ``template(state(class name))`` sentence
  through the adapted text encoder and ``text_proj``, L2-normalised, averaged, normalised;
* per level ``l``: patch tokens after block ``l`` -> ``ln_post`` -> ``seg_proj[l]`` -> normalise;
  similarity ``S = scale * V T`` on the patch grid;
* level map ``P_l = (S_A + 1 - S_N) / 2``; anomaly map = ``sum_l P_l``, Gaussian-blurred on the
  patch grid (``blur_sigma``; upsampling to pixels is left to the caller);
* image score ``(<det, T_A> + 1) / 2`` with ``det`` = mean over patches of the normalised
  ``det_proj(ln_post(last-level tokens))``. :func:`released_image_scores` adds the released
  rule for industrial data (``metrics_eval``): the pixel maps of a test set are min-max
  normalised over *all* their pixels, the scores over the set, then
  ``0.5 * max(map) + 0.5 * score`` per image;
* pixel maps: :func:`upsample_maps` resizes patch-grid maps bilinearly with
  ``align_corners=True``, as ``calculate_similarity_map`` does after the blur
  (``"half_pixel"``, ``align_corners=False``, is ours: the rule of cfviz's other maps);
* the CLIP's MLP activation is exact GELU (``AAClipConfig.activation``), as the released code
  builds ViT-L-14-336 from a JSON config without ``quick_gelu``.

With the offline tiny random-weight CLIP the numbers show that the pipeline runs, not how
well AA-CLIP detects anomalies.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> m = AAClip(tiny_clip(seed=0), seed=0)
>>> r = m.predict(torch.zeros(2, 3, 240, 240), class_names="brick")
>>> r.anomaly_map.shape, r.level_maps.shape, r.image_score.shape
(torch.Size([2, 15, 15]), torch.Size([2, 4, 15, 15]), torch.Size([2]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cfviz.clip.aaclip.adapters import AAClipAdapters
from cfviz.clip.aaclip.checkpoint import CheckpointError, check_same_model, read_checkpoint, save_checkpoint
from cfviz.clip.aaclip.config import AAClipConfig
from cfviz.clip.aaclip.encoders import mlp_activation, text_features, vision_tokens
from cfviz.errors import ConfigError


@dataclass
class AAClipResult:
    """AA-CLIP outputs of a batch on the patch grid.

    Attributes
    ----------
    anomaly_map:
        ``(B, gh, gw)`` sum of the level maps, blurred (the released test-time map).
    level_maps:
        ``(B, n_levels, gh, gw)`` ``(S_A + 1 - S_N) / 2`` per level, not blurred.
    image_score:
        ``(B,)`` ``(<det, T_A> + 1) / 2``.
    levels:
        The 1-based vision blocks of the level maps.
    """

    anomaly_map: torch.Tensor
    level_maps: torch.Tensor
    image_score: torch.Tensor
    levels: tuple[int, ...]

    def arrays(self, i: int, prefix: str = "aaclip") -> dict[str, torch.Tensor]:
        """Image ``i``'s outputs as ``name -> float32 CPU tensor`` (capture-store entries)."""
        out = {f"{prefix}/map/anomaly": self.anomaly_map[i], f"{prefix}/image": self.image_score[i].reshape(1)}
        out.update({f"{prefix}/map/level_{lv}": self.level_maps[i, j] for j, lv in enumerate(self.levels)})
        return {k: v.detach().float().cpu().clone() for k, v in out.items()}


class AAClip:
    """AA-CLIP on a CLIP bundle.

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle` (paper: ViT-L-14-336; tests: ``tiny_clip``).
        Its weights are frozen (``requires_grad_(False)``) and never modified. At a
        ``config.image_size`` other than the bundle's, :attr:`bundle` is a copy sharing its
        weights with interpolated position embeddings (:func:`cfviz.clip.posembed.resize_clip`);
        :attr:`base_bundle` is the one given.
    config:
        :class:`~cfviz.clip.aaclip.config.AAClipConfig` (resolved against the bundle here).
    seed:
        Seed of the initial adapter weights.
    """

    def __init__(self, bundle: Any, config: AAClipConfig | None = None, *, seed: int = 0) -> None:
        from cfviz.clip.posembed import resize_clip

        self.base_bundle = bundle
        self.config = (config or AAClipConfig()).resolve(bundle)
        self.seed = int(seed)
        bundle.model.requires_grad_(False)
        self.bundle = resize_clip(bundle, int(self.config.image_size))  # the bundle itself at its own size
        self.adapters = AAClipAdapters(self.config, bundle, seed=seed).to(torch.device(bundle.device))
        self.adapters.eval()
        self._anchor_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ text
    def activation(self) -> Any:
        """Context in which the CLIP's MLPs use ``config.activation`` (restored on exit, also on error)."""
        return mlp_activation(self.bundle.model, self.config.activation)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Adapted, projected text embeddings ``(N, D)`` (not normalised; gradients flow when enabled)."""
        tokens = self.bundle.tokenizer(list(prompts)).to(torch.device(self.bundle.device))
        with self.activation():
            return text_features(self.bundle, tokens, adapters=list(self.adapters.text_adapters),
                                 weight=self.config.text_lambda, projection=self.adapters.text_proj)

    def class_anchors(self, class_name: str) -> torch.Tensor:
        """``(2, D)`` unit anchors ``[T_N, T_A]`` of one class (with gradients while training)."""
        from cfviz.clip.aaclip.names import prompt_name

        normal, anomalous = self.config.prompts.sentences(prompt_name(class_name, self.config.class_names))
        emb = F.normalize(self.encode_text(normal + anomalous), dim=-1)
        groups = [emb[:len(normal)].mean(0), emb[len(normal):].mean(0)]
        return F.normalize(torch.stack(groups), dim=-1)

    def anchors(self, class_names: str | Sequence[str], *, cache: bool = True) -> torch.Tensor:
        """``(B, 2, D)`` anchors for each image's class; cached per class outside training."""
        names = [class_names] if isinstance(class_names, str) else list(class_names)
        if not names:
            raise ValueError("class_names must name at least one class")
        use_cache = cache and not torch.is_grad_enabled()
        out = {}
        for name in dict.fromkeys(names):
            if use_cache and name in self._anchor_cache:
                out[name] = self._anchor_cache[name]
                continue
            out[name] = self.class_anchors(name)
            if use_cache:
                self._anchor_cache[name] = out[name].detach()
        return torch.stack([out[n] for n in names])

    def clear_cache(self) -> None:
        """Forget cached anchors (call after changing text adapters by hand; training does it)."""
        self._anchor_cache.clear()

    def text_separation(self, class_names: Sequence[str]) -> dict[str, float]:
        """Cosine ``<T_N, T_A>`` per class (lower = better separated anchors).

        >>> from cfviz.models import tiny_clip
        >>> sorted(AAClip(tiny_clip(seed=0)).text_separation(["brick"]))
        ['brick']
        """
        with torch.no_grad():
            a = self.anchors(list(class_names), cache=False)
        return {n: float((a[i, 0] * a[i, 1]).sum()) for i, n in enumerate(class_names)}

    # ------------------------------------------------------------------ images
    @property
    def image_size(self) -> int:
        """Side of the images :meth:`predict` takes (``config.image_size``)."""
        return int(self.bundle.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.bundle.grid_size)  # type: ignore[return-value]

    def encode_image(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised level patch embeddings (each ``(B, L, D)``) and the detection token ``(B, D)``."""
        from cfviz.clip.windows import check_images

        images = check_images(images, self.bundle)
        levels = self.config.levels
        with self.activation():
            tokens = vision_tokens(self.bundle, images, levels=levels, adapters=list(self.adapters.image_adapters),
                                   weight=self.config.image_lambda)
        ln_post = self.bundle.model.visual.ln_post
        seg = [F.normalize(proj(ln_post(tokens[lv][:, 1:]).float()), dim=-1)
               for lv, proj in zip(levels, self.adapters.seg_proj)]
        last = ln_post(tokens[levels[-1]][:, 1:]).float()
        det = F.normalize(self.adapters.det_proj(last), dim=-1).mean(dim=1)
        return seg, det

    def similarity(self, patch_embeddings: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """``S = scale * V T``: ``(B, 2, gh, gw)`` logits from ``(B, L, D)`` patches and ``(B, 2, D)`` anchors."""
        gh, gw = self.grid
        s = self.config.logit_scale * torch.einsum("bld,bkd->bkl", patch_embeddings, anchors)
        return s.reshape(s.shape[0], 2, gh, gw)

    def forward(self, images: torch.Tensor, anchors: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Level logits (each ``(B, 2, gh, gw)``) and detection token ``(B, D)``: what training needs."""
        seg, det = self.encode_image(images)
        return [self.similarity(v, anchors) for v in seg], det

    def predict(self, images: torch.Tensor, class_names: str | Sequence[str]) -> AAClipResult:
        """Anomaly maps and image scores of ``images`` ``(B, 3, S, S)`` (CLIP-normalised, ``S = image_size``).

        ``class_names``: one name for the whole batch or one per image.
        """
        b = int(images.shape[0]) if torch.is_tensor(images) and images.ndim == 4 else 0
        names = [class_names] * b if isinstance(class_names, str) else list(class_names)
        if b and len(names) != b:
            raise ValueError(f"class_names has {len(names)} names for {b} images; give one per image or one string")
        with torch.no_grad():
            anchors = self.anchors(names)
            logits, det = self.forward(images, anchors)
            level_maps = torch.stack([(s[:, 1] + 1 - s[:, 0]) / 2 for s in logits], dim=1)
            amap = gaussian_blur(level_maps.sum(dim=1), self.config.blur_sigma, self.config.blur_kernel)
            score = ((det * anchors[:, 1]).sum(-1) + 1) / 2
        return AAClipResult(anomaly_map=amap.float(), level_maps=level_maps.float(), image_score=score.float(),
                            levels=tuple(self.config.levels))

    __call__ = predict

    # ------------------------------------------------------------------ provenance / I/O
    def info(self) -> dict[str, Any]:
        """JSON-ready description: config, seed and the CLIP model it belongs to."""
        return {"method": "aaclip", "config": self.config.to_json(), "seed": self.seed, "model": self.bundle.info()}

    def save(self, path: Any, metadata: dict[str, Any] | None = None) -> Any:
        """Write the adapter weights and config to a safetensors file atomically (see :mod:`.checkpoint`)."""
        return save_checkpoint(path, self, metadata=metadata)

    @classmethod
    def load(cls, path: Any, bundle: Any) -> AAClip:
        """Load adapters saved by :meth:`save` or by training onto ``bundle`` (the same CLIP)."""
        return load_aaclip(path, bundle)

    def __repr__(self) -> str:
        c = self.config
        return (f"AAClip({self.bundle.name} at {c.image_size} px, K_T={c.text_adapter_blocks}, "
                f"K_I={c.image_adapter_blocks}, levels={c.levels}, lambda=({c.text_lambda}, {c.image_lambda}), "
                f"{c.class_names} names)")


def load_aaclip(path: str | os.PathLike[str], bundle: Any, *, check_model: bool = True,
                image_size: int | str | None = None, class_names: str | None = None) -> AAClip:
    """An :class:`AAClip` on ``bundle`` with the weights of ``path``.

    ``path`` may be a file or a training folder (its ``aaclip.safetensors``, else its last epoch).
    ``image_size`` and ``class_names`` replace the checkpoint's (``None``: those it was trained
    with); the adapters do not depend on either.
    """
    tensors, meta = read_checkpoint(path)
    if check_model:
        check_same_model(meta, bundle, path)
    given = {"image_size": image_size, "class_names": class_names}
    config = replace(AAClipConfig.from_json(meta["config"]), **{k: v for k, v in given.items() if v is not None})
    model = AAClip(bundle, config, seed=int(meta.get("seed", 0)))
    state = {k[len("adapters/"):]: v for k, v in tensors.items() if k.startswith("adapters/")}
    try:
        model.adapters.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: adapter weights do not fit {bundle.name} ({str(exc).splitlines()[0]})") from None
    model.adapters.to(torch.device(bundle.device))
    model.metadata = meta  # type: ignore[attr-defined]
    return model


def gaussian_blur(maps: torch.Tensor, sigma: float, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, h, w)`` maps, reflect padding (kornia's default); ``sigma=0``: none.

    >>> m = torch.zeros(1, 9, 9); m[0, 4, 4] = 1
    >>> round(float(gaussian_blur(m, 1.0, 7).sum()), 4)
    1.0
    """
    if sigma <= 0 or kernel <= 1:
        return maps
    half = kernel // 2
    x = torch.arange(kernel, dtype=maps.dtype, device=maps.device) - half
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    h, w = maps.shape[-2:]
    mode = "reflect" if half < min(h, w) else "replicate"
    y = F.pad(maps[:, None], (half, half, half, half), mode=mode)
    y = F.conv2d(y, k.reshape(1, 1, 1, -1))
    y = F.conv2d(y, k.reshape(1, 1, -1, 1))
    return y[:, 0]


#: How patch-grid maps become pixel maps: bilinear with ``align_corners=True`` (the released
#: ``calculate_similarity_map``) or ``align_corners=False`` (``"half_pixel"``, ours: cfviz's other maps).
UPSAMPLE_MODES = ("align_corners", "half_pixel")


def upsample_maps(maps: Any, size: int | tuple[int, int], mode: str = "align_corners") -> np.ndarray:
    """``(N, h, w)`` maps resized bilinearly to ``size`` (float32 NumPy), corners aligned or not (``mode``).

    AA-CLIP's released code upsamples each (blurred) level map with ``align_corners=True``; the
    sum of the levels commutes with it, so upsampling the summed map gives the same pixel map.

    >>> upsample_maps(np.array([[[0.0, 3.0]]]), (1, 4)).round(3).tolist()
    [[[0.0, 1.0, 2.0, 3.0]]]
    >>> upsample_maps(np.array([[[0.0, 3.0]]]), (1, 4), "half_pixel").round(3).tolist()
    [[[0.0, 0.75, 2.25, 3.0]]]
    """
    if mode not in UPSAMPLE_MODES:
        raise ConfigError(f"AA-CLIP's map upsampling must be one of {', '.join(UPSAMPLE_MODES)} (released code: "
                          f"align_corners), got {mode!r}")
    from cfviz.fusion import upsample

    return upsample(maps, size if isinstance(size, int) else (int(size[0]), int(size[1])),
                    align_corners=mode == "align_corners")


def released_image_scores(anomaly_maps: Any, image_scores: Any, *, pixel_weight: float = 0.5,
                          size: int | tuple[int, int] | None = None, upsample: str = "align_corners") -> np.ndarray:
    """The released image score over one test set (``metrics_eval`` of ``forward_utils.py``).

    ``anomaly_maps`` ``(N, h, w)`` are min-max normalised over *all* pixels of the set, the scores
    ``(N,)`` over the set; then ``pixel_weight * max(map_i) + (1 - pixel_weight) * score_i``
    (released: 0.5 for industrial data, 1.0, the map's maximum alone, for medical data). As
    released, an array whose maximum is exactly 1 is taken as normalised already (left as it
    is); a constant array becomes zeros (the released code would divide by zero).

    The released code does this per class, on the maps at pixel resolution: give patch-grid
    maps with ``size`` to upsample them first (:func:`upsample_maps` with ``upsample``).

    >>> maps = np.array([[[0.0, 1.0]], [[0.5, 0.6]], [[0.1, 0.8]]])
    >>> [round(float(x), 3) for x in released_image_scores(maps, np.array([0.2, 0.9, 0.5]))]
    [0.5, 0.8, 0.614]
    """
    if not 0 <= pixel_weight <= 1:
        raise ValueError(f"pixel_weight must be in [0, 1] (released: 0.5 industrial, 1.0 medical), got "
                         f"{pixel_weight!r}")
    scores = np.asarray(image_scores, dtype=np.float64)
    n = len(anomaly_maps)
    if np.ndim(anomaly_maps) != 3 or scores.shape != (n,):
        raise ValueError(f"anomaly_maps must be (N, h, w) and image_scores (N,), got {np.shape(anomaly_maps)} and "
                         f"{scores.shape}")
    if n == 0:
        return np.zeros(0, np.float32)
    # min-max over all pixels, then each image's max == each image's max, min-max'd by the set's extremes
    # (normalising is monotonic); only per-image extremes are kept, so pixel maps are made a few at a time
    lows, peaks = np.empty(n), np.empty(n)
    for i in range(0, n, 16):
        chunk = np.asarray(anomaly_maps[i:i + 16], dtype=np.float64)
        if size is not None:
            chunk = upsample_maps(chunk, size, upsample).astype(np.float64)
        flat = chunk.reshape(len(chunk), -1)
        lows[i:i + 16], peaks[i:i + 16] = flat.min(axis=1), flat.max(axis=1)

    def mm(x: np.ndarray, low: float, high: float) -> np.ndarray:
        if high == 1:  # released: `if preds.max() != 1:` normalise
            return x
        return (x - low) / (high - low) if high > low else np.zeros_like(x)

    peak = mm(peaks, lows.min(), peaks.max())
    return (pixel_weight * peak + (1 - pixel_weight) * mm(scores, scores.min(), scores.max())).astype(np.float32)
