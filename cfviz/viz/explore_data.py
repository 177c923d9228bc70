"""Pure functions behind the attention explorer (:mod:`cfviz.viz.explorer`): arrays and figures.

The explorer reads the capture store once per image (:func:`load_image_data`) and then only
slices arrays and draws figures: moving a slider never re-runs a model. Each function here is
usable without widgets, e.g. to reproduce an explorer view in a paper figure.

Example
-------
>>> import numpy as np
>>> data = ImageData(image_id="x", image=np.zeros((32, 32, 3), np.uint8), mask=None, label=0,
...                  defect_type="good", timesteps=[100.0, 400.0], tokens=["damage"],
...                  attention={"up_blocks.1.attn": np.stack([np.zeros((1, 8, 8)), np.ones((1, 8, 8))])})
>>> float(attention_map(data, "up_blocks.1.attn", step=1, token="damage").mean())
1.0
>>> float(fused_map({"clip_language": np.ones((4, 4)), "diff_language": np.zeros((4, 4))}, alpha=0.25, sigma=0)[0, 0])
0.25
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfviz.fusion import ALPHA_CLASSIFICATION, CLIP_KEYS, DIFF_KEYS, blend, fuse_components, method_image_scores, smooth

#: The explorer's layer option that averages every captured cross-attention layer.
ALL_LAYERS = "mean over layers"
COMPONENT_TITLES = {"clip_language": "M_clip_L", "clip_visual": "M_clip_V",
                    "diff_language": "M_diff_L", "diff_visual": "M_diff_V"}


@dataclass
class ImageData:
    """One image's stored outputs, read once: everything the explorer draws.

    ``attention`` maps each layer name to ``(timestep, token, h, w)`` float32; ``components``
    holds the image's normalised branch maps (from :class:`~cfviz.evaluation.scoring.Predictions`)
    and ``component_scores`` its branch image scores (``clip``, ``diff``); ``prediction`` is the
    method's final map of the image (``Predictions.maps``), thresholded for the predicted mask.
    """

    image_id: str
    image: np.ndarray
    mask: np.ndarray | None
    label: int
    defect_type: str
    timesteps: list[float]
    tokens: list[str]
    attention: dict[str, np.ndarray]
    clip: Any = None
    components: dict[str, np.ndarray] = field(default_factory=dict)
    component_scores: dict[str, float] = field(default_factory=dict)
    prediction: np.ndarray | None = None

    @property
    def layers(self) -> list[str]:
        """Captured cross-attention layers (module paths), in stored order, plus :data:`ALL_LAYERS`."""
        return [ALL_LAYERS, *self.attention]


def layer_label(layer: str) -> str:
    """What a layer is called on screen: its family's short name, or :data:`ALL_LAYERS`.

    UNets ``up1.attn0``; SD3/FLUX joint attention ``joint3``; FLUX single-stream ``single5``;
    PixArt ``cross3`` (:func:`cfviz.capture.families.layer_label`).

    >>> layer_label("up_blocks.1.attentions.0.transformer_blocks.0.attn2"), layer_label(ALL_LAYERS)
    ('up1.attn0', 'mean over layers')
    >>> layer_label("transformer_blocks.3.attn"), layer_label("single_transformer_blocks.5.attn")
    ('joint3', 'single5')
    """
    from cfviz.capture.families import layer_label as family_label

    return layer if layer == ALL_LAYERS else family_label(layer)


def layer_options(data: ImageData) -> list[tuple[str, str]]:
    """Dropdown options ``(short name, module path)`` for the image's layers (one readable name each),
    in UNet order (down, mid, up)."""
    from cfviz.capture.families import layer_labels
    from cfviz.capture.naming import unet_order

    layers = unet_order(data.attention)
    return [(ALL_LAYERS, ALL_LAYERS), *zip(layer_labels(layers), layers)]


def layer_caption(layer: str) -> str:
    """One line saying which module(s) a layer label stands for (for a caption or a tooltip)."""
    if layer == ALL_LAYERS:
        return "layer: mean over every captured text-attention layer"
    return f"layer {layer_label(layer)} = {layer}"


def load_image_data(store: Any, dataset: Any, image_id: str, predictions: Any = None) -> ImageData:
    """Read one image's attention, CLIP scores and (if given) fused-branch maps from the store."""
    if image_id not in store:
        raise KeyError(f"image_id {image_id!r} is not in the store at {store.path}; run extraction first")
    entry = store[image_id]
    rec = next((r for r in dataset.records if r.image_id == image_id), None)
    if rec is None:
        raise KeyError(f"image_id {image_id!r} is not in the data set")
    sample = dataset.load(rec)
    names = [n for n in entry.names if n.startswith("attn/")]
    attention = {n[len("attn/"):]: t.float().numpy() for n, t in entry.load(names).items()}
    tokens = list((entry.meta.get("tokens") or {}).get("labels", []))
    try:
        clip = entry.clip()
    except KeyError:
        clip = None
    comps: dict[str, np.ndarray] = {}
    comp_scores: dict[str, float] = {}
    prediction = None
    if predictions is not None:
        if image_id not in predictions.image_ids:
            raise KeyError(f"image_id {image_id!r} is not among the predictions' images")
        i = predictions.image_ids.index(image_id)
        comps = {k: np.asarray(v[i], np.float32) for k, v in predictions.components.items()}
        comp_scores = {k: float(v[i]) for k, v in predictions.component_scores.items()}
        maps = getattr(predictions, "maps", None)
        prediction = None if maps is None else np.asarray(maps[i], np.float32)
    mask = None if sample.mask is None else np.asarray(sample.mask)
    return ImageData(image_id=image_id, image=np.asarray(sample.image), mask=mask, label=int(rec.label),
                     defect_type=str(rec.defect_type), timesteps=[float(t) for t in entry.timesteps],
                     tokens=tokens, attention=attention, clip=clip, components=comps, component_scores=comp_scores,
                     prediction=prediction)


