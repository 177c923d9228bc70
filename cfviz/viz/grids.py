"""Grids of maps: timesteps x UNet blocks (or layers), and tokens.

:func:`timestep_block_grid` draws a ``(step, block|layer, h, w)``
:class:`~cfviz.capture.labelled.LabelledMaps` (batch and token already selected) with one row per
timestep, labelled with the timestep value, and one column per block or layer, labelled with a
short name (``up_blocks.1.attentions.0.transformer_blocks.0.attn2`` -> ``up1.attn0``). All panels
share one colour scale, with one colour bar, so rows and columns can be compared by colour.
:func:`word_timestep_grid` and :func:`word_block_grid` draw a capture's or store entry's words x
timesteps and words x blocks (DAAM / prompt-to-prompt style), also on one shared scale; a store
written with ``ExtractionConfig(tokens="all")`` has every prompt token, ``<start>`` to ``<end>``.

Example
-------
>>> import numpy as np
>>> data = np.random.default_rng(0).random((3, 2, 8, 8))
>>> fig = timestep_block_grid(data, timesteps=[100, 261, 400],
...                           blocks=["up_blocks.1", "up_blocks.2.attentions.1.transformer_blocks.0.attn2"])
>>> [ax.get_ylabel() for ax in fig.axes[0:6:2]], [ax.get_title() for ax in fig.axes[:2]]
(['t = 100', 't = 261', 't = 400'], ['up1', 'up2.attn1'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.capture.families import layer_kind_title, layer_labels
from cfviz.capture.naming import short_name, short_names  # noqa: F401  (imported from here too)
from cfviz.viz._common import (add_colorbar, as_mask, as_rgb, check_alpha, clean_image_axes, draw_mask_contour,
                               finite_range, resize_bilinear, to_numpy)
from cfviz.viz.style import SCORE_CMAP, finish_figure, new_figure, style_context

_COLUMN_DIMS = ("block", "layer")
def _names_key(short: Sequence[str], full: Sequence[str], note: str | None, limit: int = 160) -> str | None:
    """The caption with a key from the short column names to module paths (when they differ and
    the key is short: block names, not a row of full layer paths)."""
    key = [f"{s} = {f}" for s, f in zip(short, full) if s != f]
    if not key or sum(map(len, key)) > limit:
        return note
    return "Columns: " + ", ".join(key) + "." + (f" {note}" if note else "")


def timestep_label(value: Any, step: Any = None) -> str:
    """``t = 261`` for a timestep value, ``step 3`` when the timestep is unknown.

    >>> timestep_label(261.0), timestep_label([261.0, 400.0]), timestep_label(None, 2)
    ('t = 261', 't = 261/400', 'step 2')
    """
    def fmt(v: Any) -> str:
        f = float(v)
        return str(int(f)) if f.is_integer() else f"{f:g}"
    if value is None:
        return f"step {step}" if step is not None else "all steps"
    if isinstance(value, (list, tuple)):
        return "t = " + "/".join(fmt(v) for v in value)
    return f"t = {fmt(value)}"


def _labels(given: Sequence[Any] | None, n: int, what: str, default: Any) -> list[Any]:
    if given is None:
        return [default(i) for i in range(n)]
    given = list(given)
    if len(given) != n:
        raise ValueError(f"{what} has {len(given)} labels for {n} maps along that axis")
    return given


def _grid_array(maps: Any, shapes: str) -> np.ndarray:
    """``maps`` as a 4-d array (a 3-d one gets one row); ``shapes`` names the accepted shapes."""
    data = to_numpy(maps, "maps")
    data = data[None] if data.ndim == 3 else data
    if data.ndim != 4:
        raise ValueError(f"maps must be an array {shapes}, got an array of shape {data.shape}")
    return data


def _from_labelled(maps: Any, row_dims: Sequence[str], col_dims: Sequence[str],
                   allowed_desc: str) -> tuple[np.ndarray, list[str], str, Any]:
    """Split a LabelledMaps into data (R, C, h, w), the row dimension (none or one), the column
    dimension and the maps in that order."""
    dims = tuple(maps.dims)
    row = [d for d in dims if d in row_dims]
    col = [d for d in dims if d in col_dims]
    other = [d for d in dims if d not in (*row_dims, *col_dims, "h", "w")]
    if other or len(col) != 1 or len(row) > 1 or dims[-2:] != ("h", "w"):
        extra = "; select them first, e.g. maps.sel(token='damage').isel(batch=0)" if other else ""
        raise ValueError(f"maps has dimensions {dims}, but this grid needs {allowed_desc}{extra}")
    order = [*row, col[0], "h", "w"]
    if list(dims) != order:
        maps = maps.transpose(*order)
    data = maps.numpy()
    if not row:
        data = data[None]
    return data, row, col[0], maps


def _map_grid(data: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *,
              image: Any, mask: Any, alpha: float, cmap: Any, vmin: float | None, vmax: float | None,
              robust: bool, scale: str, label: str, title: str | None, row_title: str | None,
              col_title: str | None, note: str | None, panel_size: float) -> Any:
    """Draw ``data`` (R, C, h, w) as a grid of panels; return the Figure."""
    n_rows, n_cols = data.shape[:2]
    if n_rows == 0 or n_cols == 0 or min(data.shape[-2:]) == 0:
        raise ValueError(f"maps are empty (shape {data.shape}); nothing to draw")
    if scale not in ("shared", "column", "row"):
        raise ValueError(f"scale must be 'shared', 'column' or 'row', got {scale!r}")
    alpha = check_alpha(alpha)
    rgb = None if image is None else as_rgb(image, "image")
    shape = rgb.shape[:2] if rgb is not None else data.shape[-2:]
    gt = None if mask is None else as_mask(mask, shape)
    panels = [[resize_bilinear(data[r, c], shape) if rgb is not None else data[r, c]
               for c in range(n_cols)] for r in range(n_rows)]
    if np.isinf(data).any():
        raise ValueError("maps hold infinite values; clip or mask them before plotting")

    def limits(arrs: list[np.ndarray]) -> tuple[float, float]:
        lo, hi = finite_range(arrs, robust=robust)
        return (lo if vmin is None else float(vmin)), (hi if vmax is None else float(vmax))

    from matplotlib.colors import Normalize

    if scale == "shared":
        norms = [[Normalize(*limits([p for row in panels for p in row]))] * n_cols] * n_rows
    elif scale == "column":
        col_norms = [Normalize(*limits([panels[r][c] for r in range(n_rows)])) for c in range(n_cols)]
        norms = [col_norms] * n_rows
    else:
        norms = [[Normalize(*limits(panels[r]))] * n_cols for r in range(n_rows)]
    bar_w = 0.7 if scale != "column" else 0.0
    bar_h = 0.55 if scale == "column" else 0.0
    fig = new_figure(n_cols * panel_size + bar_w + 0.3,
                     n_rows * panel_size + bar_h + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cmap = cmap or SCORE_CMAP
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            if rgb is not None:
                ax.imshow(rgb)
            im = ax.imshow(panels[r][c], cmap=cmap, norm=norms[r][c], alpha=alpha if rgb is not None else 1.0,
                           interpolation="antialiased" if rgb is not None else "nearest")
            im.set_gid("cfviz-heatmap")
            if gt is not None:
                draw_mask_contour(ax, gt)
            clean_image_axes(ax)
            if r == 0:
                ax.set_title(str(col_labels[c]))
            if c == 0:
                ax.set_ylabel(str(row_labels[r]))
    if scale == "shared":
        add_colorbar(fig, norms[0][0], im.cmap, axes.ravel().tolist(), label,
                     shrink=min(0.9, 0.35 + 0.2 * n_rows), aspect=max(12, 8 * n_rows))
    elif scale == "column":
        for c in range(n_cols):
            add_colorbar(fig, norms[0][c], im.cmap, axes[:, c].tolist(), label, location="bottom",
                         shrink=0.9, aspect=12)
    else:
        for r in range(n_rows):
            add_colorbar(fig, norms[r][0], im.cmap, axes[r, :].tolist(), label, shrink=0.9, aspect=10)
    # rows and columns are named in the title, not with fig.supxlabel: constrained layout pins a
    # supxlabel to the figure's bottom edge, where the note goes
    if title is None:
        parts = [f"rows: {row_title}" if row_title else "", f"columns: {col_title}" if col_title else ""]
        title = f"{label} ({', '.join(p for p in parts if p)})" if any(parts) else None
        if title and len(title) * 9 * 0.6 / 72 > fig.get_size_inches()[0]:  # too wide: two lines
            title = title.replace(" (", "\n(", 1)
    return finish_figure(fig, title, note)


def timestep_block_grid(maps: Any, *, timesteps: Sequence[Any] | None = None,
                        blocks: Sequence[str] | None = None, image: Any = None, mask: Any = None,
                        alpha: float = 0.6, cmap: Any = None, vmin: float | None = None,
                        vmax: float | None = None, robust: bool = False, scale: str = "shared",
                        label: str = "attention", title: str | None = None, short_labels: bool = True,
                        note: str | None = None, panel_size: float = 1.0) -> Any:
    """Maps per timestep (rows) and UNet block or layer (columns), on one colour scale.

    Parameters
    ----------
    maps:
        A LabelledMaps with dimensions ``(step, block|layer, h, w)`` (in any order; select batch
        row and token first: ``cache.blocks_average(size=16).sel(token="damage").isel(batch=0)``),
        or ``(block|layer, h, w)`` for one row; or an array ``(steps, blocks, h, w)``.
    timesteps, blocks:
        Row and column labels for an array (default ``step i`` and ``#j``). For a LabelledMaps
        they override the stored labels (timesteps come from its ``timestep`` coordinate).
    image, mask:
        Optional image under every panel (maps are resized to it) and ground-truth contour.
    alpha, cmap, vmin, vmax:
        Overlay opacity (with an image), colour map and fixed limits.
    robust:
        Colour limits from the 1st and 99th percentiles instead of min and max (one extreme
        panel, such as a start-of-text token, then does not wash out the others).
    scale:
        ``"shared"`` (default: one colour bar), ``"column"`` or ``"row"`` (one bar per column/row).
    label:
        Colour-bar label (what the values are, e.g. "cross-attention to 'damage'").
    title, note:
        Figure title (default: ``label`` and what rows and columns are) and caption.
    short_labels:
        Name columns by short names such as ``up1`` / ``up1.attn0`` (:mod:`cfviz.capture.naming`);
        the caption then gives their module paths when that key is short (blocks).
    panel_size:
        Side of one panel in inches.
    """
    with style_context():
        col_title = "UNet block"
        if hasattr(maps, "dims") and hasattr(maps, "coords"):
            data, row, col, maps = _from_labelled(
                maps, ("step",), _COLUMN_DIMS,
                "('step', 'block' or 'layer', 'h', 'w') or ('block' or 'layer', 'h', 'w')")
            names = maps.coords.get(col, [])
            col_title = layer_kind_title(names, blocks=col == "block")  # per family: UNet block, joint attention
            if timesteps is None:
                if row:
                    steps = maps.coords.get("step", list(range(data.shape[0])))
                    ts = dict(maps.aux).get("timestep", (None, [None] * data.shape[0]))[1]
                    row_labels = [timestep_label(t, s) for t, s in zip(ts, steps)]
                else:
                    row_labels = [""]
            else:
                row_labels = [timestep_label(t) for t in _labels(timesteps, data.shape[0], "timesteps", None)]
            col_labels = list(blocks) if blocks is not None else maps.coords.get(col, list(range(data.shape[1])))
            col_labels = _labels(col_labels, data.shape[1], "blocks", None)
        else:
            data = _grid_array(maps, "(steps, blocks, h, w) or a LabelledMaps")
            row_labels = [timestep_label(t, i) for i, t in
                          enumerate(_labels(timesteps, data.shape[0], "timesteps", lambda i: None))]
            col_labels = _labels(blocks, data.shape[1], "blocks", lambda j: f"#{j}")
            if any("attn" in str(c) for c in col_labels):
                col_title = layer_kind_title(col_labels)
            elif any("transformer_blocks" in str(c) for c in col_labels):
                col_title = layer_kind_title(col_labels, blocks=True)
        if short_labels:  # one label per family's layer: up1.attn0, joint3, single5, cross3
            full, col_labels = [str(c) for c in col_labels], layer_labels(col_labels)
            note = _names_key(col_labels, full, note)
        return _map_grid(data, row_labels, col_labels, image=image, mask=mask, alpha=alpha, cmap=cmap,
                         vmin=vmin, vmax=vmax, robust=robust, scale=scale, label=label, title=title,
                         row_title="timestep" if any(row_labels) else None, col_title=col_title,
                         note=note, panel_size=panel_size)


def token_grid(maps: Any, *, tokens: Sequence[str] | None = None, rows: Sequence[Any] | None = None,
               image: Any = None, mask: Any = None, alpha: float = 0.6, cmap: Any = None,
               vmin: float | None = None, vmax: float | None = None, robust: bool = False,
               scale: str = "shared", label: str = "attention", title: str | None = None,
               note: str | None = None, panel_size: float = 1.1) -> Any:
    """Maps of several tokens side by side (columns), optionally per step/block/layer (rows).

    Parameters
    ----------
    maps:
        A LabelledMaps with dimensions ``(token, h, w)`` or ``(step|block|layer, token, h, w)``
        (batch selected), or an array ``(tokens, h, w)`` / ``(rows, tokens, h, w)``.
    tokens, rows:
        Column and row labels for arrays (or to override a LabelledMaps' labels).
    scale:
        ``"shared"`` (default), ``"column"`` (one colour bar per token: token maps can differ by
        orders of magnitude) or ``"row"``.

    Other parameters are as in :func:`timestep_block_grid`.

    Example
    -------
    >>> import numpy as np
    >>> fig = token_grid(np.random.default_rng(0).random((2, 8, 8)), tokens=["bottle", "damage"])
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['bottle', 'damage']
    """
    with style_context():
        row_title = None
        if hasattr(maps, "dims") and hasattr(maps, "coords"):
            data, row, _, maps = _from_labelled(
                maps, ("step", "block", "layer"), ("token",),
                "('token', 'h', 'w') or ('step'|'block'|'layer', 'token', 'h', 'w')")
            if rows is not None:
                row_labels = [str(r) for r in _labels(rows, data.shape[0], "rows", None)]
            elif row and row[0] == "step":
                steps = maps.coords.get("step", list(range(data.shape[0])))
                ts = dict(maps.aux).get("timestep", (None, [None] * data.shape[0]))[1]
                row_labels, row_title = [timestep_label(t, s) for t, s in zip(ts, steps)], "timestep"
            elif row:
                names = maps.coords.get(row[0], list(range(data.shape[0])))
                row_labels = layer_labels(names)
                row_title = layer_kind_title(names, blocks=row[0] == "block")
            else:
                row_labels = [""]
            col_labels = _labels(tokens if tokens is not None else maps.coords.get("token"),
                                 data.shape[1], "tokens", lambda j: f"#{j}")
        else:
            data = _grid_array(maps, "(tokens, h, w) or (rows, tokens, h, w)")
            col_labels = _labels(tokens, data.shape[1], "tokens", lambda j: f"#{j}")
            row_labels = [str(r) for r in _labels(rows, data.shape[0], "rows", lambda i: "" if data.shape[0] == 1
                                                  else f"#{i}")]
        col_labels = [str(t) for t in col_labels]
        return _map_grid(data, row_labels, col_labels, image=image, mask=mask, alpha=alpha, cmap=cmap,
                         vmin=vmin, vmax=vmax, robust=robust, scale=scale, label=label, title=title,
                         row_title=row_title, col_title="token", note=note, panel_size=panel_size)


# ---------------------------------------------------------------------------------- per-word grids
def _word_label(label: Any) -> str:
    """A token label as a row name: ``"#5:bottle</w>"`` -> ``"bottle (5)"``, ``"<start>"`` kept."""
    from cfviz.evaluation.prompt_tokens import display_label

    text = display_label(str(label))
    if text.startswith("#") and ":" in text:
        pos, word = text[1:].split(":", 1)
        return f"{word} ({pos})"
    return text


def _word_cache(source: Any) -> Any:
    """A CaptureCache from a cache or a store entry (only its attention is read)."""
    if hasattr(source, "attention_maps") and hasattr(source, "labels"):
        return source
    if hasattr(source, "cache") and hasattr(source, "image_id"):
        return source.cache(blocks=[])
    raise TypeError(f"pass a CaptureCache (cap.cache) or a store entry (store[image_id]), got {type(source).__name__}")


def _word_maps(source: Any, tokens: Any, size: Any, batch: int, by: str, steps: Any) -> Any:
    """``(token, step|block, h, w)`` maps (layers averaged), on the finest recorded grid by default."""
    cache = _word_cache(source)
    from cfviz.evaluation.prompt_tokens import START_LABEL

    labels = list(cache.labels)
    if tokens is None and START_LABEL in labels:  # every prompt token stored: show the prompt, not the
        tokens = labels[labels.index(START_LABEL):]  # language words stored again before it
    if size is None:  # the finest grid any layer has: coarse layers are upsampled, never the reverse
        size = max((cache.resolution(n) for n in cache.attention), key=lambda hw: hw[0] * hw[1])
    if by == "step":
        maps = cache.attention_maps(steps=steps, tokens=tokens, size=size)
        maps = maps.mean([d for d in ("layer", "head") if d in maps.dims])
    else:
        maps = cache.blocks_average(steps=steps, tokens=tokens, size=size).mean("step")
    if not 0 <= batch < maps.shape["batch"]:
        raise ValueError(f"batch is {batch} but the capture holds {maps.shape['batch']} rows")
    return maps.isel(batch=batch).transpose("token", by, "h", "w")


def _word_grid(maps: Any, col_labels: Sequence[str], col_title: str, *, image: Any, mask: Any, alpha: float,
               cmap: Any, vmin: float | None, vmax: float | None, robust: bool, label: str,
               title: str | None, note: str | None, panel_size: float) -> Any:
    rows = [_word_label(t) for t in maps.coords["token"]]
    fig = _map_grid(maps.numpy(), rows, col_labels, image=image, mask=mask, alpha=alpha, cmap=cmap, vmin=vmin,
                    vmax=vmax, robust=robust, scale="shared", label=label, title=title, row_title="word",
                    col_title=col_title, note=note, panel_size=panel_size)
    for ax in fig.axes:  # words read across, like the prompt (rotated labels of long words overlap)
        if ax.get_label() != "<colorbar>" and ax.get_ylabel():
            ax.set_ylabel(ax.get_ylabel(), rotation=0, ha="right", va="center")
    return fig


def word_timestep_grid(source: Any, *, tokens: Any = None, steps: Any = None, size: Any = None, batch: int = 0,
                       image: Any = None, mask: Any = None, alpha: float = 0.6, cmap: Any = None,
                       vmin: float | None = None, vmax: float | None = None, robust: bool = False,
                       label: str = "cross-attention", title: str | None = None, note: str | None = None,
                       panel_size: float = 0.9) -> Any:
    """Words x timesteps (DAAM / prompt-to-prompt style): each word's cross-attention per timestep.

    Rows are the recorded tokens (a store written with ``ExtractionConfig(tokens="all")`` has every
    prompt token, ``<start>`` to ``<end>``), columns the captured timesteps; layers are averaged
    (on the finest grid). Every panel shares one colour scale and one colour bar, so words and
    timesteps compare by colour; the start token usually takes most of the attention, so leave
    it out (``tokens=[...]``) or pass ``robust=True`` to see the words.

    Parameters
    ----------
    source:
        A :class:`~cfviz.capture.cache.CaptureCache` (``cap.cache``) or a store entry (``store[id]``).
    tokens, steps:
        Token labels (or positions) and step indices to show (default: all recorded).
    size, batch:
        Grid the layers are resampled to (default: the finest recorded) and the batch row.

    Other parameters are as in :func:`timestep_block_grid`.
    """
    with style_context():
        maps = _word_maps(source, tokens, size, batch, "step", steps)
        ts = dict(maps.aux).get("timestep", (None, [None] * maps.shape["step"]))[1]
        cols = [timestep_label(t, s) for t, s in zip(ts, maps.coords["step"])]
        return _word_grid(maps, cols, "timestep", image=image, mask=mask, alpha=alpha, cmap=cmap, vmin=vmin,
                          vmax=vmax, robust=robust, label=label, title=title, note=note, panel_size=panel_size)


def word_block_grid(source: Any, *, tokens: Any = None, steps: Any = None, size: Any = None, batch: int = 0,
                    image: Any = None, mask: Any = None, alpha: float = 0.6, cmap: Any = None,
                    vmin: float | None = None, vmax: float | None = None, robust: bool = False,
                    label: str = "cross-attention", title: str | None = None, note: str | None = None,
                    panel_size: float = 0.9) -> Any:
    """Words x UNet blocks: each word's cross-attention per block (layers of a block and steps averaged).

    Columns are named by short block names (``up1``); the caption keys them to module paths. One
    shared colour scale, as in :func:`word_timestep_grid` (whose parameters these are).
    """
    with style_context():
        maps = _word_maps(source, tokens, size, batch, "block", steps)
        from cfviz.capture.naming import unet_order

        order = unet_order([str(b) for b in maps.coords["block"]])  # down, mid, up: as data flows
        maps = maps.sel(block=order)
        full = [str(b) for b in maps.coords["block"]]
        short = layer_labels(full)
        note = _names_key(short, full, note)
        return _word_grid(maps, short, layer_kind_title(full, blocks=True), image=image, mask=mask, alpha=alpha, cmap=cmap, vmin=vmin,
                          vmax=vmax, robust=robust, label=label, title=title, note=note, panel_size=panel_size)
