"""The CLIP branch of an evaluation, split into what needs the model and what needs only the store.

At extraction (model loaded), per image:

* :func:`embed` — image, patch and window embeddings, stored as ``clip_emb/*`` (float16);
* :func:`zero_shot_scores` — PatchCLIP's zero-shot outputs (``clip/*``: the language map
  ``M_clip_L``, the global image score, patch and window class scores) and WinCLIP's
  (``winclip/*``: zero-shot map and image score). These need the text anchors, hence the model.

At scoring (no model), from stored embeddings of the query and the k references:

* :func:`visual` — PatchCLIP's visual map ``M_clip_V`` and its image score;
* :func:`winclip` — WinCLIP (zero-shot) or WinCLIP+ (k-shot) map and image score.

Both follow :class:`~cfviz.clip.patchclip.PatchCLIP` and :class:`~cfviz.clip.winclip.WinCLIP`
with their defaults exactly (tests/experiments check the equality); they only start from
embeddings instead of images so that k-shot settings and seeds never re-run CLIP.

Cheap extraction (the default run's: ``extraction.clip_windows`` auto resolves to off unless a method
or form needs windows): with ``extraction.clip_windows=False`` no window embeddings are computed (one
forward pass per image instead of one plus a batch of short window sequences per scale): the
store gets image and patch embeddings, PatchCLIP's patch-token outputs (``clip/map/language`` is
then the patch map) and no WinCLIP outputs. The setting is part of the store's identity, and
:meth:`~cfviz.evaluation.config.RunSpec.validate` refuses, naming it, any method or form that
needs windows (WinCLIP, PatchCLIP language or visual maps other than ``"patches"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import ExtractionConfig

EMB = "clip_emb"


def _emb_name(kind: str, scale: int | None = None) -> str:
    return f"{EMB}/{kind}" if scale is None else f"{EMB}/window/{scale}"


def window_scales(extraction: ExtractionConfig) -> tuple[int, ...]:
    """The window scales extraction computes: ``extraction.scales``, or none with ``clip_windows=False``.

    ``None`` (auto, unresolved: no run decided it, or a store written before the setting) means on;
    a run resolves it first (:func:`~cfviz.evaluation.config.resolve_clip_windows`).

    >>> window_scales(ExtractionConfig()), window_scales(ExtractionConfig(clip_windows=False))
    ((2, 3), ())
    """
    return () if getattr(extraction, "clip_windows", None) is False else tuple(extraction.scales)


def _models(bundle: Any, category: str, extraction: ExtractionConfig) -> tuple[Any, Any]:
    """PatchCLIP and WinCLIP of a category (WinCLIP is ``None`` without windows)."""
    from cfviz.clip import PatchCLIP, WinCLIP

    name = extraction.object_name(category)  # extraction.object_names: readable (default) or folder
    scales = window_scales(extraction)
    kw = {"class_name": name, "scales": scales, "stride": extraction.stride}
    normalized = getattr(extraction, "winclip_prompts", "normalized") == "normalized"
    return PatchCLIP(bundle, **kw), (WinCLIP(bundle, normalize_prompts=normalized, **kw) if scales else None)


def embed(bundle: Any, images: Any, extraction: ExtractionConfig) -> dict[str, Any]:
    """CLIP embeddings of a batch ``(B, 3, S, S)``: ``name -> (B, ...)`` float32 tensors.

    Window embeddings only when ``extraction.clip_windows`` (:func:`window_scales`).
    """
    from cfviz.clip.windows import WindowEncoder

    scales = window_scales(extraction)
    emb = WindowEncoder(bundle, scales=scales, stride=extraction.stride)(images)
    out = {_emb_name("image"): emb.image, _emb_name("patches"): emb.patches,
           _emb_name("patch_tokens"): emb.patch_tokens}
    out.update({_emb_name("window", s): emb.windows[s] for s in scales})
    return out


def as_visual_embeddings(arrays: dict[str, Any], extraction: ExtractionConfig) -> Any:
    """Rebuild :class:`~cfviz.clip.windows.VisualEmbeddings` from :func:`embed`'s (stacked) output."""
    from cfviz.clip.windows import VisualEmbeddings, window_boxes

    patches = arrays[_emb_name("patches")].float()
    grid = _square(patches.shape[1])
    scales = window_scales(extraction)
    if getattr(extraction, "clip_windows", None) is None:  # unresolved (auto): the windows the store holds
        scales = tuple(s for s in scales if _emb_name("window", s) in arrays)
    return VisualEmbeddings(image=arrays[_emb_name("image")].float(), patches=patches,
                            patch_tokens=arrays[_emb_name("patch_tokens")].float(),
                            windows={s: arrays[_emb_name("window", s)].float() for s in scales},
                            boxes={s: window_boxes(grid, s, extraction.stride) for s in scales},
                            grid=grid)


def zero_shot_scores(bundle: Any, arrays: dict[str, Any], category: str,
                     extraction: ExtractionConfig) -> tuple[Any, dict[str, Any]]:
    """PatchCLIP's zero-shot :class:`~cfviz.capture.store.ClipScores` and WinCLIP's tensors for one image.

    ``arrays`` is :func:`embed`'s output for a batch of one image.
    """
    emb = as_visual_embeddings(arrays, extraction)
    patchclip, winclip_model = _models(bundle, category, extraction)
    pc = patchclip.predict_embeddings(emb, few_shot=False).clip_scores[0]
    if winclip_model is None:  # clip_windows=False: no windows, no WinCLIP
        return pc, {}
    wc = winclip_model.predict_embeddings(emb, few_shot=False).clip_scores[0]
    win = {k: v for k, v in wc.to_tensors(prefix="winclip").items() if "/window" not in k}
    return pc, win