def attention_map(data: ImageData, layer: str, step: int, token: str | int = 0) -> np.ndarray:
    """The cross-attention map of ``layer`` (or :data:`ALL_LAYERS`) at step index ``step`` for ``token``.

    With :data:`ALL_LAYERS`, each layer's map is resized bilinearly to the finest resolution and
    the maps are averaged (DAAM-style).
    """
    from cfviz.viz._common import resize_bilinear

    if not data.attention:
        raise ValueError(f"{data.image_id}: no cross-attention was stored for this image")
    if not 0 <= int(step) < len(data.timesteps):
        raise IndexError(f"step must be in 0..{len(data.timesteps) - 1} (timesteps {data.timesteps}), got {step}")
    if isinstance(token, str):
        if token not in data.tokens:
            raise KeyError(f"token {token!r} was not recorded; recorded tokens: {data.tokens}")
        k = data.tokens.index(token)
    else:
        k = int(token)
    if layer == ALL_LAYERS:
        side = max(a.shape[-1] for a in data.attention.values())
        maps = [resize_bilinear(a[int(step), k], side) for a in data.attention.values()]
        return np.mean(maps, axis=0).astype(np.float32)
    if layer not in data.attention:
        raise KeyError(f"layer {layer!r} was not captured; captured: {list(data.attention)}")
    return np.asarray(data.attention[layer][int(step), k], np.float32)


def layer_sides(data: ImageData) -> list[int]:
    """The attention resolutions (map sides) the image's layers have, smallest first."""
    return sorted({int(a.shape[-1]) for a in data.attention.values()})


