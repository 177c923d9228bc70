"""Figures of failure cases (notebook 06): the ranked cases, their attention, branch disagreement.

Each figure says what it shows without the notebook around it: a case is titled "false positive
#2" only when it is one (see :func:`cfviz.analysis.failures.case_title`), the ground truth of
an anomalous image is outlined wherever its maps are drawn (a missed defect must be visible), and
signed disagreement maps share one colour scale with a labelled key.

Example
-------
>>> import numpy as np
>>> from cfviz.evaluation.scoring import Predictions
>>> from cfviz.analysis.failures import rank_failures
>>> rng = np.random.default_rng(0)
>>> masks = np.zeros((4, 16, 16), bool); masks[2:, 4:9, 4:9] = True
>>> p = Predictions(method="m", category="c", shots=0, seed=0, image_ids=["a", "b", "c", "d"],
...                 labels=np.array([0, 0, 1, 1]), masks=masks, maps=rng.random((4, 16, 16)).astype(np.float32),
...                 scores=np.array([0.1, 0.9, 0.2, 0.8], np.float32), defect_types=["good", "good", "hole", "cut"])
>>> fig = failure_gallery(p, rank_failures(p, k=2, threshold=0.5), lambda i: np.zeros((32, 32, 3), np.uint8))
>>> [ax.get_title().replace("\\n", " ") for ax in fig.axes[:4]]
['false positive #1', 'highest-scoring normal #2 (correct)', 'false negative #1', 'lowest-scoring anomalous #2 (correct)']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cfviz.viz._common import (add_colorbar, as_mask, as_rgb, clean_image_axes, draw_mask_contour, resize_bilinear,
                               wrap_title)
from cfviz.viz.style import DIVERGING_CMAP, MASK_COLOR, add_note, new_figure, style_context, symmetric_limits

#: Title colours: a misclassified case stands out from a correctly classified one.
WRONG_COLOR = "#b2182b"
CORRECT_COLOR = "0.35"


def _index(p: Any, image_id: str) -> int:
    try:
        return list(p.image_ids).index(image_id)
    except ValueError:
        raise KeyError(f"image_id {image_id!r} is not among the predictions' images") from None


def _mask(p: Any, i: int) -> np.ndarray | None:
    """The ground truth of image ``i`` when it has a defect (None for normal images and no masks)."""
    if p.masks is None or not int(p.labels[i]):
        return None
    m = np.asarray(p.masks[i])
    return m if m.any() else None


def failure_gallery(p: Any, ranked: Any, image: Callable[[str], Any], *, ncols: int | None = None,
                    title: str | None = None, note: str | None = None, **kwargs: Any) -> Any:
    """The ranked cases of :func:`~cfviz.analysis.failures.rank_failures` with their maps.

    Titles use the ``case`` column (misclassified cases in red), subtitles the defect type and
    the image score against the threshold; anomalous images have their ground truth outlined.
    The two scales are named apart: the colour bar is the pixel map's ("pixel score"), the
    subtitles and the title give image scores and their threshold. ``image`` loads an image by id
    (e.g. ``session.image``); other keywords go to :func:`cfviz.viz.gallery`.
    """
    from cfviz.analysis.failures import case_title
    from cfviz.viz.gallery import gallery

    rows = list(ranked.itertuples())
    if not rows:
        raise ValueError("ranked is empty; pass rank_failures(predictions, k=...) of at least one image")
    items, wrong = [], []
    for r in rows:
        i = _index(p, r.image_id)
        case = getattr(r, "case", None) or case_title(r.kind, int(r.rank), bool(r.wrong))
        verdict = "≥" if r.score >= r.threshold else "<"
        # wrapped: "highest-scoring normal #2 (correct)" is far wider than a panel
        items.append({"image": image(r.image_id), "map": p.maps[i], "mask": _mask(p, i), "title": wrap_title(case, 18),
                      "subtitle": f"{r.defect_type}\nimage score {r.score:.2f} {verdict} {r.threshold:.2f}"})
        wrong.append(bool(r.wrong))
    if title is None:
        n_wrong = sum(wrong)
        title = (f"{p.category}: {n_wrong} of {len(rows)} ranked cases misclassified "
                 f"(image-score threshold {rows[0].threshold:.2f})")
    kwargs.setdefault("label", f"pixel score\n({p.method} map)")
    fig = gallery(items, ncols=ncols or len(items), title=title, note=note, **kwargs)
    for ax, w in zip(fig.axes, wrong):
        ax.title.set_color(WRONG_COLOR if w else CORRECT_COLOR)
    return fig


def case_attention_grid(store: Any, p: Any, row: Any, image: Any, *, token: str | int = 0,
                        note: str | None = None, **kwargs: Any) -> Any:
    """Attention per timestep and UNet block of one ranked case, its ground truth outlined.

    ``row`` is a row of :func:`~cfviz.analysis.failures.rank_failures` (``itertuples()``).
    For a false negative the outline shows the defect the method missed.
    """
    from cfviz.analysis.failures import case_title
    from cfviz.viz.explore_data import attention_blocks
    from cfviz.viz.grids import timestep_block_grid

    i = _index(p, row.image_id)
    case = getattr(row, "case", None) or case_title(row.kind, int(row.rank), bool(row.wrong))
    kwargs.setdefault("label", "cross-attention (block mean)")
    kwargs.setdefault("title", f"{case}: {row.image_id} (score {row.score:.2f}, threshold {row.threshold:.2f})")
    return timestep_block_grid(attention_blocks(store, row.image_id, token=token), image=image,
                               mask=_mask(p, i), note=note, **kwargs)


def disagreement_figure(p: Any, image: Callable[[str], Any], *, image_ids: Sequence[str] | None = None,
                        top: int = 3, alpha: float = 0.7, note: str | None = None, panel_size: float = 1.7) -> Any:
    """Where the CLIP and diffusion branches disagree most: ``M_clip - M_diff`` over the images.

    Both branch maps are min-max scaled per image first (:func:`~cfviz.analysis.failures.
    disagreement_maps`), so the difference lies in [-1, 1]; every panel uses the same symmetric
    scale and one colour bar whose ends say which branch is more anomalous. Panels are titled
    with the image and its mean |difference|; ground truth is outlined in cyan.

    ``image_ids`` defaults to the ``top`` most disagreeing images of
    :func:`~cfviz.analysis.failures.disagreement`.
    """
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    from cfviz.analysis.failures import disagreement, disagreement_maps

    d = disagreement_maps(p)
    if image_ids is None:
        image_ids = disagreement(p).image_id.tolist()[:max(1, int(top))]
    idx = [_index(p, i) for i in image_ids]
    if not idx:
        raise ValueError("image_ids is empty; pass at least one image id or top >= 1")
    lo, hi = symmetric_limits(np.stack([d[i] for i in idx]))
    norm = Normalize(lo, hi)
    with style_context():
        fig = new_figure(len(idx) * panel_size + 1.3, panel_size + 0.95)
        axes = fig.subplots(1, len(idx), squeeze=False)[0]
        has_gt = False
        for ax, i in zip(axes, idx):
            rgb = as_rgb(image(p.image_ids[i]), "image")
            heat = resize_bilinear(d[i], rgb.shape[:2])
            ax.imshow(rgb)
            ax.imshow(heat, cmap=DIVERGING_CMAP, norm=norm, alpha=alpha, interpolation="antialiased").set_gid(
                "cfviz-heatmap")
            gt = _mask(p, i)
            if gt is not None:
                draw_mask_contour(ax, as_mask(gt, rgb.shape[:2]))
                has_gt = True
            clean_image_axes(ax)
            name = p.image_ids[i].split("/", 1)[-1]
            ax.set_title(f"{name}\nmean |diff| {np.abs(d[i]).mean():.2f}")
        cb = add_colorbar(fig, norm, DIVERGING_CMAP, list(axes), "M_clip - M_diff\n(each min-max scaled)",
                          shrink=0.85, aspect=15)
        cb.set_ticks([lo, 0.0, hi])
        cb.set_ticklabels([f"{lo:.2f}\ndiffusion\nhigher", "0\nagree", f"{hi:.2f}\nCLIP\nhigher"])
        if has_gt:
            axes[0].legend(handles=[Line2D([], [], color=MASK_COLOR, lw=1.2, label="ground truth")],
                           loc="upper left", bbox_to_anchor=(0, -0.02), frameon=False, fontsize="small",
                           handlelength=1.2, borderaxespad=0)
        fig.suptitle(f"{p.category}: where the CLIP and diffusion maps disagree most" if len(idx) > 2
                     else f"{p.category}: CLIP vs diffusion maps")
        add_note(fig, note)
    return fig


#: Bar colours of :func:`defect_breakdown_figure`: detected defects vs false positives of normal images.
DETECTED_COLOR = "#0072B2"
FALSE_POSITIVE_COLOR = "#D55E00"


def defect_breakdown_figure(breakdown: Any, *, title: str | None = None, note: str | None = None,
                            panel_width: float = 0.45) -> Any:
    """Per defect type, the share of images whose image score reaches the threshold, with n per bar.

    ``breakdown`` is :func:`~cfviz.analysis.failures.defect_breakdown` (``.assign(category=c)``
    for several categories: one panel each, the threshold is per category). A defect type's bar is
    its detection rate; the normal images' bar ("good") is the false-positive rate, in its own
    colour and named so under the bar. Each bar is annotated with ``detected/n``.

    >>> import pandas as pd
    >>> b = pd.DataFrame({"defect_type": ["good", "hole"], "normal": [True, False], "images": [4, 2],
    ...                   "n_detected": [1, 2], "detected": [0.25, 1.0], "threshold": [0.5, 0.5]})
    >>> fig = defect_breakdown_figure(b)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['hole', 'good (normal)']
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['2/2', '1/4']
    """
    from matplotlib.patches import Patch

    need = {"defect_type", "normal", "images", "n_detected", "threshold"}
    missing = sorted(need - set(getattr(breakdown, "columns", ())))
    if missing:
        raise ValueError(f"breakdown lacks the columns {missing}; pass defect_breakdown(predictions)")
    frame = breakdown if "category" in breakdown.columns else breakdown.assign(category="")
    cats = list(dict.fromkeys(frame["category"]))
    widths = [max(1.2, panel_width * len(frame[frame.category == c]) + 0.3) for c in cats]
    with style_context():
        fig = new_figure(sum(widths) + 2.4, 2.7)
        axes = fig.subplots(1, len(cats), squeeze=False, sharey=True, gridspec_kw={"width_ratios": widths})[0]
        for ax, cat in zip(axes, cats):
            part = frame[frame.category == cat].sort_values(["normal", "defect_type"], kind="stable")
            values = 100 * part["n_detected"].to_numpy(float) / part["images"].to_numpy(float)
            colors = [FALSE_POSITIVE_COLOR if n else DETECTED_COLOR for n in part["normal"]]
            xs = np.arange(len(part))
            ax.bar(xs, values, color=colors, width=0.7)
            for x, v, k, n in zip(xs, values, part["n_detected"], part["images"]):
                ax.text(x, v + 1.5, f"{int(k)}/{int(n)}", ha="center", va="bottom", fontsize="x-small")
            ax.set_xticks(xs, [f"{t} (normal)" if n else str(t) for t, n in zip(part["defect_type"], part["normal"])],
                          rotation=35, ha="right", rotation_mode="anchor", fontsize="x-small")
            ax.set_ylim(0, 112)
            ax.set_yticks(range(0, 101, 20))
            thr = float(part["threshold"].iloc[0])
            ax.set_title(f"{cat + ': ' if cat else ''}threshold {thr:.2f}", fontsize="small")
        axes[0].set_ylabel("images with image score\n≥ threshold (%)")
        axes[-1].legend(handles=[Patch(color=DETECTED_COLOR, label="defect type:\ndetection rate"),
                                 Patch(color=FALSE_POSITIVE_COLOR, label="normal images:\nfalse-positive rate")],
                        title="bar labels: images ≥ threshold / n", title_fontsize="x-small",
                        loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="x-small")
        fig.suptitle(title or "Image-level detection per defect type (F1-max threshold of the image scores)",
                     fontsize="small")
        add_note(fig, note)
    return fig