# ---------------------------------------------------------------------------------- from the store
def stored_language(store: CaptureStore, ids: Sequence[str], form: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """``M_clip_L`` ``(N, gh, gw)`` and the zero-shot image scores ``(N,)`` stored at extraction.

    ``form`` (``ScoringConfig.patchclip_language``): ``"mean"`` the stored map (mean of the patch
    map and the window maps), ``"patches"`` (the default) the patch-token class map alone,
    ``"windows"`` the mean of the per-scale window maps alone.
    """
    maps, scores = [], []
    for image_id in ids:
        entry = store[image_id]
        if form == "mean":
            names = ["clip/map/language"]
        elif form == "patches":
            names = ["clip/patch"]
        elif form == "windows":
            names = sorted(n for n in entry.names if n.startswith("clip/map/language_window_"))
        else:
            raise ValueError(f"form must be 'mean', 'patches' or 'windows', got {form!r}")
        t = entry.load([*names, "clip/image"])
        parts = [t[n].float().numpy() for n in names]
        grid = parts[0].shape if form != "patches" else _square(parts[0].size)
        maps.append(np.mean([m.reshape(grid) for m in parts], axis=0).astype(np.float32))
        scores.append(float(t["clip/image"].reshape(-1)[0]))
    return np.stack(maps), np.asarray(scores, dtype=np.float32)


def _square(n: int) -> tuple[int, int]:
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"{n} stored patches (embeddings or scores) do not form a square grid")
    return side, side


def _few_shot(query: Any, ref: Any, patch_kind: str, scales: Sequence[int], aggregation: str = "harmonic",
              combine: str = "mean", use_patches: bool = True) -> Any:
    """:func:`cfviz.clip.fewshot.few_shot_maps` of stored query embeddings against stored references."""
    from cfviz.clip.fewshot import few_shot_maps, memory_banks, patch_features

    banks = memory_banks(patch_features(ref, patch_kind), {s: ref.windows[s] for s in scales})
    return few_shot_maps(banks, patch_features(query, patch_kind), {s: query.windows[s] for s in scales},
                         query.boxes, query.grid, aggregation=aggregation, combine=combine, use_patches=use_patches)


def visual(emb: dict[str, Any], ref_emb: dict[str, Any], extraction: ExtractionConfig,
           form: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """PatchCLIP's ``M_clip_V`` ``(N, gh, gw)`` and its image score (the map's max) ``(N,)``.

    Patch memory of projected patch embeddings, window memory per scale, harmonic aggregation
    of window distances, arithmetic mean of the patch and scale maps (PatchCLIP's defaults).
    ``form`` (``ScoringConfig.patchclip_visual``): ``"mean"`` of both, ``"patches"`` or ``"windows"`` only.
    """
    if form not in ("mean", "patches", "windows"):
        raise ValueError(f"form must be 'mean', 'patches' or 'windows', got {form!r}")
    q, r = as_visual_embeddings(emb, extraction), as_visual_embeddings(ref_emb, extraction)
    scales = () if form == "patches" else window_scales(extraction)
    vmap = _few_shot(q, r, "embeds", scales, use_patches=form != "windows").map
    return vmap.numpy(), vmap.flatten(1).amax(dim=1).numpy()


def combine_image_scores(zero_shot: np.ndarray, visual_max: np.ndarray) -> np.ndarray:
    """PatchCLIP's k-shot image score: the mean of the global score and the visual map's max."""
    return (np.asarray(zero_shot) + np.asarray(visual_max)) / 2


def winclip(store: CaptureStore, ids: Sequence[str], emb: dict[str, Any] | None, ref_emb: dict[str, Any] | None,
            extraction: ExtractionConfig) -> tuple[np.ndarray, np.ndarray]:
    """WinCLIP map ``(N, gh, gw)`` and image score ``(N,)``; WinCLIP+ when ``ref_emb`` is given.

    WinCLIP+ as :class:`~cfviz.clip.winclip.WinCLIP` with its defaults: patch memory of ``ln_post``
    patch tokens, few-shot map = mean of the patch and per-scale harmonic window VAS maps, final
    map = mean of zero- and few-shot maps, image score = mean of the zero-shot score and the
    few-shot map's max.
    """
    return winclip_from(stored_winclip(store, ids), emb, ref_emb, extraction)


def stored_winclip(store: CaptureStore, ids: Sequence[str]) -> tuple[Any, Any]:
    """WinCLIP's zero-shot maps ``(N, gh, gw)`` and image scores ``(N,)`` stored at extraction (tensors)."""
    import torch

    zs_maps, zs_img = [], []
    for image_id in ids:
        t = store[image_id].load(["winclip/map/zero_shot", "winclip/map/zero_shot_image"])
        zs_maps.append(t["winclip/map/zero_shot"].float())
        zs_img.append(t["winclip/map/zero_shot_image"].float().reshape(()))
    return torch.stack(zs_maps), torch.stack(zs_img)


def winclip_from(zero_shot: tuple[Any, Any], emb: dict[str, Any] | None, ref_emb: dict[str, Any] | None,
                 extraction: ExtractionConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`winclip` from the stored zero-shot maps and scores (:func:`stored_winclip`)."""
    zs_map, zs_image = zero_shot
    if ref_emb is None:
        return zs_map.numpy(), zs_image.numpy()
    if emb is None:
        raise ValueError("WinCLIP+ needs the query embeddings as well as the references'")
    q, r = as_visual_embeddings(emb, extraction), as_visual_embeddings(ref_emb, extraction)
    fs_map = _few_shot(q, r, "tokens", extraction.scales).map
    return ((zs_map + fs_map) / 2).numpy(), ((zs_image + fs_map.flatten(1).amax(dim=1)) / 2).numpy()
