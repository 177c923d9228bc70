"""Exports of the attention explorer (:mod:`cfviz.viz.explorer`) that keep the context of the screen.

:func:`screen_figure` builds one matplotlib figure from the very panels the browser shows (the same
JPEG bytes, drawn without resampling) and adds what makes them readable on paper: each panel's
colour bar in its on-screen limits (the fused map's with the threshold marked, in the map's units),
the window-rank and TP/FP/FN legends, both score histograms, the header and metrics line and, below,
the settings line and the random-weights note. :func:`export_all` writes that figure for every image
of the menu into a folder with an ``index.html`` that opens in any browser (no Jupyter).

Example
-------
>>> from cfviz.viz.explorer_export import screen_figure, export_all    # doctest: +SKIP
>>> screen_figure(explorer).savefig("view.png")                        # doctest: +SKIP
>>> export_all(explorer, "figures/explorer_export")                    # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pixels(panel: Any) -> np.ndarray | None:
    from PIL import Image

    if not panel.image.value:
        return None
    return np.asarray(Image.open(io.BytesIO(bytes(panel.image.value))).convert("RGB"))


def _panel(fig: Any, slot: Any, panel: Any) -> Any:
    from cfviz.viz.explorer_widgets import _plain_text

    ax = fig.add_subplot(slot)
    ax.set_axis_off()
    pixels = _pixels(panel)
    if pixels is not None:
        ax.imshow(pixels, interpolation="none")
    ax.set_title(_plain_text(panel.title.value), fontsize=6.5)
    return ax


def _colorbar(fig: Any, ax: Any, lo: float, hi: float, label: str, marks: Sequence[tuple[float, str]] = ()) -> Any:
    """A colour bar right of ``ax`` (an inset: the panels keep their size) spanning ``lo..hi``; ``marks``:
    ``(value, text)`` lines across it, in its units."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FormatStrFormatter

    from cfviz.viz.style import SCORE_CMAP

    cax = ax.inset_axes([1.04, 0.0, 0.06, 1.0])
    cb = fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap=SCORE_CMAP), cax=cax)
    cb.set_label(label, fontsize=6, labelpad=1)
    cb.ax.tick_params(labelsize=5.5, length=2, pad=1)
    cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # 0.0145, not a second "0.014"
    for value, text in marks:  # a line across the bar and a pointer on its left; the text goes in the label
        y = min(max(value, lo), hi)
        cb.ax.axhline(y, color="white", lw=2.4)
        cb.ax.axhline(y, color="black", lw=1.0)
        cb.ax.plot([-0.25], [y], marker=">", color="black", markersize=3.5, clip_on=False,
                   transform=cb.ax.get_yaxis_transform())
        cb.set_label(f"{label} (\u25b6 {text})", fontsize=6, labelpad=1)
    return cb


def _legend(fig: Any, slot: Any, title: str, handles: list[Any]) -> Any:
    ax = fig.add_subplot(slot)
    ax.set_axis_off()
    if handles:
        ax.legend(handles=handles, title=title, loc="upper left", fontsize=5.5, title_fontsize=6, frameon=False,
                  alignment="left")
    return ax