def word_maps(data: ImageData, step: int, *, layer: str = ALL_LAYERS, sides: Sequence[int] | None = None
              ) -> tuple[dict[str, np.ndarray], float, float]:
    """Every recorded word's cross-attention at step index ``step``, on one scale (DAAM's word maps).

    ``layer``: one layer, or :data:`ALL_LAYERS` for the mean over the layers whose resolution is in
    ``sides`` (all when ``None``; DAAM leaves out 8x8), each upsampled bilinearly to the finest chosen
    resolution first. Returns ``({word: map}, lo, hi)``: ``lo..hi`` spans every word's map, so the
    maps share one colour scale.

    >>> d = ImageData(image_id="x", image=np.zeros((8, 8, 3), np.uint8), mask=None, label=0, defect_type="good",
    ...               timesteps=[1.0], tokens=["a", "b"], attention={"l": np.stack([np.zeros((4, 4)), np.ones((4, 4))])[None]})
    >>> maps, lo, hi = word_maps(d, 0)
    >>> sorted(maps), lo, hi
    (['a', 'b'], 0.0, 1.0)
    """
    from cfviz.viz._common import resize_bilinear

    if not data.attention:
        raise ValueError(f"{data.image_id}: no cross-attention was stored for this image")
    if layer == ALL_LAYERS:
        layers = [n for n, a in data.attention.items() if sides is None or int(a.shape[-1]) in set(sides)]
        if not layers:
            raise ValueError(f"no captured layer has a resolution in {list(sides or [])}; "
                             f"the image's layers have {layer_sides(data)}")
    elif layer in data.attention:
        layers = [layer]
    else:
        raise KeyError(f"layer {layer!r} was not captured; captured: {list(data.attention)}")
    side = max(int(data.attention[n].shape[-1]) for n in layers)
    words = data.tokens or [f"#{k}" for k in range(next(iter(data.attention.values())).shape[1])]
    maps = {w: np.mean([resize_bilinear(data.attention[n][int(step), k], side) for n in layers], axis=0)
            .astype(np.float32) for k, w in enumerate(words)}
    lo = float(min(np.nanmin(m) for m in maps.values()))
    hi = float(max(np.nanmax(m) for m in maps.values()))
    return maps, lo, hi if hi > lo else lo + 1e-6


def fused_map(components: Mapping[str, np.ndarray], alpha: float, sigma: float = 4.0) -> np.ndarray:
    """``alpha * (M_clip_L + M_clip_V) + (1 - alpha) * (M_diff_L + M_diff_V)`` of one image, smoothed."""
    _check_both(components)
    return fuse_components({k: components[k][None] for k in (*CLIP_KEYS, *DIFF_KEYS) if k in components},
                           alpha, sigma)[0]


def fusable(components: Mapping[str, Any]) -> bool:
    """Whether ``components`` hold both branches' language maps (CLIPFusion's), so the weights apply."""
    return all(k in components for k in CLIP_KEYS[:1] + DIFF_KEYS[:1])


def _check_both(components: Mapping[str, np.ndarray]) -> None:
    if not any(k in components for k in CLIP_KEYS) or not any(k in components for k in DIFF_KEYS):
        raise ValueError(f"fusion needs both branches' maps; got components {sorted(components)} "
                         "(use predictions of method 'clipfusion')")


