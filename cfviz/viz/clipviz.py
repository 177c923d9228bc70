"""CLIP window and patch scores on the image.

Windows are boxes ``[row, col, height, width]`` in patch units on the ViT grid (15x15 for
``ViT-B-16-plus-240``; see :mod:`cfviz.clip.windows`). The grid is laid over the image as it is
shown, so patch ``(i, j)`` covers image rows ``[i * H / gh, (i + 1) * H / gh)`` — images are
resized to the CLIP input without cropping, so this mapping is exact.

Example
-------
>>> import numpy as np
>>> boxes = np.array([[0, 0, 1, 2], [0, 1, 1, 2]])
>>> window_scores_to_map(boxes, np.array([0.5, 0.25]), (1, 4), how="harmonic").round(4).tolist()
[[0.5, 0.3333, 0.25, nan]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cfviz.viz._common import (add_colorbar, as_map, as_mask, as_rgb, check_alpha, clean_image_axes,
                               draw_mask_contour, finish_heatmap_axes, finite_range, to_numpy)
from cfviz.viz.style import PANEL_SIZE, RANK_COLORS, SCORE_CMAP, finish_figure, new_figure, style_context

#: The ViT patch grid of the default CLIP backbone (240 px / 16 px patches).
DEFAULT_GRID = 15
HOWS = ("mean", "harmonic", "max")


def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        gh = gw = int(grid)
    elif isinstance(grid, (tuple, list)) and len(grid) == 2:
        gh, gw = int(grid[0]), int(grid[1])
    else:
        raise ValueError(f"grid must be an int or a (rows, cols) pair of patches, got {grid!r}")
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive, got {grid!r}")
    return gh, gw


def windows_and_scores(boxes: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` int and scores ``(..., n)`` float; dicts by scale are concatenated.

    Dicts (``ClipScores.window_boxes`` and ``ClipScores.windows``) must have the same scales.
    """
    if isinstance(boxes, Mapping) or isinstance(scores, Mapping):
        if not (isinstance(boxes, Mapping) and isinstance(scores, Mapping)):
            raise TypeError("boxes and scores must both be dicts by scale, or both arrays")
        if set(boxes) != set(scores):
            raise KeyError(f"boxes have scales {sorted(boxes)} but scores have scales {sorted(scores)}")
        keys = sorted(boxes)
        if not keys:
            raise ValueError("no window scales given (empty dicts)")
        pairs = [windows_and_scores(boxes[k], scores[k]) for k in keys]
        return np.concatenate([b for b, _ in pairs]), np.concatenate([s for _, s in pairs], axis=-1)
    b = to_numpy(boxes, "boxes")
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
        raise ValueError(f"boxes must be a non-empty (n, 4) array of [row, col, height, width] in patches, "
                         f"got shape {b.shape}")
    if not np.all(b == np.round(b)):
        raise ValueError("boxes must hold whole patch numbers")
    s = to_numpy(scores, "scores")
    if s.ndim not in (1, 2) or s.shape[-1] != b.shape[0]:
        raise ValueError(f"scores must be (n_windows,) or (batch, n_windows) with n_windows = {b.shape[0]} "
                         f"(one per box), got shape {s.shape}")
    return b.astype(np.int64), s