def screen_figure(explorer: Any) -> Any:
    """The explorer's current view as a matplotlib Figure (see the module docstring)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from cfviz.viz import explore_data as ed
    from cfviz.viz.explorer_widgets import OUTCOME_COLORS, PREDICTED_COLOR, TOP_K, _plain_text, threshold_mark
    from cfviz.viz.score_hist import plot_histogram
    from cfviz.viz.style import MASK_COLOR, RANK_COLORS, add_note, new_figure

    e = explorer
    p, _ = e.current
    d = e.data
    st = e.state
    hists = e.histogram_data(p)
    fig = new_figure(7.16, 8.6 if hists else 6.8)
    fig.set_layout_engine("none")  # a fixed grid: panels keep the screen's proportions, bars are insets
    rows = [1.65, 1.0, 1.0] + ([1.0] if hists else [])  # top panels narrower than their 2 columns: room for bars
    grid = fig.add_gridspec(len(rows), 6, height_ratios=rows, width_ratios=[1, 1, 1, 1, 0.8, 0.8], left=0.07,
                            right=0.99, top=0.89, bottom=0.1 if hists else 0.12, wspace=0.45, hspace=0.42)
    # row 1: cross-attention and CLIP windows, each with its colour bar; the window ranks beside them
    ax = _panel(fig, grid[0, 0:2], e.attention_panel)
    ax.set_anchor("W")  # the room the square panel leaves goes to its colour bar, not between panels
    if "attention" in e._bars:
        _colorbar(fig, ax, *e._bars["attention"], "cross-attention")
    ax = _panel(fig, grid[0, 2:4], e.clip_panel)
    ax.set_anchor("W")
    handles: list[Any] = []
    if "clip" in e._bars:
        _colorbar(fig, ax, *e._bars["clip"], "window score")
        s = st["clip_scale"]
        for t in ed.top_windows(d, s, TOP_K) if s in ed.window_scales(d) else []:
            color = RANK_COLORS[(t["rank"] - 1) % len(RANK_COLORS)]
            handles.append(Patch(facecolor="0.6" if color.upper() == "#FFFFFF" else "none", edgecolor=color, lw=1.5,
                                 label=f"#{t['rank']}: {t['score']:.3g} (row {t['box'][0]}, col {t['box'][1]})"))
    if st["show_mask"] and d.mask is not None and np.asarray(d.mask).any():
        handles.append(Line2D([], [], color=MASK_COLOR, lw=1.5, label="ground truth"))
    _legend(fig, grid[0, 4:6], f"top windows ({st['clip_scale']}x{st['clip_scale']} patches)", handles)
    # row 2: image, ground truth, fused map (threshold on its bar), predicted mask with its legend
    _panel(fig, grid[1, 0], e.image_panel)
    _panel(fig, grid[1, 1], e.gt_panel)
    ax = _panel(fig, grid[1, 2], e.fused_panel)
    if "fused" in e._bars:
        lo, hi = e._bars["fused"]
        pos, text = threshold_mark(st["threshold"], lo, hi)
        _colorbar(fig, ax, lo, hi, "map value", [(lo + pos * (hi - lo), f"{st['threshold']:.3g}")])
    _panel(fig, grid[1, 3], e.pred_panel)
    if st["show_mask"] and d.mask is not None:
        outcome = [Patch(color=c, label=f"{n} ({w})") for (n, c), w in
                   zip(OUTCOME_COLORS.items(), ("defect found", "false alarm", "defect missed"))]
    else:
        outcome = [Patch(color=PREDICTED_COLOR, label="predicted anomalous")]
    _legend(fig, grid[1, 4:6], f"predicted mask (map >= {st['threshold']:.3g})", outcome)
    # row 3: the four branch maps on one bar (min-max per map)
    axes = [_panel(fig, grid[2, k], panel) for k, panel in enumerate(e.branch_panels.values())]
    _colorbar(fig, axes[-1], 0.0, 1.0, "min-max per map")
    # row 4: the score histograms, thresholds marked
    for k, h in enumerate(hists):
        ax = fig.add_subplot(grid[3, 0:2] if k == 0 else grid[3, 3:6])
        plot_histogram(ax, *h["counts"], h["thresholds"], title=h["title"], xlabel=h["xlabel"])
        ax.tick_params(labelsize=5.5)
        ax.title.set_fontsize(6.5)
        ax.xaxis.label.set_fontsize(6)
        ax.yaxis.label.set_fontsize(6)
    metrics = textwrap.fill(_plain_text(e.metrics.value), width=115)  # the figure's width at 7 pt
    fig.suptitle(_plain_text(e.header.value) + "\n" + metrics, fontsize=7)
    line = _plain_text(e.on_screen.value)
    add_note(fig, line + (f" {e.note}" if e.note and e.note not in line else ""), fontsize=5.5)
    return fig


def _file_name(image_id: str) -> str:
    """A file name for an image id (path separators and odd characters become ``_``).

    >>> _file_name("brick/test/crack/000.png")
    'brick_test_crack_000'
    """
    stem = re.sub(r"\.(png|jpe?g|bmp|tiff?)$", "", image_id, flags=re.I)
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", stem).strip("_") or "image"


def export_all(explorer: Any, out_dir: Any, *, show: str | None = None, dpi: float = 110) -> Path:
    """Write :func:`screen_figure` of every image of the menu (or of ``show``) as PNG into ``out_dir``,
    with an ``index.html`` (thumbnails, outcome, score, the settings and the note); return its path."""
    from cfviz.viz import explore_data as ed

    e = explorer
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    choices = (ed.browse_choices(e.predictions, sort=e.sort.value, show=show) if show is not None
               else [(label, v) for label, v in e.image.options if v is not None])
    keep = e.image.value
    rows = []
    try:
        for label, value in choices:
            if value not in [v for _, v in e.image.options]:
                e.show.value = "all"
            e.image.value = value
            image_id = e.state["image_id"]
            name = f"{len(rows):03d}_{_file_name(image_id)}.png"
            (out / name).write_bytes(ed.figure_png(screen_figure(e), dpi=dpi))
            rows.append((name, label))
        settings = html.escape(re.sub(r"<[^>]+>", "", e.on_screen.value))
    finally:
        if keep is not None and keep in [v for _, v in e.image.options]:
            e.image.value = keep
    note = f"<p><i>{html.escape(e.note)}</i></p>" if e.note and html.escape(e.note) not in settings else ""
    items = "\n".join(f'<figure><a href="{html.escape(n)}"><img src="{html.escape(n)}" loading="lazy"></a>'
                      f"<figcaption>{html.escape(label)}</figcaption></figure>" for n, label in rows)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cfviz explorer export</title>
<style>body{{font:14px sans-serif;margin:16px}} figure{{display:inline-block;width:460px;margin:6px;vertical-align:top}}
img{{width:100%;border:1px solid #ccc}} figcaption{{font-size:12px}}</style></head>
<body><h1>cfviz explorer export: {len(rows)} images</h1>
<p>{settings}</p>{note}
<p>Each PNG is the explorer's view of one image with its colour bars, legends, histograms and metrics; click for
full size.</p>
{items}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
