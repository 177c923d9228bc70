"""An ipywidgets explorer over a capture store: a thin shell over :mod:`cfviz.viz.explore_data`.

Controls: a failure browser (which images, in which order), the image, timestep, layer, token,
overlay opacity, ground-truth toggle, CLIP window scale and the fusion weight alpha; each has a
one-line help. Views: cross-attention beside CLIP window scores (top windows outlined, ranked in a
legend); the image, its ground truth, the fused map at alpha and the predicted mask at the pixel
F1-max threshold (TP, FP, FN pixels coloured, as anomalib shows it); the four branch maps; the
image's metrics (shown once) and a line saying what is on screen (method, k, seed, alpha,
normalisation).

Views are drawn from arrays (:mod:`cfviz.viz.render`: colour table + blend + JPEG, a few ms per
panel), not by matplotlib, so a new view appears at once; titles, colour bars and legends are HTML
(crisp on HiDPI screens), every panel has a fixed size (toggling the ground truth never moves the
layout), and the neighbouring timesteps, layers and images are prepared in the background.
:meth:`AttentionExplorer.attention_figure` and :meth:`AttentionExplorer.fusion_figure` draw the
current state with matplotlib for a paper. The store is read once per image; no control runs a model.

Example
-------
>>> from cfviz.viz.explorer import AttentionExplorer                   # doctest: +SKIP
>>> ex = AttentionExplorer(s.store, s.dataset, s.predict("brick"), note=s.note)  # doctest: +SKIP
>>> ex.widget                                                          # doctest: +SKIP
>>> ex.go(rank_failures(p).iloc[0])   # jump to a failure case          # doctest: +SKIP
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cfviz.viz import explore_data as ed
from cfviz.viz import render as rd
from cfviz.viz.style import MASK_COLOR, RANK_COLORS, SCORE_CMAP

#: CSS widths (px) of the large (attention, CLIP) and small panels; pixels are rendered HIDPI times
#: larger so that they stay sharp on HiDPI screens.
BIG, SMALL, HIDPI = 256, 160, 2
#: Windows outlined in the CLIP panel.
TOP_K = 3
#: Pixel outcomes of the predicted mask (Okabe-Ito, colour-blind safe; none is close to inferno's).
OUTCOME_COLORS = {"TP": "#009E73", "FP": "#D55E00", "FN": "#56B4E9"}
PREDICTED_COLOR = "#D55E00"
#: One short help line per control (shown under the controls and as each control's tooltip).
HELP = {
    "show": "which images the menu lists (FP/FN at the image F1-max threshold)",
    "sort": "order of the image menu",
    "image": "the test image on screen",
    "timestep": "diffusion timestep t of the captured denoiser call",
    "layer": "cross-attention layer (short name; hover for the module path)",
    "token": "prompt word whose attention is shown",
    "opacity": "heat-map opacity over the image",
    "ground truth": "outline the defect (cyan) and colour TP/FP/FN pixels",
    "CLIP window": "window side in ViT patches",
    "alpha": "CLIP weight in eq. 4: alpha (clip) + (1 - alpha) (diffusion)",
}
_CSS = """<style>
.cfviz-explorer .cfviz-title {font-size: 12px; line-height: 1.25; text-align: center; overflow-wrap: anywhere;}
.cfviz-explorer .cfviz-help {font-size: 11px; color: #555; line-height: 1.3;}
.cfviz-explorer img {object-fit: contain;}
.cfviz-explorer .widget-html-content {line-height: 1.35;}
.cfviz-explorer .cfviz-legend {font-size: 11px; color: #333; line-height: 1.5; white-space: nowrap;}
.cfviz-explorer .widget-label {min-width: max-content;}
</style>"""


class _Panel:
    """A titled image of fixed size; ``show(key, draw)`` redraws only when ``key`` changed."""

    def __init__(self, w: Any, css: int, cls: str | None = None) -> None:
        self.css = css
        self.title = w.HTML(layout=w.Layout(width=f"{css}px", height="34px", overflow="hidden"))
        self.title.add_class("cfviz-title")
        self.image = w.Image(format="jpeg", layout=w.Layout(width=f"{css}px", height=f"{css}px"))
        if cls:
            self.image.add_class(cls)
        self.box = w.VBox([self.title, self.image], layout=w.Layout(width=f"{css + 4}px", margin="0 4px 0 0"))
        self.key: Any = None

    def set_title(self, text: str, tooltip: str = "") -> None:
        # bottom-aligned in a fixed-height box: one- and two-line titles sit right on their panel
        value = (f'<div class="cfviz-title" title="{html.escape(tooltip)}" style="height:34px;display:flex;'
                 f'flex-direction:column;justify-content:flex-end"><span>{text}</span></div>')
        if self.title.value != value:
            self.title.value = value


def _plain_text(markup: str) -> str:
    """The text of a widget's HTML: line breaks kept, tags dropped, entities decoded.

    >>> _plain_text('<div class="t"><span>fused, alpha = 0.25<br>(eq. 4)</span></div>')
    'fused, alpha = 0.25\\n(eq. 4)'
    """
    text = re.sub(r"<br\s*/?>", "\n", markup or "")
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _colorbar(height: int, top: str, bottom: str, label: str, cmap: str = SCORE_CMAP) -> str:
    """An HTML colour bar (CSS gradient of ``cmap``) with its limits and a label."""
    return (f'<div style="display:flex;height:{height}px;margin-top:34px;font-size:11px">'
            f'<div style="width:11px;border:1px solid #888;background:{rd.css_gradient(cmap)}"></div>'
            f'<div style="display:flex;flex-direction:column;justify-content:space-between;margin-left:3px">'
            f"<span>{top}</span><span style='writing-mode:vertical-rl;transform:rotate(180deg);color:#333'>"
            f"{html.escape(label)}</span><span>{bottom}</span></div></div>")


def _swatch(color: str, box: bool = True) -> str:
    if box:
        return (f'<span style="display:inline-block;width:9px;height:9px;border:2px solid {color};'
                f'outline:1px solid #000;margin-right:4px;vertical-align:middle"></span>')
    return (f'<span style="display:inline-block;width:11px;height:11px;background:{color};'
            f'border:1px solid #555;margin-right:4px;vertical-align:middle"></span>')


class AttentionExplorer:
    """Widgets + views; ``widget`` is what a notebook displays.

    Parameters
    ----------
    store, dataset:
        The capture store and the data set of the run.
    predictions:
        ``clipfusion`` Predictions of one category (or a list, one per category): their
        normalised branch maps feed the fusion view, their final maps the predicted mask.
    alpha:
        Initial fusion weight (the slider's start).
    sigma:
        Smoothing of the fused map (as in the run's ScoringConfig).
    note:
        Caption of the views (``OFFLINE_NOTE`` for random-weight models).
    cache_size:
        Images kept in memory.
    render_cache_size:
        Encoded panels kept (a view seen before is shown without drawing).
    prefetch:
        Prepare neighbouring timesteps, layers and images in a background thread.
    """

    def __init__(self, store: Any, dataset: Any, predictions: Any | Sequence[Any], *, alpha: float = 0.25,
                 sigma: float = 4.0, note: str | None = None, cache_size: int = 16,
                 render_cache_size: int = 512, prefetch: bool = True) -> None:
        import ipywidgets as w

        self.store, self.dataset, self.sigma, self.note = store, dataset, sigma, note
        self.predictions = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
        if not self.predictions:
            raise ValueError("predictions is empty; pass session.predict(category) for at least one category")
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, ed.ImageData] = OrderedDict()
        self._cache_size = cache_size
        self._renders: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._render_cache_size = render_cache_size
        self._layers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # colour layers and base images
        self._metrics: dict[tuple[Any, ...], dict[str, float]] = {}
        self._blends: OrderedDict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._thresholds: dict[int, float | None] = {}
        self._prefetch = prefetch
        self._pending: list[Callable[[], Any]] = []
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._quiet = False
        self.draws = 0  # panels drawn (not served from the render cache); tests and benchmarks read it

        def tip(name: str) -> dict[str, Any]:
            return {"tooltip": HELP[name], "style": {"description_width": "initial"}}

        self.show = w.Dropdown(options=ed.filter_options(self.predictions), value="all", description="show",
                               layout=w.Layout(width="250px"), **tip("show"))
        self.sort = w.Dropdown(options=list(ed.SORTS.items()), value="score-", description="sort",
                               layout=w.Layout(width="210px"), **tip("sort"))
        self.image = w.Dropdown(options=ed.browse_choices(self.predictions), value=ed.default_choice(self.predictions),
                                description="image", layout=w.Layout(width="470px"), **tip("image"))
        first = self.data
        self.timestep = w.SelectionSlider(options=[(f"{t:g}", i) for i, t in enumerate(first.timesteps)],
                                          value=0, description="timestep", continuous_update=True,
                                          layout=w.Layout(width="300px"), **tip("timestep"))
        self.layer = w.Dropdown(options=ed.layer_options(first), value=ed.ALL_LAYERS, description="layer",
                                layout=w.Layout(width="260px"), **tip("layer"))
        self.token = w.Dropdown(options=first.tokens or [0], description="token", layout=w.Layout(width="190px"),
                                **tip("token"))
        self.opacity = w.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     layout=w.Layout(width="300px"), **tip("opacity"))
        self.show_mask = w.Checkbox(value=True, description="ground truth", indent=False,
                                    layout=w.Layout(width="130px"), **tip("ground truth"))
        scales = ed.window_scales(first) or [0]
        self.clip_scale = w.Dropdown(options=scales, description="CLIP window", layout=w.Layout(width="170px"),
                                     **tip("CLIP window"))
        self.alpha = w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="alpha",
                                   layout=w.Layout(width="300px"), **tip("alpha"))

        self.header = w.HTML()
        self.error = w.HTML()
        self.on_screen = w.HTML()
        self.on_screen.add_class("cfviz-help")
        self.metrics = w.HTML(layout=w.Layout(min_height="20px"))
        self.caption = w.HTML()
        self.caption.add_class("cfviz-help")
        self.attention_panel = _Panel(w, BIG, "cfviz-attention-view")
        self.clip_panel = _Panel(w, BIG, "cfviz-clip-view")
        self.attention_bar, self.clip_bar = w.HTML(), w.HTML()
        self.window_legend = w.HTML(layout=w.Layout(width="200px", margin="34px 0 0 8px"))
        self.image_panel = _Panel(w, SMALL, "cfviz-image-view")
        self.gt_panel = _Panel(w, SMALL, "cfviz-gt-view")
        self.fused_panel = _Panel(w, SMALL, "cfviz-fusion-view")
        self.pred_panel = _Panel(w, SMALL, "cfviz-prediction-view")
        self.branch_panels = {k: _Panel(w, SMALL, f"cfviz-branch-view-{k.replace('_', '-')}")
                              for k in (*ed.CLIP_KEYS, *ed.DIFF_KEYS)}
        self.fusion_bar, self.branch_bar = w.HTML(), w.HTML()
        self.outcome_legend = w.HTML(layout=w.Layout(width="170px", margin="34px 0 0 8px"))
        # the views as before (tests, notebooks): the attention map and the fused map
        self.attention_view, self.fusion_view = self.attention_panel.image, self.fused_panel.image

        def help_line(*names: str) -> Any:
            h = w.HTML(" · ".join(f"<b>{n}</b>: {HELP[n]}" for n in names))
            h.add_class("cfviz-help")
            return h

        self._controls = (self.show, self.sort, self.image, self.timestep, self.layer, self.token, self.opacity,
                          self.show_mask, self.clip_scale, self.alpha)
        for ctl in self._controls:
            ctl.observe(self._changed, names="value")
        self.widget = w.VBox([
            w.HTML(_CSS),
            w.HBox([self.show, self.sort, self.image]),
            help_line("show", "sort", "image"),
            w.HBox([self.timestep, self.layer, self.token, self.clip_scale]),
            w.HBox([self.opacity, self.show_mask]),
            help_line("timestep", "layer", "token", "CLIP window", "opacity", "ground truth"),
            self.error,
            self.header,
            w.HBox([self.attention_panel.box, self.attention_bar, w.HTML(layout=w.Layout(width="34px")),
                    self.clip_panel.box, self.clip_bar, self.window_legend]),
            self.caption,
            w.HBox([self.alpha, help_line("alpha")]),
            w.HBox([self.image_panel.box, self.gt_panel.box, self.fused_panel.box, self.fusion_bar,
                    w.HTML(layout=w.Layout(width="24px")), self.pred_panel.box, self.outcome_legend]),
            w.HBox([*(p.box for p in self.branch_panels.values()), self.branch_bar],
                   layout=w.Layout(margin="10px 0 4px 0")),
            self.metrics,
            self.on_screen,
        ])
        self.widget.add_class("cfviz-explorer")
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> tuple[Any, int]:
        j, i = self.image.value
        return self.predictions[j], i

    def _load(self, j: int, i: int) -> ed.ImageData:
        p = self.predictions[j]
        image_id = p.image_ids[i]
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                return self._cache[image_id]
        data = ed.load_image_data(self.store, self.dataset, image_id, p)
        with self._lock:
            self._cache[image_id] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    @property
    def data(self) -> ed.ImageData:
        """The current image's data (read from the store once, then cached)."""
        return self._load(*self.image.value)

    @property
    def state(self) -> dict[str, Any]:
        """The view state on screen: image, layer (module path), step, token, opacity, ground truth,
        CLIP window scale, alpha."""
        p, i = self.current
        return {"image_id": p.image_ids[i], "layer": self.layer.value, "step": int(self.timestep.value),
                "token": self.token.value, "opacity": float(self.opacity.value),
                "show_mask": bool(self.show_mask.value), "clip_scale": self.clip_scale.value,
                "alpha": float(self.alpha.value)}

    def go(self, target: Any) -> None:
        """Show an image: its id, or a row of :func:`cfviz.experiments.failures.rank_failures` (anything
        with an ``image_id``). The menu is reset to all images when the current filter hides it."""
        image_id = target if isinstance(target, str) else target["image_id"]
        value = next(((j, i) for j, p in enumerate(self.predictions) for i, x in enumerate(p.image_ids)
                      if x == image_id), None)
        if value is None:
            raise KeyError(f"image_id {image_id!r} is not among the explorer's predictions")
        if value not in [v for _, v in self.image.options]:
            self.show.value = "all"
        self.image.value = value

    # ------------------------------------------------------------------ figures for export (matplotlib)
    def attention_figure(self, note: str | None = None) -> Any:
        """The attention view in the current state (every control's value), as a matplotlib Figure."""
        st = self.state
        return ed.attention_figure(self.data, layer=st["layer"], step=st["step"], token=st["token"],
                                   opacity=st["opacity"], show_mask=st["show_mask"], clip_scale=st["clip_scale"],
                                   note=self.note if note is None else note)

    def fusion_figure(self, note: str | None = None) -> Any:
        """The fusion view (branch maps and the fused map at the current alpha) as a matplotlib Figure."""
        p, _ = self.current
        st = self.state
        metrics = self.live_metrics()
        return ed.fusion_figure(self.data, st["alpha"], sigma=self.sigma, opacity=st["opacity"],
                                show_mask=st["show_mask"], metrics=metrics, note=self.note if note is None else note)

    def screen_figure(self) -> Any:
        """The explorer's panels exactly as on screen, as a matplotlib Figure for a paper.

        Each panel is the very image the browser shows (the same JPEG decoded, drawn without
        resampling), under its on-screen title; the header and the on-screen settings line go
        above and below. Use :meth:`save_view` to write it as PNG and PDF.
        """
        import io

        from PIL import Image

        from cfviz.viz.style import new_figure

        rows = [[self.attention_panel, self.clip_panel],
                [self.image_panel, self.gt_panel, self.fused_panel, self.pred_panel],
                list(self.branch_panels.values())]
        width = max(len(r) for r in rows)
        fig = new_figure(1.6 * width, 1.9 * len(rows) + 0.9)
        grid = fig.add_gridspec(len(rows), width)
        for r, panels in enumerate(rows):
            for c, panel in enumerate(panels):
                ax = fig.add_subplot(grid[r, c])
                ax.set_axis_off()
                if panel.image.value:
                    pixels = np.asarray(Image.open(io.BytesIO(panel.image.value)).convert("RGB"))
                    ax.imshow(pixels, interpolation="none")
                ax.set_title(_plain_text(panel.title.value), fontsize=7)
        fig.suptitle(_plain_text(self.header.value), fontsize=8)
        fig.text(0.5, 0.005, _plain_text(self.on_screen.value), ha="center", va="bottom", fontsize=5.5, wrap=True)
        return fig

    def save_view(self, name: str = "explorer_view", out_dir: Any = "figures",
                  formats: Sequence[str] = ("png", "pdf")) -> list[Any]:
        """Write :meth:`screen_figure` to ``out_dir/name.png`` and ``.pdf``; return the paths."""
        from cfviz.viz.style import save_figure

        return save_figure(self.screen_figure(), name, out_dir, formats)

    def live_metrics(self) -> dict[str, float]:
        """The current image's numbers at the current alpha (cached per image and alpha)."""
        p, i = self.current
        return self._metrics_for(p, self.data, float(self.alpha.value))

    def _metrics_for(self, p: Any, d: ed.ImageData, alpha: float) -> dict[str, float]:
        key = (d.image_id, alpha)
        if key not in self._metrics:
            both = all(k in d.components for k in ed.CLIP_KEYS + ed.DIFF_KEYS)
            fused = self._fused(d, alpha) if both else None
            self._metrics[key] = ed.live_metrics(d, alpha, sigma=self.sigma, predictions=p, fused=fused)
        return self._metrics[key]

    def _fused(self, d: ed.ImageData, alpha: float) -> np.ndarray:
        """The fused map at ``alpha`` from the image's smoothed branch sums (smoothed once per image)."""
        clip, diff = self._cached(("fusion-parts", d.image_id, self.sigma),
                                  lambda: ed.fusion_parts(d.components, self.sigma))
        return float(alpha) * clip + (1.0 - float(alpha)) * diff

    # ------------------------------------------------------------------ array rendering
    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any], limit: int = 160) -> Any:
        with self._lock:
            if key in self._layers:
                self._layers.move_to_end(key)
                return self._layers[key]
        value = make()
        with self._lock:
            self._layers[key] = value
            while len(self._layers) > limit:
                self._layers.popitem(last=False)
        return value

    def _shape(self, data: ed.ImageData, css: int) -> tuple[int, int]:
        return rd.panel_shape(data.image.shape, css * HIDPI)

    def _base(self, data: ed.ImageData, css: int) -> np.ndarray:
        shape = self._shape(data, css)
        return self._cached(("base", data.image_id, shape), lambda: rd.fit_image(data.image, shape))

    def _outline(self, data: ed.ImageData, css: int) -> np.ndarray | None:
        if data.mask is None:
            return None
        shape = self._shape(data, css)
        return self._cached(("outline", data.image_id, shape), lambda: rd.mask_outline(data.mask, shape, HIDPI))

    def _attention_colors(self, data: ed.ImageData, layer: str, step: int, token: Any) -> Any:
        shape = self._shape(data, BIG)
        return self._cached(("att", data.image_id, layer, int(step), token),
                            lambda: rd.heat_colors(ed.attention_map(data, layer, step, token), shape))

    def _branch_colors(self, d: ed.ImageData, k: str) -> np.ndarray:
        shape = self._shape(d, SMALL)
        return self._cached(("branch", d.image_id, k), lambda: rd.heat_colors(d.components[k], shape)[0])

    def _fused_colors(self, d: ed.ImageData, alpha: float) -> np.ndarray:
        shape = self._shape(d, SMALL)
        return self._cached(("fused", d.image_id, alpha), lambda: rd.heat_colors(self._fused(d, alpha), shape)[0])

    def _window_colors(self, d: ed.ImageData, scale: int) -> Any:
        shape = self._shape(d, BIG)
        return self._cached(("win", d.image_id, scale),
                            lambda: rd.heat_colors(ed.window_map(d, scale), shape, nearest=True))

    def _compose(self, data: ed.ImageData, css: int, colors: np.ndarray | None, opacity: float,
                 show_mask: bool) -> np.ndarray:
        base = self._base(data, css)
        if colors is None:
            rgb = base.copy()
        else:  # the blend is kept: toggling the ground truth then only repaints the outline
            key = (id(colors), float(opacity))
            hit = self._blends.get(key)
            if hit is None or hit[0] is not colors:  # the array itself is kept with it, so its id is not reused
                hit = (colors, rd.blend(base, colors, opacity))
                self._blends[key] = hit
                while len(self._blends) > 24:
                    self._blends.popitem(last=False)
            rgb = hit[1].copy()
        outline = self._outline(data, css) if show_mask else None
        if outline is not None:
            rd.paint(rgb, outline, MASK_COLOR)
        return rgb

    def _show(self, panel: _Panel, key: tuple[Any, ...], draw: Callable[[], np.ndarray]) -> None:
        """Put the panel for ``key`` on screen: from the render cache, or drawn and encoded now."""
        if panel.key == key:
            return
        data = self._encoded(key, draw)
        panel.key = key
        panel.image.value = data

    def refresh(self) -> None:
        """Bring every panel, title and text up to date with the controls (only what changed is drawn)."""
        p, i = self.current
        d = self.data
        st = self.state
        op, gt = st["opacity"], st["show_mask"]
        has_gt = gt and d.mask is not None
        self._attention_view(d, st, op, gt)
        self._clip_view(d, st, op, gt)
        self._fusion_views(p, d, st, op, gt, has_gt)
        metrics = self.live_metrics()
        self.metrics.value = "this image at this alpha — " + " · ".join(
            f"<b>{k}</b>: {v}" for k, v in ed.metric_labels(metrics).items())
        head = (f"<b>{html.escape(d.image_id)}</b> · {html.escape(d.defect_type)} · "
                f"{'anomalous' if d.label else 'normal'}")
        if getattr(p, "scores", None) is not None:
            head += (f" · image score {float(p.scores[i]):.3f} ({ed.outcomes(p)[i]} at the image F1-max "
                     f"threshold {ed.image_threshold(p):.3f})")
        self.header.value = head
        self.caption.value = html.escape(ed.layer_caption(st["layer"]) + "." + (f" {self.note}" if self.note else ""))
        thr = self._pixel_threshold(p)
        self.on_screen.value = (
            f"<b>on screen</b>: {html.escape(str(getattr(p, 'method', '?')))}, "
            f"{html.escape(str(getattr(p, 'category', '?')))}, k = {getattr(p, 'shots', '?')} "
            f"(reference draw seed {getattr(p, 'seed', '?')}) · alpha = {st['alpha']:.2f}, sigma = {self.sigma:g} · attention and "
            "CLIP windows: colours span the shown map's min..max · branch and fused maps: min-max per map (0..1)"
            + ("" if thr is None else f" · predicted mask: the run's map >= {thr:.3g} (pixel F1-max over the "
               "category)"))
        self._schedule_prefetch(st)

    def _attention_view(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> None:
        layer, step, token = st["layer"], st["step"], st["token"]
        colors, lo, hi = self._attention_colors(d, layer, step, token)
        tok = token if isinstance(token, str) else d.tokens[int(token)] if d.tokens else f"#{token}"
        self._show(self.attention_panel, *self._attention_job(d, st, op, gt))
        self.attention_panel.set_title(f"attention to '{html.escape(str(tok))}', t = {d.timesteps[step]:g}<br>"
                                       f"{html.escape(ed.layer_label(layer))}", ed.layer_caption(layer))
        self.layer.tooltip = f"{HELP['layer']}; {ed.layer_caption(layer)}"
        self.attention_bar.value = _colorbar(self._css_height(d, BIG), f"{hi:.3g}", f"{lo:.3g}", "cross-attention")

    def _clip_view(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> None:
        scales = ed.window_scales(d)
        if not scales:
            self.clip_panel.set_title("no CLIP window scores stored")
            self._show(self.clip_panel, ("win-none", d.image_id, gt), lambda: self._compose(d, BIG, None, op, gt))
            self.clip_bar.value, self.window_legend.value = "", ""
            return
        s = st["clip_scale"] if st["clip_scale"] in scales else scales[0]
        _, lo, hi = self._window_colors(d, s)
        tops = ed.top_windows(d, s, TOP_K)
        self._show(self.clip_panel, *self._clip_job(d, s, op, gt))
        self.clip_panel.set_title(f"CLIP windows {s}x{s} patches<br>mean window score per patch")
        self.clip_bar.value = _colorbar(self._css_height(d, BIG), f"{hi:.3g}", f"{lo:.3g}", "window score")
        rows = [f"{_swatch(RANK_COLORS[(t['rank'] - 1) % len(RANK_COLORS)])}#{t['rank']}: {t['score']:.3g} "
                f"at row {t['box'][0]}, col {t['box'][1]}" for t in tops]
        if gt and d.mask is not None and np.asarray(d.mask).any():
            rows.append(f'<span style="display:inline-block;width:13px;border-top:2px solid {MASK_COLOR};'
                        f'margin-right:4px;vertical-align:middle"></span>ground truth')
        self.window_legend.value = (f'<div class="cfviz-legend"><b>top {len(tops)} windows</b> ({s}x{s} patches)'
                                    "<br>" + "<br>".join(rows) + "</div>")

    def _fusion_views(self, p: Any, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool, has_gt: bool) -> None:
        alpha = st["alpha"]
        shape = self._shape(d, SMALL)
        self._show(self.image_panel, *self._image_job(d))
        self.image_panel.set_title("image")
        if d.mask is None:
            self._show(self.gt_panel, ("gt-none", shape), lambda: rd.placeholder(shape))
            self.gt_panel.set_title("no ground truth")
        elif gt:
            self._show(self.gt_panel, *self._gt_job(d))
            self.gt_panel.set_title("ground truth")
        else:
            self._show(self.gt_panel, ("gt-hidden", shape), lambda: rd.placeholder(shape))
            self.gt_panel.set_title("ground truth (hidden)")
        for k, panel in self.branch_panels.items():
            if k not in d.components:
                self._show(panel, ("branch-none", shape), lambda: rd.placeholder(shape))
                panel.set_title(f"{ed.COMPONENT_TITLES[k]} (not stored)")
                continue
            self._show(panel, *self._branch_job(d, k, op, gt))
            panel.set_title(ed.COMPONENT_TITLES[k])
        if all(k in d.components for k in ed.CLIP_KEYS + ed.DIFF_KEYS):
            self._show(self.fused_panel, *self._fused_job(d, alpha, op, gt))
            self.fused_panel.set_title(f"fused, alpha = {alpha:.2f}<br>(eq. 4, sigma = {self.sigma:g})")
        else:
            self._show(self.fused_panel, ("fused-none", shape), lambda: rd.placeholder(shape))
            self.fused_panel.set_title("fused (needs both branches)")
        self._prediction_view(p, d, op, has_gt)
        height = self._css_height(d, SMALL)
        self.fusion_bar.value = _colorbar(height, "1", "0", "min-max per map")
        self.branch_bar.value = _colorbar(height, "1", "0", "min-max per map")

    def _pixel_threshold(self, p: Any) -> float | None:
        j = next(j for j, q in enumerate(self.predictions) if q is p)
        if j not in self._thresholds:
            try:
                self._thresholds[j] = ed.prediction_threshold(p)
            except ValueError:
                self._thresholds[j] = None
        return self._thresholds[j]

    def _prediction_view(self, p: Any, d: ed.ImageData, op: float, has_gt: bool) -> None:
        shape = self._shape(d, SMALL)
        thr = self._pixel_threshold(p)
        if d.prediction is None or thr is None:
            self._show(self.pred_panel, ("pred-none", shape), lambda: rd.placeholder(shape))
            self.pred_panel.set_title("predicted mask (needs masks)")
            self.outcome_legend.value = ""
            return

        self._show(self.pred_panel, *self._pred_job(d, thr, op, has_gt))
        self.pred_panel.set_title(f"predicted mask<br>map &ge; {thr:.3g} (F1-max)")
        if has_gt:
            self.outcome_legend.value = ('<div class="cfviz-legend"><b>predicted mask</b><br>' + "<br>".join(
                f"{_swatch(c, box=False)}{n} ({desc})" for (n, c), desc in zip(
                    OUTCOME_COLORS.items(), ("defect found", "false alarm", "defect missed"))) + "</div>")
        else:
            self.outcome_legend.value = (f'<div class="cfviz-legend"><b>predicted mask</b><br>'
                                         f"{_swatch(PREDICTED_COLOR, box=False)}predicted anomalous<br>"
                                         "(TP/FP/FN with the ground truth on)</div>")

    # ------------------------------------------------------------------ panels: (render-cache key, draw)
    # One place decides each panel's key and pixels: the views and the prefetch of neighbouring
    # images use the same jobs, so a prepared panel is found under the key the view asks for.
    def _attention_job(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> tuple[Any, Any]:
        layer, step, token = st["layer"], st["step"], st["token"]
        colors = self._attention_colors(d, layer, step, token)[0]
        return ("att", d.image_id, layer, step, token, op, gt), lambda: self._compose(d, BIG, colors, op, gt)

    def _clip_job(self, d: ed.ImageData, s: int, op: float, gt: bool) -> tuple[Any, Any]:
        shape = self._shape(d, BIG)
        colors = self._window_colors(d, s)[0]
        tops = ed.top_windows(d, s, TOP_K)

        def draw() -> np.ndarray:
            rgb = self._compose(d, BIG, colors, op, gt)
            gh, gw = ed.window_grid(d.clip)
            ph, pw = shape[0] / gh, shape[1] / gw
            for t in reversed(tops):  # the best window last, on top
                r, c, h, w_ = t["box"]
                rd.draw_box(rgb, round(r * ph), round(c * pw), round((r + h) * ph), round((c + w_) * pw),
                            RANK_COLORS[(t["rank"] - 1) % len(RANK_COLORS)], width=2 * HIDPI if t["rank"] == 1 else HIDPI)
            return rgb
        return ("win", d.image_id, s, op, gt), draw

    def _image_job(self, d: ed.ImageData) -> tuple[Any, Any]:
        return ("img", d.image_id), lambda: self._base(d, SMALL).copy()

    def _gt_job(self, d: ed.ImageData) -> tuple[Any, Any]:
        shape = self._shape(d, SMALL)
        return ("gt", d.image_id), lambda: np.repeat(
            (rd.resize_map(d.mask.astype(np.float32), shape, nearest=True) > 0.5)[..., None] * np.uint8(255), 3, axis=2)

    def _branch_job(self, d: ed.ImageData, k: str, op: float, gt: bool) -> tuple[Any, Any]:
        colors = self._branch_colors(d, k)
        return ("branch", d.image_id, k, op, gt), lambda: self._compose(d, SMALL, colors, op, gt)

    def _fused_job(self, d: ed.ImageData, alpha: float, op: float, gt: bool) -> tuple[Any, Any]:
        colors = self._fused_colors(d, alpha)
        return ("fused", d.image_id, alpha, op, gt), lambda: self._compose(d, SMALL, colors, op, gt)

    def _pred_job(self, d: ed.ImageData, thr: float, op: float, has_gt: bool) -> tuple[Any, Any]:
        shape = self._shape(d, SMALL)

        def draw() -> np.ndarray:
            pred = rd.resize_map(d.prediction, shape) >= thr
            colors = np.zeros((*shape, 4), np.uint8)
            if has_gt:
                truth = rd.resize_map(d.mask.astype(np.float32), shape, nearest=True) > 0.5
                parts = {"TP": pred & truth, "FP": pred & ~truth, "FN": ~pred & truth}
            else:
                parts = {"predicted": pred}
            for name, where in parts.items():
                colors[where, :3] = rd.hex_rgb(OUTCOME_COLORS.get(name, PREDICTED_COLOR))
                colors[where, 3] = 255
            return rd.blend(self._base(d, SMALL), colors, max(op, 0.5))  # visible at a low heat-map opacity
        return ("pred", d.image_id, has_gt, max(op, 0.5)), draw

    def _encoded(self, key: tuple[Any, ...], draw: Callable[[], np.ndarray]) -> bytes:
        """The panel's image bytes from the render cache, or drawn and encoded now (and kept)."""
        with self._lock:
            data = self._renders.get(key)
            if data is not None:
                self._renders.move_to_end(key)
                return data
        data = rd.encode(draw())
        with self._lock:
            self.draws += 1
            self._renders[key] = data
            while len(self._renders) > self._render_cache_size:
                self._renders.popitem(last=False)
        return data

    def _css_height(self, d: ed.ImageData, css: int) -> int:
        h, w = d.image.shape[:2]
        return css if h >= w else max(1, round(css * h / w))

    # ------------------------------------------------------------------ events
    def _changed(self, change: Any) -> None:
        if self._quiet:
            return
        try:
            if change["owner"] in (self.show, self.sort):
                self._update_image_menu()
            if change["owner"] is self.image:
                self._image_changed()
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a widget callback's error is invisible in JupyterLab otherwise
            import traceback

            self.error.value = (f'<pre style="color:#b00;font-size:11px">{html.escape(repr(exc))}\n'
                                f"{html.escape(traceback.format_exc(limit=-3))}</pre>")
            raise
        if self.error.value:
            self.error.value = ""

    def _update_image_menu(self) -> None:
        options = ed.browse_choices(self.predictions, sort=self.sort.value, show=self.show.value)
        keep = self.image.value
        self._quiet = True
        try:
            self.image.options = options or ed.browse_choices(self.predictions)
            values = [v for _, v in self.image.options]
            self.image.value = keep if keep in values else values[0]
        finally:
            self._quiet = False
        if self.image.value != keep:
            self._image_changed()

    def _image_changed(self) -> None:
        d = self.data
        self._quiet = True
        try:
            options = ed.layer_options(d)
            if tuple(self.layer.options) != tuple(options):
                layer = self.layer.value
                self.layer.options = options
                self.layer.value = layer if layer in [v for _, v in options] else ed.ALL_LAYERS
            if d.tokens and tuple(self.token.options) != tuple(d.tokens):
                token = self.token.value
                self.token.options = d.tokens
                self.token.value = token if token in d.tokens else d.tokens[0]
            scales = ed.window_scales(d) or [0]
            if tuple(self.clip_scale.options) != tuple(scales):
                scale = self.clip_scale.value
                self.clip_scale.options = scales
                self.clip_scale.value = scale if scale in scales else scales[0]
        finally:
            self._quiet = False

    # ------------------------------------------------------------------ prefetch
    def _schedule_prefetch(self, st: dict[str, Any]) -> None:
        """Prepare what the next move most likely needs: the neighbouring timesteps and layers of this
        image, and the neighbouring images in the menu (a background thread; results go to the caches)."""
        if not self._prefetch:
            return
        d = self.data
        n = len(d.timesteps)
        layers = [v for _, v in self.layer.options]
        li = layers.index(st["layer"]) if st["layer"] in layers else 0
        jobs: list[Callable[[], Any]] = []
        # the next and previous image first: a new image is the costliest view (every panel changes)
        values = [v for _, v in self.image.options]
        at = values.index(self.image.value) if self.image.value in values else 0
        for k in (at + 1, at - 1):
            if 0 <= k < len(values):
                jobs.append(lambda v=values[k]: self._prepare_image(*v, st))
        for step in (st["step"] + 1, st["step"] - 1):
            if 0 <= step < n:
                jobs.append(lambda step=step: self._attention_colors(d, st["layer"], step, st["token"]))
        for k in (li + 1, li - 1):
            if 0 <= k < len(layers):
                jobs.append(lambda k=k: self._attention_colors(d, layers[k], st["step"], st["token"]))
        with self._lock:
            self._pending = jobs
        self._wake.set()
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="cfviz-explorer-prefetch", daemon=True)
            self._worker.start()

    def _prepare_image(self, j: int, i: int, st: dict[str, Any]) -> None:
        """Read a neighbouring image and draw and encode its panels at the current settings: picking
        it then only sends bytes that are ready."""
        d = self._load(j, i)
        layer = st["layer"] if st["layer"] == ed.ALL_LAYERS or st["layer"] in d.attention else ed.ALL_LAYERS
        scales = ed.window_scales(d)
        op, gt = st["opacity"], st["show_mask"]
        has_gt = gt and d.mask is not None
        jobs = [self._image_job(d)] + ([self._gt_job(d)] if has_gt else [])
        if d.attention and (not d.tokens or st["token"] in d.tokens) and layer == st["layer"]:
            jobs.append(self._attention_job(d, {**st, "step": min(st["step"], len(d.timesteps) - 1)}, op, gt))
        if scales and st["clip_scale"] in scales:
            jobs.append(self._clip_job(d, st["clip_scale"], op, gt))
        jobs += [self._branch_job(d, k, op, gt) for k in d.components if k in ed.COMPONENT_TITLES]
        if all(k in d.components for k in ed.CLIP_KEYS + ed.DIFF_KEYS):
            self._metrics_for(self.predictions[j], d, st["alpha"])
            jobs.append(self._fused_job(d, st["alpha"], op, gt))
        thr = self._pixel_threshold(self.predictions[j])
        if d.prediction is not None and thr is not None:
            jobs.append(self._pred_job(d, thr, op, has_gt))
        for key, draw in jobs:  # encoded now: picking this image then only sends the bytes
            self._encoded(key, draw)

    def _work(self) -> None:
        while True:
            if not self._wake.wait(timeout=30):
                return  # idle: let the thread end; the next change starts a new one
            with self._lock:
                job = self._pending.pop(0) if self._pending else None
                if not self._pending:
                    self._wake.clear()
            if job is not None:
                try:
                    job()
                except Exception:  # noqa: BLE001 - a prefetch is only a guess; the view computes it again
                    pass


def explore(store: Any, dataset: Any, predictions: Any | Sequence[Any], **kwargs: Any) -> Any:
    """Build an :class:`AttentionExplorer` and return its widget (display it in a notebook)."""
    return AttentionExplorer(store, dataset, predictions, **kwargs).widget
