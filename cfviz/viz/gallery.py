"""Galleries of images with their maps: failure cases and the paper-style qualitative grid.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> items = [{"image": rng.random((32, 32, 3)), "map": rng.random((8, 8)), "title": f"#{i}",
...           "subtitle": "score 0.9"} for i in range(3)]
>>> fig = gallery(items, ncols=2)
>>> [ax.get_title() for ax in fig.axes[:3]]
['#0', '#1', '#2']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cfviz.viz._common import (add_colorbar, as_map, as_mask, as_rgb, check_alpha, check_keys, clean_image_axes,
                               draw_mask_contour, finite_range, grid_shape, minmax, resize_bilinear, show_mask)
from cfviz.viz.style import PANEL_SIZE, SCORE_CMAP, finish_figure, new_figure, style_context

ITEM_KEYS = ("image", "map", "mask", "title", "subtitle")
IMAGE_COLUMNS = ("image",)
MASK_COLUMNS = ("ground truth", "mask", "gt")


def _draw(ax: Any, rgb: np.ndarray, heat: np.ndarray | None, gt: np.ndarray | None, norm: Any, cmap: Any,
          alpha: float, contour: bool) -> Any:
    ax.imshow(rgb)
    im = None
    if heat is not None:
        im = ax.imshow(heat, cmap=cmap, norm=norm, alpha=alpha, interpolation="antialiased")
        im.set_gid("cfviz-heatmap")
    if gt is not None and contour:
        draw_mask_contour(ax, gt)
    clean_image_axes(ax)
    return im


def gallery(items: Sequence[Mapping[str, Any]], *, ncols: int = 4, shared_scale: bool = True,
            alpha: float = 0.5, cmap: Any = None, label: str = "anomaly score", title: str | None = None,
            note: str | None = None, panel_size: float = PANEL_SIZE) -> Any:
    """A grid of images with their maps, e.g. the worst false positives and false negatives.

    Parameters
    ----------
    items:
        Dicts with ``image`` (required), ``map`` (2-D, resized to the image), ``mask``
        (ground truth, outlined in cyan), ``title`` and ``subtitle`` (e.g. the score and the
        label, written under the panel).
    ncols:
        Panels per row.
    shared_scale:
        One colour scale and bar for all maps (default: scores of one method are comparable, and
        that is what explains a false positive); otherwise a bar per panel.
    alpha, cmap, label, title, note, panel_size:
        Overlay opacity, colours, colour-bar label, figure title, caption, panel side (inches).
    """
    if isinstance(items, Mapping) or not isinstance(items, Sequence) or not items:
        raise ValueError("items must be a non-empty list of dicts with keys " + ", ".join(ITEM_KEYS))
    with style_context():
        alpha = check_alpha(alpha)
        prepared = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(f"items[{i}] must be a dict, got {type(item).__name__}")
            check_keys(item, ITEM_KEYS, f"items[{i}]")
            if item.get("image") is None:
                raise KeyError(f"items[{i}] has no 'image'")
            rgb = as_rgb(item["image"], f"items[{i}]['image']")
            heat = None if item.get("map") is None else resize_bilinear(
                as_map(item["map"], f"items[{i}]['map']"), rgb.shape[:2])
            gt = None if item.get("mask") is None else as_mask(item["mask"], rgb.shape[:2], f"items[{i}]['mask']")
            prepared.append((rgb, heat, gt, item.get("title"), item.get("subtitle")))
        n_rows, n_cols = grid_shape(len(prepared), ncols)
        heats = [h for _, h, _, _, _ in prepared if h is not None]
        one_bar = shared_scale and bool(heats)
        has_sub = any(s for *_, s in prepared)
        # room for the longest panel title (wrapped titles take several lines)
        title_lines = max((str(t).count("\n") + 1 for _, _, _, t, _ in prepared if t is not None), default=1)
        fig = new_figure(n_cols * panel_size + (0.7 if one_bar else 0.45 * n_cols * (not shared_scale)),
                         n_rows * (panel_size + 0.3 + 0.16 * (title_lines - 1) + (0.15 if has_sub else 0))
                         + (0.3 if title else 0))
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax in axes[len(prepared):]:
            fig.delaxes(ax)
        from matplotlib.colors import Normalize

        shared = Normalize(*finite_range(heats)) if one_bar else None
        cmap = cmap or SCORE_CMAP
        im = None
        for ax, (rgb, heat, gt, t, sub) in zip(axes, prepared):
            norm = shared if shared is not None else (Normalize(*finite_range(heat)) if heat is not None else None)
            drawn = _draw(ax, rgb, heat, gt, norm, cmap, alpha, contour=True)
            im = drawn or im
            if drawn is not None and not one_bar:
                add_colorbar(fig, norm, drawn.cmap, ax, label)
            if t is not None:
                ax.set_title(str(t))
            if sub:
                ax.set_xlabel(str(sub), fontsize="small")
        if one_bar and im is not None:
            add_colorbar(fig, shared, im.cmap, list(axes[:len(prepared)]), label,
                         shrink=min(0.9, 0.4 + 0.2 * n_rows), aspect=max(12, 8 * n_rows))
        return finish_figure(fig, title, note)


def _row_label(row: Mapping[str, Any], i: int, row_labels: Sequence[str] | None) -> str:
    return str(row_labels[i] if row_labels is not None else row.get("label", ""))


def qualitative_grid(rows: Sequence[Mapping[str, Any]], *,
                     columns: Sequence[str] = ("image", "ground truth", "M_clip", "M_diff", "fused"),
                     row_labels: Sequence[str] | None = None, scale: str = "per_map", alpha: float = 0.5,
                     cmap: Any = None, label: str = "anomaly score", contour: bool = False,
                     title: str | None = None, note: str | None = None, panel_size: float = 1.2) -> Any:
    """The paper-style grid: one image per row, one column per panel kind.

    Parameters
    ----------
    rows:
        One dict per image: ``image``, ``mask`` (for the "ground truth" column; the key
        ``"ground truth"`` works too), one 2-D map per map column, and optionally ``label``
        (row label, e.g. the defect type).
    columns:
        Column titles in order. ``"image"`` shows the image, ``"ground truth"`` the mask (white
        = anomalous); any other name is a map in each row, drawn over the image.
    row_labels:
        Override the rows' ``label``.
    scale:
        ``"per_map"`` (default): each map min-max scaled to [0, 1] on its own, one colour bar —
        maps of different methods have different units, and this is how papers show them;
        ``"column"``: one scale per column (a bar under each map column); ``"row"``: one scale
        per image; ``"all"``: one scale for everything.
    contour:
        Also outline the ground truth on the map panels.
    alpha, cmap, label, title, note, panel_size:
        As in :func:`gallery`.
    """
    scales = ("per_map", "column", "row", "all")
    if scale not in scales:
        raise ValueError(f"scale must be one of {scales}, got {scale!r}")
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty list of dicts (one per image)")
    columns = [str(c) for c in columns]
    if not columns:
        raise ValueError("columns is empty")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels has {len(row_labels)} entries for {len(rows)} rows")
    map_cols = [c for c in columns if c not in IMAGE_COLUMNS + MASK_COLUMNS]
    with style_context():
        alpha = check_alpha(alpha)
        grid: list[list[tuple[str, Any]]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
            if row.get("image") is None:
                raise KeyError(f"rows[{i}] has no 'image' (every row needs the image the maps are drawn on)")
            rgb = as_rgb(row["image"], f"rows[{i}]['image']")
            shape = rgb.shape[:2]
            mask_value = next((row[k] for k in MASK_COLUMNS if row.get(k) is not None), None)
            gt = None if mask_value is None else as_mask(mask_value, shape, f"rows[{i}]['mask']")
            cells: list[tuple[str, Any]] = []
            for c in columns:
                if c in IMAGE_COLUMNS:
                    cells.append(("image", rgb))
                elif c in MASK_COLUMNS:
                    if gt is None:
                        raise KeyError(f"rows[{i}] has no 'mask' for the {c!r} column; add it, or drop the "
                                       "column (normal images: pass an all-zero mask)")
                    cells.append(("mask", gt))
                else:
                    if row.get(c) is None:
                        raise KeyError(f"rows[{i}] has no map {c!r}; its keys are {sorted(row)}")
                    heat = resize_bilinear(as_map(row[c], f"rows[{i}][{c!r}]"), shape)
                    cells.append(("map", minmax(heat) if scale == "per_map" else heat))
            grid.append([(kind, (value, rgb, gt)) for kind, value in cells])

        from matplotlib.colors import Normalize

        def maps_where(pred: Any) -> list[np.ndarray]:
            return [v[0] for r, row in enumerate(grid) for c, (kind, v) in enumerate(row)
                    if kind == "map" and pred(r, c)]
        if scale == "per_map":
            norms = {(r, c): Normalize(0, 1) for r in range(len(grid)) for c in range(len(columns))}
        elif scale == "all":
            n = Normalize(*finite_range(maps_where(lambda r, c: True)))
            norms = {(r, c): n for r in range(len(grid)) for c in range(len(columns))}
        elif scale == "column":
            per = {c: Normalize(*finite_range(maps_where(lambda r, cc, c=c: cc == c))) for c in range(len(columns))}
            norms = {(r, c): per[c] for r in range(len(grid)) for c in range(len(columns))}
        else:
            per = {r: Normalize(*finite_range(maps_where(lambda rr, c, r=r: rr == r))) for r in range(len(grid))}
            norms = {(r, c): per[r] for r in range(len(grid)) for c in range(len(columns))}

        n_rows, n_cols = len(grid), len(columns)
        has_labels = any(_row_label(row, i, row_labels) for i, row in enumerate(rows))
        fig = new_figure(n_cols * panel_size + (0.7 if scale in ("per_map", "all", "row") else 0.2)
                         + (0.25 if has_labels else 0),
                         n_rows * panel_size + 0.35 + (0.55 if scale == "column" else 0) + (0.3 if title else 0))
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        cmap = cmap or SCORE_CMAP
        im = None
        for r, row in enumerate(grid):
            for c, (kind, (value, rgb, gt)) in enumerate(row):
                ax = axes[r, c]
                if kind == "image":
                    ax.imshow(value)
                    clean_image_axes(ax)
                elif kind == "mask":
                    show_mask(ax, value)
                else:
                    im = _draw(ax, rgb, value, gt, norms[(r, c)], cmap, alpha, contour) or im
                if r == 0:
                    ax.set_title(columns[c])
                if c == 0:
                    ax.set_ylabel(_row_label(rows[r], r, row_labels))
        if im is not None:
            map_idx = [c for c, name in enumerate(columns) if name in map_cols]
            if scale == "per_map":
                add_colorbar(fig, norms[(0, map_idx[0])], im.cmap, axes[:, map_idx].ravel().tolist(),
                             f"{label}\n(min-max per map)", shrink=min(0.9, 0.4 + 0.2 * n_rows))
            elif scale == "all":
                add_colorbar(fig, norms[(0, 0)], im.cmap, axes[:, map_idx].ravel().tolist(), label,
                             shrink=min(0.9, 0.4 + 0.2 * n_rows))
            elif scale == "column":
                for c in map_idx:
                    add_colorbar(fig, norms[(0, c)], im.cmap, axes[:, c].tolist(), label, location="bottom",
                                 shrink=0.9, aspect=12)
            else:
                for r in range(n_rows):
                    add_colorbar(fig, norms[(r, 0)], im.cmap, axes[r, map_idx].tolist(), label, shrink=0.9, aspect=10)
        return finish_figure(fig, title, note)
