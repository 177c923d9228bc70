"""Two runs side by side: the same image's maps from two stores (or any two maps) on one colour scale.

:func:`compare_maps` draws ``a`` and ``b`` next to each other with one shared colour scale (one
colour bar), and their difference ``b - a`` on a diverging scale centred on zero with its own
bar; several rows (e.g. one per timestep) share the same two scales. :func:`compare_store_maps`
reads the maps of one image from two capture stores (k = 0 vs 1 runs, before vs after a change):
M_diff_L (the language words' cross-attention, as scoring averages it) or any stored 2-D array.

Example
-------
>>> import numpy as np
>>> a = np.zeros((8, 8)); b = np.eye(8)
>>> fig = compare_maps(a, b, labels=("before", "after"))
>>> [ax.get_title() for ax in fig.axes[:3]]
['before', 'after', 'after − before']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cfviz.viz._common import (add_colorbar, as_map, as_mask, as_rgb, check_alpha, clean_image_axes,
                               draw_mask_contour, finite_range, resize_bilinear, wrap_title)
from cfviz.viz.style import DIVERGING_CMAP, SCORE_CMAP, finish_figure, new_figure, style_context


def _rows(maps: Any, name: str) -> dict[str, np.ndarray]:
    if isinstance(maps, Mapping):
        if not maps:
            raise ValueError(f"{name} is an empty mapping; pass a 2-D map or {{row name: map}}")
        return {str(k): as_map(v, f"{name}[{k!r}]") for k, v in maps.items()}
    return {"": as_map(maps, name)}


def compare_maps(a: Any, b: Any, *, labels: tuple[str, str] = ("a", "b"), image: Any = None, mask: Any = None,
                 alpha: float = 0.6, cmap: Any = None, difference: bool = True, robust: bool = False,
                 vmin: float | None = None, vmax: float | None = None, label: str = "attention",
                 title: str | None = None, note: str | None = None, panel_size: float = 1.5) -> Any:
    """``a`` | ``b`` | ``b - a`` for one image, ``a`` and ``b`` on one shared colour scale.

    Parameters
    ----------
    a, b:
        2-D maps (arrays, tensors, LabelledMaps), or mappings ``{row name: map}`` with the same keys
        (one row each, e.g. per timestep). Maps of different sizes are resized to the larger one
        (to the image when one is given).
    labels:
        Names of the two sides (column titles; the difference is titled ``"b − a"``).
    image, mask:
        Optional image under every map and ground-truth contour on every panel.
    difference:
        Add the ``b - a`` column (diverging colours centred on zero, its own colour bar).
    robust, vmin, vmax:
        Shared limits from the 1st/99th percentiles, or fixed limits.
    label:
        What the values are (the shared colour bar's label).
    """
    rows_a, rows_b = _rows(a, "a"), _rows(b, "b")
    if list(rows_a) != list(rows_b):
        raise ValueError(f"a and b must have the same rows, got {list(rows_a)} and {list(rows_b)}")
    if not (isinstance(labels, (tuple, list)) and len(labels) == 2):
        raise ValueError(f"labels must be two names, got {labels!r}")
    alpha = check_alpha(alpha)
    rgb = None if image is None else as_rgb(image, "image")
    if rgb is not None:
        shape = rgb.shape[:2]
    else:
        shape = max((m.shape for m in [*rows_a.values(), *rows_b.values()]), key=lambda s: s[0] * s[1])
    fit = {k: (resize_bilinear(rows_a[k], shape, "a"), resize_bilinear(rows_b[k], shape, "b")) for k in rows_a}
    gt = None if mask is None else as_mask(mask, shape)
    from matplotlib.colors import Normalize, TwoSlopeNorm

    lo, hi = finite_range([m for pair in fit.values() for m in pair], robust=robust)
    norm = Normalize(lo if vmin is None else float(vmin), hi if vmax is None else float(vmax))
    diffs = {k: pb - pa for k, (pa, pb) in fit.items()}
    # equal maps: a small range on the maps' own scale, so the bar does not claim differences of 1
    flat = np.concatenate([v.ravel() for v in diffs.values()])
    flat = flat[np.isfinite(flat)]
    d = float(np.abs(flat).max()) if flat.size else 0.0
    d = d if d > 0 else 0.05 * (norm.vmax - norm.vmin)
    dnorm = TwoSlopeNorm(0.0, -d, d)
    n_cols = 3 if difference else 2
    with style_context():
        fig = new_figure(n_cols * panel_size + 0.4, len(fit) * panel_size + 1.2)
        axes = fig.subplots(len(fit), n_cols, squeeze=False)
        cmap = cmap or SCORE_CMAP
        # long names (families: "SD3 MMDiT (tiny-sd3)") wrap to the panel instead of running into a neighbour
        width = max(12, int(panel_size * 15))
        titles = [wrap_title(str(labels[0]), width), wrap_title(str(labels[1]), width),
                  wrap_title(f"{labels[1]} − {labels[0]}", width)]
        for r, (row, (pa, pb)) in enumerate(fit.items()):
            for c, (data, nm, cm) in enumerate([(pa, norm, cmap), (pb, norm, cmap),
                                                (diffs[row], dnorm, DIVERGING_CMAP)][:n_cols]):
                ax = axes[r, c]
                if rgb is not None:
                    ax.imshow(rgb)
                im = ax.imshow(data, cmap=cm, norm=nm, alpha=alpha if rgb is not None else 1.0,
                               interpolation="antialiased" if rgb is not None else "nearest")
                im.set_gid("cfviz-heatmap" if c < 2 else "cfviz-difference")
                if gt is not None:
                    draw_mask_contour(ax, gt)
                clean_image_axes(ax)
                if r == 0:
                    ax.set_title(titles[c])
                if c == 0 and row:
                    ax.set_ylabel(row)
        # each bar under the panels it belongs to, its label under it: a label beside the shared bar
        # stood between the maps and the difference panel, as if it named the latter
        bar = dict(location="bottom", shrink=0.8, aspect=25, pad=0.03)
        add_colorbar(fig, norm, axes[0, 0].images[-1].cmap, axes[:, :2].ravel().tolist(), label, **bar)
        if difference:
            cb = add_colorbar(fig, dnorm, axes[0, 2].images[-1].cmap, axes[:, 2].tolist(), "difference (panel title)",
                              **{**bar, "aspect": 12})
            from matplotlib.ticker import FuncFormatter

            # tick labels carry their own exponent: an offset text ("1e-5") would sit on the title
            cb.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        return finish_figure(fig, title, note)


def _store_map(store: Any, image_id: str, what: str, tokens: Any, steps: Any, side: str) -> np.ndarray:
    from cfviz.errors import CfvizError

    if image_id not in store:
        raise KeyError(f"image {image_id!r} is not in store {side} ({store.path}); "
                       f"it holds {len(store)} images, e.g. {store.ids[:3]}")
    entry = store[image_id]
    if what != "language":
        arr = np.asarray(entry[what].float().numpy() if hasattr(entry[what], "float") else entry[what], float)
        return as_map(arr, f"{side}: {what}")
    from cfviz.diffusion.mapdiff import language_map
    from cfviz.evaluation.prompt_tokens import language_words

    cache = entry.cache(blocks=[])
    if tokens is None:  # the words scoring averages (a tokens="all" store lists them before every token)
        tokens = language_words(entry)
    try:
        return language_map(cache, tokens=tokens, steps=steps, min_resolution=1)[0].float().numpy()
    except KeyError as exc:
        raise CfvizError(f"store {side}: {exc.args[0]}") from None


def compare_store_maps(store_a: Any, store_b: Any, image_id: str, *, what: str = "language", tokens: Any = None,
                       steps: Sequence[int] | None = None, labels: tuple[str, str] | None = None,
                       **options: Any) -> Any:
    """The same image's map from two capture stores, side by side on one colour scale.

    Parameters
    ----------
    store_a, store_b:
        :class:`~cfviz.capture.store.CaptureStore` objects (e.g. ``result.store`` of two runs).
    image_id:
        The image, present in both stores.
    what:
        ``"language"`` (default): M_diff_L, the cross-attention of the language words averaged
        over layers and steps (or ``tokens`` / ``steps``); or the name of a stored 2-D array
        (``"clip/map/language"``, ``"winclip/map/zero_shot"``).
    labels:
        Names of the two sides (default: the stores' folder names).
    options:
        Passed to :func:`compare_maps` (image, mask, alpha, robust, difference, note, ...).
    """
    if labels is None:
        labels = (store_a.path.name, store_b.path.name)
        if labels[0] == labels[1]:
            labels = (f"{store_a.path.parent.name}/{labels[0]}", f"{store_b.path.parent.name}/{labels[1]}")
    a = _store_map(store_a, image_id, what, tokens, steps, "a")
    b = _store_map(store_b, image_id, what, tokens, steps, "b")
    options.setdefault("label", "cross-attention (M_diff_L)" if what == "language" else what)
    options.setdefault("title", image_id)
    return compare_maps(a, b, labels=tuple(labels), **options)