def _incidence(boxes: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Boolean ``(n, gh * gw)``: which patches each window covers."""
    r, c, h, w = boxes.T
    if (r < 0).any() or (c < 0).any() or (h < 1).any() or (w < 1).any() or (r + h > gh).any() \
            or (c + w > gw).any():
        raise ValueError(f"boxes must lie inside the {gh}x{gw} patch grid with positive sizes; check grid=")
    rows, cols = np.arange(gh), np.arange(gw)
    in_r = (rows >= r[:, None]) & (rows < (r + h)[:, None])
    in_c = (cols >= c[:, None]) & (cols < (c + w)[:, None])
    return (in_r[:, :, None] & in_c[:, None, :]).reshape(len(boxes), gh * gw)


def window_scores_to_map(boxes: Any, scores: Any, grid: int | Sequence[int] = DEFAULT_GRID,
                         how: str = "mean", *, fill: float = np.nan) -> np.ndarray:
    """Per patch, aggregate the scores of the windows covering it (vectorised).

    Parameters
    ----------
    boxes:
        ``(n, 4)`` ``[row, col, height, width]`` in patches, or a dict ``scale -> boxes``.
    scores:
        ``(n,)`` or ``(batch, n)``, or a dict ``scale -> scores`` matching ``boxes``.
    grid:
        Patch grid ``(rows, cols)`` or one side (default 15).
    how:
        ``"mean"``, ``"harmonic"`` (WinCLIP's aggregation; scores must be >= 0, and a zero score
        makes the patch 0) or ``"max"``.
    fill:
        Value of patches no window covers (default NaN: drawn transparent, not as a low score).

    Returns
    -------
    ``(gh, gw)`` (or ``(batch, gh, gw)``) float array.
    """
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, got {how!r}")
    b, s = windows_and_scores(boxes, scores)
    gh, gw = _grid(grid)
    inc = _incidence(b, gh, gw)
    s2 = np.atleast_2d(s)
    count = inc.sum(axis=0)
    covered = count > 0
    # a NaN score makes the patches its window covers NaN, and only those (NaN * 0 would spread
    # it through the matrix product to every patch)
    nan = np.isnan(s2)
    touched_by_nan = (nan.astype(float) @ inc) > 0
    s2 = np.where(nan, 0.0, s2)
    if how == "mean":
        out = (s2 @ inc) / np.maximum(count, 1)
    elif how == "harmonic":
        if (s2 < 0).any():
            raise ValueError("harmonic aggregation needs non-negative scores; use how='mean' or 'max'")
        zero = (s2 == 0) & ~nan
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(zero | nan, 0.0, 1.0 / np.where(zero | nan, 1.0, s2))
            out = count / (inv @ inc)
        out = np.where((zero.astype(float) @ inc) > 0, 0.0, out)  # a zero score: harmonic mean 0
    else:
        # max over covering windows; -inf marks "not covering"
        out = np.where(inc[None], s2[:, :, None], -np.inf).max(axis=1)
    out = np.where(touched_by_nan, np.nan, out)
    out = np.where(covered, out, fill)
    out = out.reshape(-1, gh, gw)
    return out[0] if s.ndim == 1 else out


def plot_window_scores(ax: Any, image: Any, boxes: Any, scores: Any, *, top_k: int = 5,
                       grid: int | Sequence[int] = DEFAULT_GRID, how: str = "mean", show_map: bool = True,
                       alpha: float = 0.45, cmap: Any = None, vmin: float | None = None,
                       vmax: float | None = None, colorbar: bool = True, label: str = "window score",
                       mask: Any = None, title: str | None = None, legend: bool = True) -> list[Any]:
    """Draw window scores on ``image`` and outline the ``top_k`` highest windows; return the rectangles.

    Parameters
    ----------
    ax, image:
        Axes and the image the windows were computed on (any size: the patch grid is stretched
        over it).
    boxes, scores:
        One image's windows: ``(n, 4)`` boxes and ``(n,)`` scores, or dicts by scale.
    top_k:
        How many of the highest-scoring windows to outline (ranked colours; a legend lists each
        rank's score and window size). 0 draws none.
    grid:
        Patch grid of the boxes.
    how, show_map:
        With ``show_map`` the windows are first aggregated per patch (:func:`window_scores_to_map`,
        ``how``) and shown as a heat map under the rectangles.
    alpha, cmap, vmin, vmax, colorbar, label:
        Heat-map opacity, colours, limits and colour bar.
    mask, title, legend:
        Ground-truth contour, axes title and the legend of the top windows (below the image).
    """
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    with style_context():
        b, s = windows_and_scores(boxes, scores)
        if s.ndim != 1:
            raise ValueError(f"scores must be one image's (n_windows,), got shape {s.shape}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative int, got {top_k!r}")
        g = _grid(grid)
        _incidence(b, *g)  # validates the boxes against the grid
        rgb = as_rgb(image, "image")
        shape = rgb.shape[:2]
        ph, pw = shape[0] / g[0], shape[1] / g[1]  # one patch, in pixels
        ax.imshow(rgb)
        if show_map:
            heat = window_scores_to_map(b, s, g, how=how)
            lo, hi = finite_range(heat)
            im = ax.imshow(heat, cmap=cmap or SCORE_CMAP, alpha=check_alpha(alpha), interpolation="nearest",
                           vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax,
                           extent=(-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5))
            im.set_gid("cfviz-heatmap")
            if colorbar:
                add_colorbar(ax.figure, im.norm, im.cmap, ax, f"{label}\n({how} per patch)")
        if mask is not None:
            draw_mask_contour(ax, as_mask(mask, shape))
        finite = np.flatnonzero(np.isfinite(s))
        order = finite[np.argsort(-s[finite], kind="stable")][:top_k]
        rects = []
        for rank, i in enumerate(order):
            r, c, h, w = (int(v) for v in b[i])
            lw = 2.0 if rank == 0 else 1.2
            rect = Rectangle((c * pw - 0.5, r * ph - 0.5), w * pw, h * ph, fill=False,
                             edgecolor=RANK_COLORS[rank % len(RANK_COLORS)], linewidth=lw,
                             label=f"#{rank + 1}: {s[i]:.3g} ({h}x{w} at r{r}, c{c})", gid="cfviz-top-window",
                             zorder=3 + (top_k - rank))  # the best window on top
            # a thin black edge keeps every colour visible on bright and dark map areas alike
            rect.set_path_effects([patheffects.withStroke(linewidth=lw + 1.2, foreground="black"),
                                   patheffects.Normal()])
            ax.add_patch(rect)
            rects.append(rect)
        ax.set_xlim(-0.5, shape[1] - 0.5)
        ax.set_ylim(shape[0] - 0.5, -0.5)
        clean_image_axes(ax)
        if title is not None:
            ax.set_title(title)
        if legend and rects:
            ax.legend(handles=rects, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=1,
                      fontsize="x-small", handlelength=1.0, borderaxespad=0.2,
                      title=f"top {len(rects)} windows (patches)", title_fontsize="x-small")
        return rects


def plot_patch_scores(ax: Any, image: Any, patch: Any, *, alpha: float = 0.5, cmap: Any = None,
                      vmin: float | None = None, vmax: float | None = None, colorbar: bool = True,
                      label: str = "patch score", mask: Any = None, title: str | None = None,
                      smooth: bool = False) -> Any:
    """Draw patch scores ``(gh, gw)`` over ``image``, one block per patch; return the AxesImage.

    ``smooth=True`` resizes bilinearly instead (how the scores become a pixel map); the default
    shows the grid the scores really live on.
    """
    with style_context():
        heat = as_map(patch, "patch")
        rgb = as_rgb(image, "image")
        shape = rgb.shape[:2]
        ax.imshow(rgb)
        lo, hi = finite_range(heat)
        if smooth:
            from cfviz.viz._common import resize_bilinear

            heat, extent, interp = resize_bilinear(heat, shape), None, "antialiased"
        else:
            extent, interp = (-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5), "nearest"
        im = ax.imshow(heat, cmap=cmap or SCORE_CMAP, alpha=check_alpha(alpha), interpolation=interp,
                       vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax, extent=extent)
        ax.set_xlim(-0.5, shape[1] - 0.5)
        ax.set_ylim(shape[0] - 0.5, -0.5)
        return finish_heatmap_axes(ax, im, mask=mask, shape=shape, title=title, colorbar=colorbar, label=label)


def clip_scores_figure(image: Any, scores: Any, *, mask: Any = None, top_k: int = 5, how: str = "harmonic",
                       grid: int | Sequence[int] | None = None, title: str | None = None,
                       note: str | None = None, panel_size: float = PANEL_SIZE) -> Any:
    """One image's CLIP scores: image | patch scores | window scores for each scale (top windows).

    ``scores`` is a :class:`~cfviz.capture.store.ClipScores` (e.g. ``store[image_id].clip()``)
    or anything with its attributes (``image``, ``patch``, ``windows``, ``window_boxes``).

    Example
    -------
    >>> import numpy as np
    >>> from cfviz.capture.store import ClipScores
    >>> rng = np.random.default_rng(0)
    >>> boxes = np.array([[r, c, 2, 2] for r in range(14) for c in range(14)])
    >>> s = ClipScores(image=0.7, patch=rng.random((15, 15)), windows={2: rng.random(196)},
    ...                window_boxes={2: boxes})
    >>> fig = clip_scores_figure(np.zeros((64, 64, 3), np.uint8), s, top_k=3)
    >>> [ax.get_title() for ax in fig.axes[:3]]
    ['image (image score 0.7)', 'patch scores', 'windows 2x2 (harmonic)']
    """
    with style_context():
        windows = dict(getattr(scores, "windows", {}) or {})
        boxes = dict(getattr(scores, "window_boxes", {}) or {})
        if set(windows) != set(boxes):
            raise KeyError(f"scores.windows has scales {sorted(windows)} but scores.window_boxes has {sorted(boxes)}")
        patch = getattr(scores, "patch", None)
        if grid is None:
            grid = tuple(as_map(patch, "scores.patch").shape) if patch is not None else DEFAULT_GRID
        n = 1 + (patch is not None) + len(windows)
        legend_h = 0.12 * (top_k + 1) + 0.05 if windows and top_k else 0
        fig = new_figure(n * (panel_size + 0.45), panel_size + 0.3 + legend_h + (0.25 if title else 0))
        axes = fig.subplots(1, n, squeeze=False)[0]
        rgb = as_rgb(image, "image")
        axes[0].imshow(rgb)
        if mask is not None:
            draw_mask_contour(axes[0], as_mask(mask, rgb.shape[:2]))
        clean_image_axes(axes[0])
        image_score = getattr(scores, "image", None)
        axes[0].set_title("image" if image_score is None
                          else f"image (image score {float(to_numpy(image_score, 'scores.image').ravel()[0]):.3g})")
        k = 1
        if patch is not None:
            plot_patch_scores(axes[1], rgb, patch, mask=mask, title="patch scores")
            k = 2
        for ax, scale in zip(axes[k:], sorted(windows)):
            plot_window_scores(ax, rgb, boxes[scale], windows[scale], top_k=top_k, grid=grid, how=how,
                               mask=mask, title=f"windows {scale}x{scale} ({how})")
        return finish_figure(fig, title, note)
