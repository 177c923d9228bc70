"""Heat maps over images: one panel (:func:`overlay`) and a row of maps for one image (:func:`maps_row`).

A map of any resolution (a 15x15 CLIP patch grid, a 64x64 attention map) is resized bilinearly
to the image, drawn over it with some transparency, and the ground truth is outlined in cyan.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
>>> mask = np.zeros((64, 64), bool); mask[20:30, 20:40] = True
>>> fig = maps_row(image, {"M_clip": rng.random((15, 15)), "fused": rng.random((8, 8))}, mask=mask)
>>> [ax.get_title() for ax in fig.axes[:4]]
['image', 'ground truth', 'M_clip', 'fused']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


from cfviz.viz._common import (add_colorbar, as_map, as_mask, as_rgb, check_alpha, clean_image_axes,
                               finish_heatmap_axes, finite_range, minmax, resize_bilinear, show_mask)
from cfviz.viz.style import (DIVERGING_CMAP, PANEL_SIZE, SCORE_CMAP, finish_figure, new_figure, style_context,
                             symmetric_limits)

SCORE_LABEL = "anomaly score"


def overlay(ax: Any, image: Any, heatmap: Any, *, alpha: float = 0.5, cmap: Any = None,
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True,
            mask: Any = None, title: str | None = None, label: str = SCORE_LABEL,
            diverging: bool = False) -> Any:
    """Draw ``heatmap`` over ``image`` on ``ax``; return the heat-map ``AxesImage``.

    Parameters
    ----------
    ax:
        A matplotlib Axes.
    image:
        RGB or grey image (``uint8`` or floats in [0, 1]; ``(H, W[, C])`` or ``(C, H, W)``), or
        None to show the map alone (opaque, at its own resolution).
    heatmap:
        2-D map (array, tensor or LabelledMaps with only ``h, w`` left); resized bilinearly to
        the image.
    alpha:
        Opacity of the heat map over the image.
    cmap, vmin, vmax:
        Colour map (default :data:`~cfviz.viz.style.SCORE_CMAP`) and limits (default: the
        map's finite range).
    colorbar:
        Add a colour bar labelled ``label`` next to ``ax``.
    mask:
        Ground-truth mask, outlined (any size; resized by nearest neighbour).
    title:
        Axes title.
    diverging:
        A signed map (e.g. a difference of two maps): use the diverging colour map with limits
        symmetric around 0.
    """
    with style_context():
        alpha = check_alpha(alpha)
        heat = as_map(heatmap, "heatmap")
        if image is not None:
            rgb = as_rgb(image, "image")
            shape = rgb.shape[:2]
            heat = resize_bilinear(heat, shape)
            ax.imshow(rgb, interpolation="antialiased")
        else:
            shape, alpha = heat.shape, 1.0
        if diverging:
            cmap = cmap or DIVERGING_CMAP
            if vmin is None and vmax is None:
                vmin, vmax = symmetric_limits(heat)
        lo, hi = finite_range(heat)
        vmin = lo if vmin is None else float(vmin)
        vmax = hi if vmax is None else float(vmax)
        if vmax <= vmin:
            raise ValueError(f"vmax ({vmax}) must be larger than vmin ({vmin})")
        im = ax.imshow(heat, cmap=cmap or SCORE_CMAP, vmin=vmin, vmax=vmax, alpha=alpha,
                       interpolation="nearest" if image is None else "antialiased")
        return finish_heatmap_axes(ax, im, mask=mask, shape=shape, title=title, colorbar=colorbar, label=label)


def _titles(names: Sequence[str], titles: Any) -> list[str]:
    if titles is None:
        return list(names)
    if isinstance(titles, Mapping):
        unknown = sorted(set(titles) - set(names) - {"image", "ground truth"})
        if unknown:
            raise KeyError(f"titles names maps {unknown} that are not in maps {list(names)}")
        return [str(titles.get(n, n)) for n in names]
    titles = list(titles)
    if len(titles) != len(names):
        raise ValueError(f"titles has {len(titles)} entries for {len(names)} maps; give one per map "
                         "or a dict {map name: title}")
    return [str(t) for t in titles]


def maps_row(image: Any, maps: Mapping[str, Any], *, mask: Any = None, titles: Any = None,
             shared_scale: bool = False, normalize: bool = False, alpha: float = 0.5, cmap: Any = None,
             label: str = SCORE_LABEL, contour: bool = True, title: str | None = None,
             note: str | None = None, panel_size: float = PANEL_SIZE) -> Any:
    """One image and its maps side by side: image | ground truth | one panel per map.

    Used for "image, ground truth, M_clip, M_diff, fused".

    Parameters
    ----------
    image:
        The image (see :func:`overlay`).
    maps:
        ``{name: 2-D map}`` in display order; each map is resized to the image.
    mask:
        Ground-truth mask: adds a "ground truth" panel (white = anomalous) and, with ``contour``,
        outlines it on every map.
    titles:
        Panel titles for the maps: a list (one per map) or a dict (default: the map names).
    shared_scale:
        One colour scale for all maps (one colour bar); otherwise each map has its own bar.
    normalize:
        Min-max scale each map to [0, 1] first (one colour bar labelled "normalised ...").
        Use it for maps whose units differ; the bar then shows ranks, not raw values.
    alpha, cmap, label:
        Overlay opacity, colour map and colour-bar label.
    title:
        Figure title (e.g. the image id).
    note:
        A caption under the figure (e.g. :data:`~cfviz.viz.style.OFFLINE_NOTE`).
    panel_size:
        Side of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("maps must be a non-empty dict {name: 2-D map}")
    with style_context():
        rgb = as_rgb(image, "image")
        shape = rgb.shape[:2]
        heats = {str(k): resize_bilinear(as_map(v, f"maps[{k!r}]"), shape) for k, v in maps.items()}
        gt = None if mask is None else as_mask(mask, shape)
        names = list(heats)
        map_titles = _titles(names, titles)
        if normalize:
            heats = {k: minmax(v) for k, v in heats.items()}
            label = f"{label}\n(min-max per map)"
        one_bar = shared_scale or normalize
        n = 1 + (gt is not None) + len(names)
        width = n * panel_size + (0.6 if one_bar else 0.45 * len(names))
        fig = new_figure(width, panel_size + 0.45 + (0.25 if title else 0))
        axes = fig.subplots(1, n, squeeze=False)[0]
        axes[0].imshow(rgb)
        clean_image_axes(axes[0])
        axes[0].set_title("image")
        k = 1
        if gt is not None:
            show_mask(axes[1], gt)
            axes[1].set_title("ground truth")
            k = 2
        limits = finite_range(list(heats.values())) if one_bar else None
        if normalize:
            limits = (0.0, 1.0)
        im = None
        for ax, name, t in zip(axes[k:], names, map_titles):
            vmin, vmax = limits if limits else (None, None)
            im = overlay(ax, rgb, heats[name], alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax,
                         colorbar=not one_bar, mask=gt if contour else None, title=t, label=label)
        if one_bar and im is not None:
            add_colorbar(fig, im.norm, im.cmap, list(axes[k:]), label, shrink=0.85, aspect=15)
        return finish_figure(fig, title, note)