def fusion_parts(components: Mapping[str, np.ndarray], sigma: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed branch sums ``(S(M_clip_L + M_clip_V), S(M_diff_L + M_diff_V))``.

    Fusion and Gaussian smoothing are linear, so ``alpha * clip + (1 - alpha) * diff`` equals
    :func:`fused_map` at any alpha (to float rounding): the explorer smooths once per image and
    an alpha change costs one multiply-add.

    >>> c = {k: np.random.default_rng(0).random((8, 8)) for k in (*CLIP_KEYS, *DIFF_KEYS)}
    >>> clip, diff = fusion_parts(c, sigma=2)
    >>> bool(np.allclose(0.3 * clip + 0.7 * diff, fused_map(c, 0.3, sigma=2), atol=1e-5))
    True
    """
    _check_both(components)
    clip = [np.asarray(components[k], np.float32) for k in CLIP_KEYS if k in components]
    diff = [np.asarray(components[k], np.float32) for k in DIFF_KEYS if k in components]
    return smooth(np.sum(clip, axis=0), sigma), smooth(np.sum(diff, axis=0), sigma)


def fused_score(component_scores: Mapping[str, float], alpha: float) -> float:
    """The image score ``alpha * s_clip + (1 - alpha) * s_diff``."""
    return blend(float(component_scores["clip"]), float(component_scores["diff"]), float(alpha))


def category_scores(predictions: Any, alpha_cls: float, run_alpha_cls: float | None = None,
                    scoring: Any = None) -> np.ndarray:
    """The category's image scores at the classification weight ``alpha_cls`` (paper eq. 9).

    At the run's own weight (``run_alpha_cls``, the run's ``scoring.alpha_cls``) these are the run's
    scores themselves (``predictions.scores``, what ``results.csv`` was computed from). At another
    weight they follow the run's image-score rule (``scoring.image_score``, default
    :class:`~cfviz.evaluation.config.ScoringConfig`'s) with the functions
    :func:`cfviz.evaluation.scoring.predict` uses: ``"eq9"`` reduces the branch maps fused with
    ``alpha_cls`` and smoothed (:func:`cfviz.fusion.fuse_components`,
    :func:`~cfviz.fusion.method_image_scores`); ``"own"`` is ``alpha_cls * s_clip + (1 - alpha_cls)
    * s_diff`` of the normalised branch scores (:func:`~cfviz.fusion.blend`); ``"map"`` and ``"cls"``
    do not read ``alpha_cls`` (the run's scores). A test checks each against ``predict``. A method
    without both branches has no weight: its own scores.

    >>> from cfviz.evaluation.config import ScoringConfig
    >>> class P: scores = np.array([0.5, 0.6], np.float32); component_scores = {"clip": np.array([1., 0.]),
    ...                                                                         "diff": np.array([0., 1.])}
    >>> own = ScoringConfig(image_score="own")
    >>> category_scores(P(), 0.75, run_alpha_cls=0.75).tolist(), category_scores(P(), 0.25, scoring=own).tolist()
    ([0.5, 0.6000000238418579], [0.25, 0.75])
    """
    from cfviz.evaluation.config import ScoringConfig

    scoring = scoring or ScoringConfig()
    cs = getattr(predictions, "component_scores", None) or {}
    comps = getattr(predictions, "components", None) or {}
    a = float(alpha_cls)
    if (run_alpha_cls is not None and a == float(run_alpha_cls)) or not {"clip", "diff"} <= set(cs) \
            or scoring.image_score in ("map", "cls"):
        return np.asarray(predictions.scores)
    if scoring.image_score == "own":
        return np.asarray(blend(np.asarray(cs["clip"]), np.asarray(cs["diff"]), a), np.float32)
    cls_map = fuse_components(comps, a, scoring.sigma)
    return np.asarray(method_image_scores(scoring.image_score, cls_map, cls_map=cls_map,
                                          score_rule=scoring.score_rule, topk=scoring.topk), np.float32)


def category_image_auroc(predictions: Any, scores: Any) -> float | None:
    """The category's image AUROC of ``scores``, by :func:`cfviz.metrics.image_metrics` (the function
    the run's ``results.csv`` comes from); ``None`` when only one class is present."""
    from cfviz.metrics import image_metrics

    labels = np.asarray(predictions.labels)
    if len(set(labels.tolist())) < 2:
        return None
    return float(image_metrics(labels, np.asarray(scores))["image_auroc"])


def live_metrics(data: ImageData, alpha: float, *, alpha_cls: float | None = None, sigma: float = 4.0,
                 predictions: Any = None, fused: np.ndarray | None = None,
                 scores: np.ndarray | None = None) -> dict[str, float]:
    """Per-image numbers: the image score at ``alpha_cls`` (eq. 9), the fused map's maximum at the
    segmentation weight ``alpha`` (eq. 4), this image's pixel AUROC (when its mask has both classes)
    and, given ``predictions``, the category's image AUROC at ``alpha_cls``.

    ``alpha_cls`` defaults to the run's default classification weight (0.75): the image score never
    follows the segmentation weight. ``fused``: the fused map at ``alpha`` if already computed;
    ``scores``: the category's image scores (:func:`category_scores`) if already computed.
    """
    from cfviz.metrics import auroc
    from cfviz.viz._common import as_mask

    alpha_cls = ALPHA_CLASSIFICATION if alpha_cls is None else float(alpha_cls)
    fused = fused_map(data.components, alpha, sigma) if fused is None else fused
    out = {"score": fused_score(data.component_scores, alpha_cls), "map_max": float(fused.max())}
    if predictions is not None:
        scores = category_scores(predictions, alpha_cls) if scores is None else scores
        if data.image_id in predictions.image_ids:
            out["score"] = float(scores[predictions.image_ids.index(data.image_id)])
    if data.mask is not None:
        m = as_mask(data.mask, fused.shape).ravel()
        if 0 < m.sum() < m.size:
            out["pixel_auroc"] = float(auroc(m, fused.ravel()))
    if predictions is not None:
        value = category_image_auroc(predictions, scores)
        if value is not None:
            out["category_image_auroc"] = value
    return out


#: How :func:`live_metrics` keys are shown; AUROCs are in %, like every table and figure.
METRIC_NAMES = {"score": "score", "map_max": "map max", "pixel_auroc": "pixel AUROC",
                "category_image_auroc": "category image AUROC"}


def metric_labels(metrics: Mapping[str, float]) -> dict[str, str]:
    """``{display name: formatted value}``: AUROCs in % ("98.5 %"), scores as they are.

    >>> metric_labels({"score": 0.61234, "pixel_auroc": 0.9851})
    {'score': '0.612', 'pixel AUROC': '98.5 %'}
    """
    return {METRIC_NAMES.get(k, k): (f"{100 * v:.1f} %" if k.endswith("auroc") else f"{v:.3f}")
            for k, v in metrics.items()}


def attention_figure(data: ImageData, *, layer: str = ALL_LAYERS, step: int = 0, token: str | int = 0,
                     opacity: float = 0.6, show_mask: bool = True, clip_scale: int | None = None,
                     note: str | None = None, panel_size: float = 2.2) -> Any:
    """Cross-attention over the image beside the CLIP window scores (top windows outlined)."""
    from cfviz.viz.clipviz import plot_window_scores
    from cfviz.viz.overlays import overlay
    from cfviz.viz.style import add_note, new_figure, style_context

    has_clip = data.clip is not None and bool(getattr(data.clip, "windows", None))
    with style_context():
        fig = new_figure(panel_size * (2 if has_clip else 1) + 0.8, panel_size + 0.9)
        axes = fig.subplots(1, 2 if has_clip else 1, squeeze=False)[0]
        heat = attention_map(data, layer, step, token)
        tok = token if isinstance(token, str) else data.tokens[int(token)] if data.tokens else f"#{token}"
        lname = layer_label(layer)
        overlay(axes[0], data.image, heat, alpha=opacity, mask=data.mask if show_mask else None,
                title=f"attention '{tok}', t={data.timesteps[step]:g}\n{lname}", label="cross-attention")
        if has_clip:
            scales = sorted(data.clip.windows)
            s = clip_scale if clip_scale in scales else scales[0]
            plot_window_scores(axes[1], data.image, data.clip.window_boxes[s], data.clip.windows[s], top_k=3,
                               grid=window_grid(data.clip),
                               alpha=opacity, mask=data.mask if show_mask else None, legend=False,
                               title=f"CLIP windows {s}x{s}")
        fig.suptitle(f"{data.image_id} ({data.defect_type})")
        # the short layer name is in the title; the caption says which module it is
        add_note(fig, f"{layer_caption(layer)}. {note}" if note else layer_caption(layer) + ".")
    return fig


def fusion_figure(data: ImageData, alpha: float, *, sigma: float = 4.0, opacity: float = 0.6,
                  show_mask: bool = True, metrics: Mapping[str, float] | None = None,
                  note: str | None = None, panel_size: float = 1.6) -> Any:
    """The four branch maps of the image and the fused map at ``alpha`` (one scale per map)."""
    from cfviz.viz.overlays import maps_row

    maps = {COMPONENT_TITLES[k]: data.components[k] for k in (*CLIP_KEYS, *DIFF_KEYS) if k in data.components}
    maps[f"fused (alpha={alpha:.2f})"] = fused_map(data.components, alpha, sigma)
    title = f"{data.image_id}: " + ", ".join(f"{k} {v}" for k, v in metric_labels(metrics or {}).items())
    return maps_row(data.image, maps, mask=data.mask if show_mask else None, alpha=opacity, normalize=True,
                    title=title, note=note, panel_size=panel_size)


def figure_png(fig: Any, dpi: float = 110) -> bytes:
    """PNG bytes of ``fig`` (then closed from pyplot's registry if it is there)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - figures made without pyplot are not registered
        pass
    return buf.getvalue()


def image_choices(predictions: Any | Sequence[Any]) -> list[tuple[str, tuple[int, int]]]:
    """Dropdown options ``(label, (which predictions, image index))`` for one or several Predictions."""
    preds = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
    out = []
    for j, p in enumerate(preds):
        for i, image_id in enumerate(p.image_ids):
            kind = p.defect_types[i] if p.defect_types else ("anomalous" if p.labels[i] else "normal")
            out.append((f"{image_id} [{kind}]", (j, i)))
    return out


def default_choice(predictions: Any | Sequence[Any]) -> tuple[int, int]:
    """The image the explorer opens on: the highest-scoring anomalous image (something to see).

    Falls back to the first anomalous image when the predictions carry no scores, and to the first
    image when there is no anomalous one.
    """
    preds = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
    best, best_score = None, -np.inf
    for j, p in enumerate(preds):
        labels = np.asarray(p.labels)
        scores = getattr(p, "scores", None)
        for i in np.flatnonzero(labels == 1):
            score = float(scores[i]) if scores is not None else -i
            if best is None or score > best_score:
                best, best_score = (j, int(i)), score
    return best if best is not None else (0, 0)


def attention_blocks(store: Any, image_id: str, *, token: str | int = 0, size: int = 64) -> Any:
    """One image's cross-attention averaged per UNet block: a LabelledMaps ``(step, block, h, w)``.

    Ready for :func:`cfviz.viz.timestep_block_grid` (rows = timesteps, columns = blocks).
    """
    if image_id not in store:
        raise KeyError(f"image_id {image_id!r} is not in the store at {store.path}")
    from cfviz.capture.naming import unet_order

    cache = store[image_id].cache(blocks=[])
    maps = cache.blocks_average(size=size)
    sel = maps.isel(batch=0)
    sel = sel.sel(block=unet_order(sel.coords["block"]))  # columns in UNet order: down, mid, up
    return sel.sel(token=token) if isinstance(token, str) else sel.isel(token=int(token))


# ---------------------------------------------------------------------------------- array views
# What the interactive explorer shows, as arrays (cfviz.viz.render draws and encodes them in a few
# milliseconds); the figures above show the same maps with matplotlib for export.

def window_grid(clip: Any) -> tuple[int, int]:
    """The ViT patch grid the image's windows live on (the stored patch map's shape, else 15x15)."""
    from cfviz.viz.clipviz import DEFAULT_GRID

    patch = getattr(clip, "patch", None)
    if patch is not None and len(getattr(patch, "shape", ())) == 2:
        return int(patch.shape[0]), int(patch.shape[1])
    return DEFAULT_GRID, DEFAULT_GRID


def window_scales(data: ImageData) -> list[int]:
    """The window sides (in patches) stored for the image, smallest first (empty without CLIP scores)."""
    return sorted(int(s) for s in data.clip.windows) if data.clip is not None and data.clip.windows else []


def top_windows(data: ImageData, scale: int, top_k: int = 3) -> list[dict[str, Any]]:
    """The ``top_k`` highest-scoring windows of side ``scale``: rank (1 = best), score and box
    ``(row, col, height, width)`` in patches, best first (ties keep the stored order)."""
    from cfviz.viz.clipviz import windows_and_scores

    boxes, scores = windows_and_scores(data.clip.window_boxes[scale], data.clip.windows[scale])
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")][:top_k]
    return [{"rank": r + 1, "score": float(scores[i]), "box": tuple(int(v) for v in boxes[i])}
            for r, i in enumerate(order)]


def window_map(data: ImageData, scale: int) -> np.ndarray:
    """Per patch, the mean score of the windows of side ``scale`` covering it (NaN where none does)."""
    from cfviz.viz.clipviz import window_scores_to_map

    return window_scores_to_map(data.clip.window_boxes[scale], data.clip.windows[scale], window_grid(data.clip),
                                how="mean")


def prediction_threshold(predictions: Any, maps: np.ndarray | None = None) -> float:
    """The pixel F1-max threshold of the category's maps (``predictions.maps``, or ``maps``, against
    ``.masks``): the threshold at which anomalib draws a predicted mask. A pixel scoring ``>=`` it is
    predicted anomalous."""
    from cfviz.metrics import f1_max

    masks = getattr(predictions, "masks", None)
    if masks is None or not np.asarray(masks).any():
        raise ValueError("the predictions carry no ground-truth masks with a defect: no pixel threshold")
    maps = predictions.maps if maps is None else maps
    return float(f1_max(np.asarray(masks).ravel() > 0, np.asarray(maps, np.float64).ravel())[1])


def category_maps(predictions: Any, alpha_seg: float, *, sigma: float, run_alpha_seg: float | None = None,
                  parts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The category's final maps at the segmentation weight ``alpha_seg`` (paper eq. 4), ``(N, S, S)``.

    At the run's own weight (``run_alpha_seg``) these are the run's maps (``predictions.maps``, what
    ``results.csv`` was computed from); at another weight, ``alpha_seg * S(clip) + (1 - alpha_seg) *
    S(diff)`` of :func:`fusion_parts` (``parts``, if already computed). A method without both branches
    has no weight: its own maps.
    """
    comps = getattr(predictions, "components", None) or {}
    both = fusable(comps)
    maps = getattr(predictions, "maps", None)
    if maps is not None and ((run_alpha_seg is not None and float(alpha_seg) == float(run_alpha_seg)) or not both):
        return np.asarray(maps, np.float32)
    if not both:
        raise ValueError("the predictions carry neither maps nor both branches' maps")
    clip, diff = fusion_parts(comps, sigma) if parts is None else parts
    return blend(clip, diff, float(alpha_seg))


