"""An ipywidgets explorer over a capture store: a thin shell over :mod:`cfviz.viz.explore_data`.

Controls: image picker, timestep slider, layer selector, token selector, overlay opacity,
ground-truth toggle, CLIP window scale and the fusion weight alpha. Two views: cross-attention
beside CLIP window scores (changes with timestep, layer, token) and the four branch maps with
the fused map and its live per-image metrics (changes with alpha). The store is read once per
image; a slider only slices arrays and redraws, it never runs a model. It opens on the
highest-scoring anomalous image. :meth:`AttentionExplorer.attention_figure` and
:meth:`AttentionExplorer.fusion_figure` return the views exactly as on screen (for a paper figure).

Layers are listed by their short names (``up1.attn0``, see :mod:`cfviz.capture.naming`); the
dropdown's tooltip and the view's caption give the module path.

Example
-------
>>> from cfviz.viz.explorer import AttentionExplorer                   # doctest: +SKIP
>>> ex = AttentionExplorer(s.store, s.dataset, s.predict("brick"), note=s.note)  # doctest: +SKIP
>>> ex.widget                                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from cfviz.viz import explore_data as ed


class AttentionExplorer:
    """Widgets + views; ``widget`` is what a notebook displays.

    Parameters
    ----------
    store, dataset:
        The capture store and the data set of the run.
    predictions:
        ``clipfusion`` Predictions of one category (or a list, one per category): their
        normalised branch maps feed the fusion view.
    sigma:
        Smoothing of the fused map (as in the run's ScoringConfig).
    note:
        Caption of both views (``OFFLINE_NOTE`` for random-weight models).
    cache_size:
        Images kept in memory.
    render_cache_size:
        Rendered views kept (PNG bytes, a few tens of kB each): a view seen before, e.g. when a
        slider moves back, is shown at once instead of being drawn again.
    """

    def __init__(self, store: Any, dataset: Any, predictions: Any | Sequence[Any], *, alpha: float = 0.25,
                 sigma: float = 4.0, note: str | None = None, cache_size: int = 16,
                 render_cache_size: int = 512) -> None:
        import ipywidgets as w

        self.store, self.dataset, self.sigma, self.note = store, dataset, sigma, note
        self.predictions = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
        if not self.predictions:
            raise ValueError("predictions is empty; pass session.predict(category) for at least one category")
        self._cache: OrderedDict[str, ed.ImageData] = OrderedDict()
        self._cache_size = cache_size
        self._renders: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._render_cache_size = render_cache_size
        choices = ed.image_choices(self.predictions)
        self.image = w.Dropdown(options=choices, value=ed.default_choice(self.predictions), description="image",
                                layout=w.Layout(width="420px"))
        first = self.data
        self.timestep = w.SelectionSlider(options=[(f"{t:g}", i) for i, t in enumerate(first.timesteps)],
                                          value=0, description="timestep", continuous_update=True)
        self.layer = w.Dropdown(options=ed.layer_options(first), value=ed.ALL_LAYERS, description="layer",
                                tooltip=ed.layer_caption(ed.ALL_LAYERS), layout=w.Layout(width="480px"))
        self.token = w.Dropdown(options=first.tokens or [0], description="token")
        self.opacity = w.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity")
        self.show_mask = w.Checkbox(value=True, description="ground truth")
        scales = sorted(first.clip.windows) if first.clip is not None and first.clip.windows else [0]
        self.clip_scale = w.Dropdown(options=scales, description="CLIP window")
        self.alpha = w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="alpha")
        self.attention_view = w.Image(format="png")
        self.fusion_view = w.Image(format="png")
        self.metrics = w.HTML()
        for ctl in (self.image, self.timestep, self.layer, self.token, self.opacity, self.show_mask, self.clip_scale):
            ctl.observe(self._on_attention, names="value")
        for ctl in (self.image, self.alpha, self.opacity, self.show_mask):
            ctl.observe(self._on_fusion, names="value")
        self.image.observe(self._on_image, names="value")
        self.layer.observe(self._on_layer, names="value")
        self.attention_view.add_class("cfviz-attention-view")
        self.fusion_view.add_class("cfviz-fusion-view")
        self.widget = w.VBox([
            w.HBox([self.image, self.show_mask]),
            w.HBox([self.timestep, self.layer]),
            w.HBox([self.token, self.clip_scale, self.opacity]),
            self.attention_view,
            w.HBox([self.alpha, self.metrics]),
            self.fusion_view,
        ])
        self.widget.add_class("cfviz-explorer")
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> tuple[Any, int]:
        j, i = self.image.value
        return self.predictions[j], i

    @property
    def data(self) -> ed.ImageData:
        """The current image's data (read from the store once, then cached)."""
        p, i = self.current
        image_id = p.image_ids[i]
        if image_id not in self._cache:
            self._cache[image_id] = ed.load_image_data(self.store, self.dataset, image_id, p)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(image_id)
        return self._cache[image_id]

    @property
    def state(self) -> dict[str, Any]:
        """The view state on screen: image, layer (module path), step, token, opacity, ground truth,
        CLIP window scale, alpha."""
        p, i = self.current
        return {"image_id": p.image_ids[i], "layer": self.layer.value, "step": int(self.timestep.value),
                "token": self.token.value, "opacity": float(self.opacity.value),
                "show_mask": bool(self.show_mask.value), "clip_scale": self.clip_scale.value,
                "alpha": float(self.alpha.value)}

    # ------------------------------------------------------------------ rendering
    def attention_figure(self, note: str | None = None) -> Any:
        """The attention view exactly as on screen (every control's current value), as a Figure.

        ``note`` defaults to the explorer's caption, so the figure matches the view pixel for pixel.
        """
        st = self.state
        return ed.attention_figure(self.data, layer=st["layer"], step=st["step"], token=st["token"],
                                   opacity=st["opacity"], show_mask=st["show_mask"], clip_scale=st["clip_scale"],
                                   note=self.note if note is None else note)

    def fusion_figure(self, note: str | None = None) -> Any:
        """The fusion view (branch maps and the fused map at the current alpha) exactly as on screen."""
        p, _ = self.current
        st = self.state
        metrics = ed.live_metrics(self.data, st["alpha"], sigma=self.sigma, predictions=p)
        return ed.fusion_figure(self.data, st["alpha"], sigma=self.sigma, opacity=st["opacity"],
                                show_mask=st["show_mask"], metrics=metrics, note=self.note if note is None else note)

    def _rendered(self, key: tuple[Any, ...], draw: Any) -> Any:
        """``draw()``'s result for this view state, drawn once and then reused (LRU)."""
        if key not in self._renders:
            self._renders[key] = draw()
            while len(self._renders) > self._render_cache_size:
                self._renders.popitem(last=False)
        self._renders.move_to_end(key)
        return self._renders[key]

    def attention_png(self) -> bytes:
        p, i = self.current
        key = ("attention", p.image_ids[i], self.layer.value, int(self.timestep.value), self.token.value,
               self.opacity.value, self.show_mask.value, self.clip_scale.value)

        def draw() -> bytes:
            return ed.figure_png(self.attention_figure())
        return self._rendered(key, draw)

    def fusion_png(self) -> tuple[bytes, dict[str, float]]:
        p, i = self.current
        key = ("fusion", p.image_ids[i], self.alpha.value, self.opacity.value, self.show_mask.value)

        def draw() -> tuple[bytes, dict[str, float]]:
            metrics = ed.live_metrics(self.data, self.alpha.value, sigma=self.sigma, predictions=p)
            fig = ed.fusion_figure(self.data, self.alpha.value, sigma=self.sigma, opacity=self.opacity.value,
                                   show_mask=self.show_mask.value, metrics=metrics, note=self.note)
            return ed.figure_png(fig), metrics
        return self._rendered(key, draw)

    def refresh(self) -> None:
        self._on_attention()
        self._on_fusion()

    def _on_image(self, _change: Any = None) -> None:
        d = self.data
        options = ed.layer_options(d)
        if tuple(self.layer.options) != tuple(options):
            self.layer.options = options
        if d.tokens and tuple(self.token.options) != tuple(d.tokens):
            self.token.options = d.tokens

    def _on_layer(self, _change: Any = None) -> None:
        self.layer.tooltip = ed.layer_caption(self.layer.value)

    def _on_attention(self, _change: Any = None) -> None:
        self.attention_view.value = self.attention_png()

    def _on_fusion(self, _change: Any = None) -> None:
        png, metrics = self.fusion_png()
        self.fusion_view.value = png
        self.metrics.value = "<br>".join(f"<b>{k}</b>: {v}" for k, v in ed.metric_labels(metrics).items())


def explore(store: Any, dataset: Any, predictions: Any | Sequence[Any], **kwargs: Any) -> Any:
    """Build an :class:`AttentionExplorer` and return its widget (display it in a notebook)."""
    return AttentionExplorer(store, dataset, predictions, **kwargs).widget