def score_histogram(values: Any, labels: Any, *, bins: int = 30, max_values: int = 2_000_000
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edges, normal counts, anomalous counts)`` of ``values`` split by ``labels`` (1 = anomalous)
    on one set of ``bins`` bins. Above ``max_values`` values an evenly spaced subset is counted
    (pixel histograms of large categories; the shape of a histogram does not need every pixel).

    >>> edges, normal, anomalous = score_histogram([0.1, 0.2, 0.9], [0, 0, 1], bins=2)
    >>> edges.tolist(), normal.tolist(), anomalous.tolist()
    ([0.1, 0.5, 0.9], [2, 0], [0, 1])
    """
    v = np.asarray(values, np.float64).ravel()
    y = np.asarray(labels).ravel() > 0
    if v.shape != y.shape:
        raise ValueError(f"values and labels differ in size: {v.size} and {y.size}")
    if v.size > max_values:
        step = int(np.ceil(v.size / max_values))
        v, y = v[::step], y[::step]
    finite = np.isfinite(v)
    v, y = v[finite], y[finite]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    return edges, np.histogram(v[~y], edges)[0], np.histogram(v[y], edges)[0]


def image_threshold(predictions: Any) -> float:
    """The image-score F1-max threshold (as :func:`cfviz.analysis.failures.rank_failures` uses; the
    median score when only one class is present)."""
    labels, scores = np.asarray(predictions.labels), np.asarray(predictions.scores, np.float64)
    if len(set(labels.tolist())) < 2:
        return float(np.median(scores))
    from cfviz.metrics import f1_max

    return float(f1_max(labels, scores)[1])


def outcomes(predictions: Any, threshold: float | None = None) -> list[str]:
    """Per image: ``"TP"``, ``"TN"``, ``"FP"`` or ``"FN"`` at the image threshold (F1-max by default).

    >>> class P: labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.5, 0.9])
    >>> outcomes(P(), threshold=0.55)
    ['TN', 'FP', 'FN', 'TP']
    """
    thr = image_threshold(predictions) if threshold is None else float(threshold)
    return [("T" if (s >= thr) == bool(y) else "F") + ("P" if s >= thr else "N")
            for y, s in zip(np.asarray(predictions.labels).tolist(), np.asarray(predictions.scores).tolist())]


#: How the failure browser can order the images.
SORTS = {"score, high to low": "score-", "score, low to high": "score+", "image id": "id"}


def browse_choices(predictions: Any | Sequence[Any], *, sort: str = "score-", show: str = "all",
                   threshold: float | None = None) -> list[tuple[str, tuple[int, int]]]:
    """The image menu of the failure browser: options ``(label, (which predictions, index))``.

    ``show``: ``"all"``, ``"wrong"`` (false positives and negatives at the image F1-max threshold),
    ``"FP"``, ``"FN"``, ``"anomalous"``, ``"normal"`` or ``"defect:<type>"``; ``sort``: ``"score-"``
    (high to low), ``"score+"`` or ``"id"``. Each label says the defect type, score and outcome.
    """
    preds = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
    rows = []
    for j, p in enumerate(preds):
        has_scores = getattr(p, "scores", None) is not None
        outs = outcomes(p, threshold) if has_scores else [""] * len(p.image_ids)
        scores = np.asarray(p.scores if has_scores else np.zeros(len(p.image_ids)), np.float64)
        for i, image_id in enumerate(p.image_ids):
            kind = p.defect_types[i] if p.defect_types else ("anomalous" if p.labels[i] else "normal")
            rows.append((image_id, kind, float(scores[i]), outs[i], int(p.labels[i]), (j, i)))
    keep = {"all": lambda r: True, "wrong": lambda r: r[3] in ("FP", "FN"), "FP": lambda r: r[3] == "FP",
            "FN": lambda r: r[3] == "FN", "anomalous": lambda r: r[4] == 1, "normal": lambda r: r[4] == 0}
    if show.startswith("defect:"):
        rows = [r for r in rows if r[1] == show[len("defect:"):]]
    elif show in keep:
        rows = [r for r in rows if keep[show](r)]
    else:
        raise ValueError(f"show must be one of {sorted(keep)} or 'defect:<type>', got {show!r}")
    if sort not in SORTS.values():
        raise ValueError(f"sort must be one of {list(SORTS.values())}, got {sort!r}")
    if sort == "id":
        rows.sort(key=lambda r: r[0])
    else:
        rows.sort(key=lambda r: (-r[2] if sort == "score-" else r[2], r[0]))
    return [(f"{r[0]} · {r[1]} · score {r[2]:.3f} · {r[3]}" if r[3] else f"{r[0]} · {r[1]}", r[5]) for r in rows]


def filter_options(predictions: Any | Sequence[Any]) -> list[tuple[str, str]]:
    """The failure browser's "show" menu: every subset :func:`browse_choices` takes, defect types last."""
    preds = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
    kinds = sorted({d for p in preds for d in (p.defect_types or [])})
    return [("all images", "all"), ("misclassified (FP + FN)", "wrong"), ("false positives", "FP"),
            ("false negatives", "FN"), ("anomalous", "anomalous"), ("normal", "normal"),
            *[(f"defect type: {d}", f"defect:{d}") for d in kinds]]
