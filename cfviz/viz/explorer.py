"""An ipywidgets explorer over a capture store: a thin shell over :mod:`cfviz.viz.explore_data`.

Controls: a failure browser (which images, in which order), the image, timestep, layer, token,
overlay opacity, ground-truth toggle, CLIP window scale, the two fusion weights (``alpha_seg``,
paper eq. 4, for the fused map; ``alpha_cls``, eq. 9, for the image score) and the pixel threshold
of the predicted mask; each has a one-line help. Views (tabs, so that the explorer fits a 1280x800
screen): cross-attention beside CLIP window scores (top windows outlined, ranked in a legend); the
image, its ground truth, the fused map at ``alpha_seg`` (its colour bar in the map's own units, the
threshold marked on it) and the predicted mask ``fused >= threshold`` (TP, FP, FN pixels coloured,
as anomalib shows it); the four branch maps; histograms of normal vs anomalous image and pixel
scores with the thresholds marked; the image's metrics (shown once) and a line saying what is on
screen (method, k, seed, both weights, threshold).

One truth on screen: every number is computed by the same function, at the settings shown next to
it, as the run's own results. At the run's settings (``scoring``: ``alpha_seg``, ``alpha_cls``,
``sigma``) the explorer shows the run's own maps and scores (``Predictions.maps`` / ``.scores``),
and the category image AUROC comes from :func:`cfviz.metrics.image_metrics` as in ``results.csv``.

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
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from cfviz.fusion import blend
from cfviz.viz import explore_data as ed
from cfviz.viz import render as rd
from cfviz.viz.explorer_tabs import ExplorerTabs
from cfviz.viz.explorer_widgets import (OUTCOME_COLORS, PREDICTED_COLOR, TOP_K, WORD, _colorbar,  # noqa: F401
                                        _Panel, _plain_text, threshold_mark)  # (their home before the split)
from cfviz.viz.style import MASK_COLOR, RANK_COLORS

#: CSS widths (px) of the large (attention, CLIP) and small panels (the explorer fits a 1280x800
#: screen); pixels are rendered HIDPI times larger so that they stay sharp on HiDPI screens.
BIG, SMALL, HIDPI = 208, 150, 2
#: One short help line per control (shown under the controls and as each control's tooltip).
HELP = {
    "method": "method whose maps and scores are shown (scored from the store at the run's settings)",
    "k": "k-shot setting (0 = zero-shot: language maps only)",
    "seed": "seed of the k normal reference images (k > 0)",
    "show": "which images the menu lists (FP/FN at the image F1-max threshold)",
    "sort": "order of the image menu",
    "image": "the test image on screen",
    "timestep": "diffusion timestep t of the captured denoiser call",
    "layer": "cross-attention layer (short name; hover for the module path)",
    "token": "prompt word whose attention is shown",
    "opacity": "heat-map opacity over the image",
    "resolutions": "words tab, mean over layers: the attention resolutions averaged (DAAM leaves out 8x8)",
    "ground truth": "outline the defect (cyan) and colour TP/FP/FN pixels",
    "CLIP window": "window side in ViT patches",
    "alpha_seg": "CLIP weight of the fused map, eq. 4: alpha (M_clip_L + M_clip_V) + (1 - alpha) (M_diff_L + M_diff_V)",
    "alpha_cls": "CLIP weight of the image score, eq. 9: alpha s_clip + (1 - alpha) s_diff",
    "threshold": "predicted mask = fused map >= threshold (the fused colour bar's units; starts at the run's "
                 "pixel F1-max)",
}
#: The explorer's tabs, in order (the words tab is drawn only while it is open).
TABS = ("maps", "words", "branch maps", "score histograms", "compare", "help")
#: How the colour bars read (in the help box).
SCALES = ("Colour bars: attention, CLIP windows and the fused map span the shown map's own min..max, in its "
          "units (the fused bar marks the threshold); branch maps are min-max per map (0..1).")
#: What the image menu shows when the chosen subset is empty (and nothing else is shown).
NONE_LABEL = "none in this run"
_CSS = """<style>
.cfviz-explorer .cfviz-title {font-size: 11px; line-height: 1.25; text-align: center; overflow-wrap: anywhere;}
.cfviz-explorer .widget-tab-contents, .cfviz-explorer .lm-TabPanel-stackedPanel,
.cfviz-explorer .p-TabPanel-stackedPanel {padding: 2px 6px !important;}
.cfviz-explorer .cfviz-help {font-size: 11px; color: #555; line-height: 1.3;}
.cfviz-explorer img {object-fit: contain;}
.cfviz-explorer .widget-html-content {line-height: 1.35;}
.cfviz-explorer .cfviz-legend {font-size: 11px; color: #333; line-height: 1.5; white-space: nowrap;}
.cfviz-explorer .widget-label {min-width: max-content;}
</style>"""


def _swatch(color: str, box: bool = True) -> str:
    if box:
        return (f'<span style="display:inline-block;width:9px;height:9px;border:2px solid {color};'
                f'outline:1px solid #000;margin-right:4px;vertical-align:middle"></span>')
    return (f'<span style="display:inline-block;width:11px;height:11px;background:{color};'
            f'border:1px solid #555;margin-right:4px;vertical-align:middle"></span>')


class AttentionExplorer(ExplorerTabs):
    """Widgets + views; ``widget`` is what a notebook displays.

    Parameters
    ----------
    store, dataset:
        The capture store and the data set of the run.
    predictions:
        Predictions of one category (or a list, one per category), as the run scored them
        (``session.predict(category)``): their branch maps feed the fusion view, their maps and
        scores are what the explorer shows at the run's settings.
    scoring:
        The run's :class:`~cfviz.evaluation.config.ScoringConfig` (``session.spec.scoring``): the
        weights and smoothing at which the predictions were made (default: the defaults).
    alpha, alpha_cls:
        Initial segmentation (eq. 4) and classification (eq. 9) weights; default: the run's.
    sigma:
        Smoothing of the fused map; default: the run's ``scoring.sigma``.
    note:
        Caption of the views (``OFFLINE_NOTE`` for random-weight models).
    cache_size:
        Images kept in memory.
    render_cache_size:
        Encoded panels kept (a view seen before is shown without drawing).
    prefetch:
        Prepare neighbouring timesteps, layers and images in a background thread.
    predict, choices:
        ``predict(category, method, shots=k, seed=s)`` (``session.predict``) and the settings to offer
        (``{"method": [...], "shots": [...], "seed": [...]}``): the explorer then has method, k and
        seed menus (:meth:`from_session` fills both from a notebook session).
    compare_store:
        A second capture store (another run, model or denoiser family): the compare tab can put the same
        image's M_diff_L from both stores side by side (:func:`cfviz.viz.compare.compare_store_maps`).
    """

    @classmethod
    def from_session(cls, session: Any, categories: Sequence[str] | None = None, **kwargs: Any) -> AttentionExplorer:
        """The explorer of a notebook session (:func:`cfviz.notebooks.setup`): its store, data set, scoring,
        note, and menus for every method, k and seed of the run (it opens on the largest k, the first seed).

        >>> explorer = AttentionExplorer.from_session(s)   # doctest: +SKIP
        """
        spec = session.spec
        cats = list(categories or session.categories)
        return cls(session.store, session.dataset, [session.predict(c) for c in cats], scoring=spec.scoring,
                   note=session.note, predict=session.predict,
                   choices={"method": list(spec.methods), "shots": list(spec.shots), "seed": list(spec.seeds)},
                   **kwargs)

    def __init__(self, store: Any, dataset: Any, predictions: Any | Sequence[Any], *, scoring: Any = None,
                 alpha: float | None = None, alpha_cls: float | None = None, sigma: float | None = None,
                 note: str | None = None, cache_size: int = 16, render_cache_size: int = 512,
                 prefetch: bool = True, predict: Callable[..., Any] | None = None,
                 choices: dict[str, Sequence[Any]] | None = None, compare_store: Any = None) -> None:
        import ipywidgets as w

        from cfviz.evaluation.config import ScoringConfig

        self.scoring = ScoringConfig() if scoring is None else scoring
        self.store, self.dataset, self.note = store, dataset, note
        self.sigma = float(self.scoring.sigma if sigma is None else sigma)
        self.predictions = [predictions] if hasattr(predictions, "image_ids") else list(predictions)
        if not self.predictions:
            raise ValueError("predictions is empty; pass session.predict(category) for at least one category")
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, ed.ImageData] = OrderedDict()
        self._cache_size = cache_size
        self._renders: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._render_cache_size = render_cache_size
        self._layers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # colour layers and base images
        self._category: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # category-wide maps (large)
        self._metrics: dict[tuple[Any, ...], dict[str, float]] = {}
        self._blends: OrderedDict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._thresholds: dict[tuple[int, float], float | None] = {}
        self._chosen_threshold: dict[int, float] = {}  # per category: the threshold the slider was set to
        self._bars: dict[str, tuple[float, float]] = {}  # panel -> colour-bar limits on screen
        self._prefetch = prefetch
        self._pending: list[Callable[[], Any]] = []
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._job_lock = threading.Lock()  # held while a prefetch job runs (a setting change waits for it)
        self._quiet = False
        self.draws = 0  # panels drawn (not served from the render cache); tests and benchmarks read it

        def tip(name: str) -> dict[str, Any]:
            return {"tooltip": HELP[name], "style": {"description_width": "initial"}}

        self._predict = predict
        self._categories = [str(getattr(p, "category", "")) for p in self.predictions]
        self._runs: dict[tuple[Any, ...], list[Any]] = {}
        first_p = self.predictions[0]
        self.setting_menus: list[Any] = []
        if predict is not None:
            ch = choices or {}
            key = (first_p.method, int(first_p.shots), int(first_p.seed))
            self._runs[key] = self.predictions
            self.method = w.Dropdown(options=list(dict.fromkeys([*ch.get("method", ()), key[0]])), value=key[0],
                                     description="method", layout=w.Layout(width="170px"), **tip("method"))
            self.shots = w.Dropdown(options=list(dict.fromkeys([*map(int, ch.get("shots", ())), key[1]])), value=key[1],
                                    description="k", layout=w.Layout(width="80px"), **tip("k"))
            self.seed = w.Dropdown(options=list(dict.fromkeys([*map(int, ch.get("seed", ())), key[2]])), value=key[2],
                                   description="seed", layout=w.Layout(width="95px"), disabled=key[1] == 0,
                                   **tip("seed"))
            self.setting_menus = [self.method, self.shots, self.seed]
        self.show = w.Dropdown(options=ed.filter_options(self.predictions), value="all", description="show",
                               layout=w.Layout(width="220px"), **tip("show"))
        self.sort = w.Dropdown(options=list(ed.SORTS.items()), value="score-", description="sort",
                               layout=w.Layout(width="190px"), **tip("sort"))
        self.image = w.Dropdown(options=ed.browse_choices(self.predictions), value=ed.default_choice(self.predictions),
                                description="image", layout=w.Layout(width="400px"), **tip("image"))
        first = self.data
        self.timestep = w.SelectionSlider(options=[(f"{t:g}", i) for i, t in enumerate(first.timesteps)],
                                          value=0, description="timestep", continuous_update=True,
                                          layout=w.Layout(width="280px"), **tip("timestep"))
        self.layer = w.Dropdown(options=ed.layer_options(first), value=ed.ALL_LAYERS, description="layer",
                                layout=w.Layout(width="260px"), **tip("layer"))
        self.token = w.Dropdown(options=first.tokens or [0], description="token", layout=w.Layout(width="190px"),
                                **tip("token"))
        self.opacity = w.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     layout=w.Layout(width="200px"), **tip("opacity"))
        self.show_mask = w.Checkbox(value=True, description="ground truth", indent=False,
                                    layout=w.Layout(width="112px"), **tip("ground truth"))
        scales = ed.window_scales(first) or [0]
        self.clip_scale = w.Dropdown(options=scales, description="CLIP window", layout=w.Layout(width="170px"),
                                     **tip("CLIP window"))
        run_seg, run_cls = float(self.scoring.alpha_seg), float(self.scoring.alpha_cls)
        self.alpha = w.FloatSlider(value=run_seg if alpha is None else alpha, min=0.0, max=1.0, step=0.05,
                                   description="alpha_seg", readout_format=".2f", layout=w.Layout(width="228px"),
                                   **tip("alpha_seg"))
        self.alpha_cls = w.FloatSlider(value=run_cls if alpha_cls is None else alpha_cls, min=0.0, max=1.0,
                                       step=0.05, description="alpha_cls", readout_format=".2f",
                                       layout=w.Layout(width="228px"), **tip("alpha_cls"))
        self.alpha.disabled = self.alpha_cls.disabled = not all(self.fusable(p) for p in self.predictions)
        lo, hi = self._map_range()
        self.threshold = w.FloatSlider(value=lo, min=lo, max=hi, step=(hi - lo) / 400, description="threshold",
                                       readout_format=".3f", layout=w.Layout(width="240px"), **tip("threshold"))
        self.f1_button = w.Button(description="F1-max", tooltip="set the threshold to the pixel F1-max of the "
                                  "category's maps at this alpha_seg", layout=w.Layout(width="74px"))
        self.f1_button.on_click(lambda _: self._set_f1_threshold())

        self.header = w.HTML()
        self.error = w.HTML()
        self.message = w.HTML()
        self.on_screen = w.HTML()
        self.on_screen.add_class("cfviz-help")
        self.on_screen.add_class("cfviz-on-screen")
        self.metrics = w.HTML(layout=w.Layout(min_height="20px"))
        self.metrics.add_class("cfviz-metrics")
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
        self.histograms = w.HTML()
        self.histograms.add_class("cfviz-histograms")
        sides = ed.layer_sides(first)
        self.sides = w.SelectMultiple(options=[(f"{x}x{x}", x) for x in sides], value=tuple(sides),
                                      description="resolutions", rows=max(1, min(4, len(sides))),
                                      layout=w.Layout(width="200px"), **tip("resolutions"))
        self.word_panels: list[_Panel] = []
        self.word_box = w.HBox(layout=w.Layout(flex_flow="row wrap", width="1000px"))
        self.word_bar = w.HTML()
        self.word_caption = w.HTML()
        self.word_caption.add_class("cfviz-help")
        # compare: the map on screen beside another alpha_seg's or another method / k / seed's (on request:
        # a matplotlib figure by cfviz.viz.compare.compare_maps, one colour scale and the difference)
        other = [("another alpha_seg", "alpha")]
        if predict is not None:
            other.append(("another method, k, seed", "setting"))
        self.compare_store = compare_store
        if compare_store is not None:
            other.append(("M_diff_L from another store", "store"))
        self.compare_what = w.Dropdown(options=other, value="alpha", description="beside it",
                                       layout=w.Layout(width="260px"), style={"description_width": "initial"})
        self.compare_alpha = w.FloatSlider(value=0.75, min=0.0, max=1.0, step=0.05, description="alpha_seg B",
                                           readout_format=".2f", layout=w.Layout(width="260px"),
                                           style={"description_width": "initial"})
        settings = [(f"{m}, k = {k}, seed {sd}", (m, int(k), int(sd))) for m in (choices or {}).get("method", ())
                    for k in (choices or {}).get("shots", ()) for sd in (choices or {}).get("seed", ())]
        self.compare_setting = w.Dropdown(options=settings or [("(none)", None)], description="setting B",
                                          layout=w.Layout(width="300px"), style={"description_width": "initial"})
        self.compare_button = w.Button(description="compare", layout=w.Layout(width="90px"),
                                       tooltip="draw the map on screen (A) beside B on one colour scale, and B - A")
        self.compare_button.on_click(lambda _: self.show_comparison())
        self.compare_view = w.Image(format="png", layout=w.Layout(max_width="1000px"))
        self.compare_caption = w.HTML()
        self.compare_caption.add_class("cfviz-help")
        # the views as before (tests, notebooks): the attention map and the fused map
        self.attention_view, self.fusion_view = self.attention_panel.image, self.fused_panel.image

        self._controls = (*self.setting_menus, self.show, self.sort, self.image, self.timestep, self.layer, self.token,
                          self.opacity, self.show_mask, self.clip_scale, self.alpha, self.alpha_cls, self.threshold,
                          self.sides)
        for ctl in self._controls:
            ctl.observe(self._changed, names="value")
        help_box = w.VBox([w.HTML(" · ".join(f"<b>{n}</b>: {html.escape(h)}" for n, h in HELP.items())
                                       + f"<br>{html.escape(SCALES)}")])
        help_box.children[0].add_class("cfviz-help")
        self.tabs = w.Tab([
            w.VBox([w.HBox([self.attention_panel.box, self.attention_bar, w.HTML(layout=w.Layout(width="30px")),
                            self.clip_panel.box, self.clip_bar, self.window_legend]),
                    w.HBox([self.image_panel.box, self.gt_panel.box, self.fused_panel.box, self.fusion_bar,
                            w.HTML(layout=w.Layout(width="44px")), self.pred_panel.box, self.outcome_legend])]),
            w.VBox([w.HBox([self.sides, self.word_caption]), w.HBox([self.word_box, self.word_bar])]),
            w.HBox([*(p.box for p in self.branch_panels.values()), self.branch_bar]),
            self.histograms,
            w.VBox([w.HBox([self.compare_what, self.compare_alpha, self.compare_setting, self.compare_button]),
                    self.compare_caption, self.compare_view]),
            help_box,
        ])
        for k, name in enumerate(TABS):
            self.tabs.set_title(k, name)
        self.tabs.observe(self._changed, names="selected_index")
        self.body = w.VBox([self.header, self.tabs, self.metrics, self.on_screen])
        self.widget = w.VBox([
            w.HTML(_CSS),
            w.HBox([*self.setting_menus, self.show, self.sort, self.image]),
            w.HBox([self.timestep, self.layer, self.token, self.clip_scale]),
            w.HBox([self.opacity, self.show_mask, self.alpha, self.alpha_cls, self.threshold, self.f1_button]),
            self.error,
            self.message,
            self.body,
        ])
        self.widget.add_class("cfviz-explorer")
        self._reset_threshold()
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> tuple[Any, int]:
        if self.image.value is None:
            raise LookupError(f"the image menu is empty ({self.show.value}: {NONE_LABEL}); choose another 'show'")
        j, i = self.image.value
        return self.predictions[j], i

    def _load(self, j: int, i: int) -> ed.ImageData:
        p = self.predictions[j]
        image_id = p.image_ids[i]
        return self._cached(image_id, lambda: ed.load_image_data(self.store, self.dataset, image_id, p),
                            self._cache_size, self._cache)

    @property
    def data(self) -> ed.ImageData:
        """The current image's data (read from the store once, then cached)."""
        if self.image.value is None:
            raise LookupError(f"the image menu is empty ({self.show.value}: {NONE_LABEL}); choose another 'show'")
        return self._load(*self.image.value)

    @property
    def state(self) -> dict[str, Any]:
        """The view state on screen: image, layer (module path), step, token, opacity, ground truth,
        CLIP window scale, both weights and the pixel threshold."""
        p, i = self.current
        return {"image_id": p.image_ids[i], "layer": self.layer.value, "step": int(self.timestep.value),
                "token": self.token.value, "opacity": float(self.opacity.value),
                "show_mask": bool(self.show_mask.value), "clip_scale": self.clip_scale.value,
                "alpha": float(self.alpha.value), "alpha_cls": float(self.alpha_cls.value),
                "threshold": float(self.threshold.value)}

    def at_run_settings(self) -> bool:
        """Whether both weights and the smoothing are the run's (the numbers on screen are then the run's)."""
        return (float(self.alpha.value) == float(self.scoring.alpha_seg)
                and float(self.alpha_cls.value) == float(self.scoring.alpha_cls)
                and self.sigma == float(self.scoring.sigma))

    def go(self, target: Any) -> None:
        """Show an image: its id, or a row of :func:`cfviz.analysis.failures.rank_failures` (anything
        with an ``image_id``). The menu is reset to all images when the current filter hides it."""
        image_id = target if isinstance(target, str) else target["image_id"]
        value = next(((j, i) for j, p in enumerate(self.predictions) for i, x in enumerate(p.image_ids)
                      if x == image_id), None)
        if value is None:
            raise KeyError(f"image_id {image_id!r} is not among the explorer's predictions")
        if value not in [v for _, v in self.image.options]:
            self.show.value = "all"
        self.image.value = value

    # ------------------------------------------------------------------ run-consistent numbers
    def _index(self, p: Any) -> int:
        return next(j for j, q in enumerate(self.predictions) if q is p)

    def _run_seg(self) -> float | None:
        """The run's alpha_seg, or None when the smoothing differs from the run's (no run maps then)."""
        return float(self.scoring.alpha_seg) if self.sigma == float(self.scoring.sigma) else None

    def category_scores(self, p: Any | None = None, alpha_cls: float | None = None) -> np.ndarray:
        """The category's image scores at ``alpha_cls`` (default: the one on screen; the run's own at the
        run's weight)."""
        p = self.current[0] if p is None else p
        a = float(self.alpha_cls.value if alpha_cls is None else alpha_cls)
        return self._cached(("scores", self._index(p), a),
                            lambda: ed.category_scores(p, a, run_alpha_cls=float(self.scoring.alpha_cls),
                                                   scoring=self.scoring))

    def category_maps(self, p: Any | None = None, alpha: float | None = None) -> np.ndarray:
        """The category's final maps at ``alpha`` (default: the ``alpha_seg`` on screen; the run's own
        maps at the run's weight)."""
        p = self.current[0] if p is None else p
        a = float(self.alpha.value if alpha is None else alpha)
        j = self._index(p)
        parts = None
        if a != self._run_seg() and ed.fusable(getattr(p, "components", None) or {}):
            parts = self._cached(("category-parts", j, self.sigma), lambda: ed.fusion_parts(p.components, self.sigma),
                                 2 * len(self.predictions) + 4, self._category)
        # a category's maps are large (N x S x S): a few are kept, apart from the per-image layers
        return self._cached(("category-maps", j, a), lambda: ed.category_maps(
            p, a, sigma=self.sigma, run_alpha_seg=self._run_seg(), parts=parts), 2 * len(self.predictions) + 4,
            self._category)

    def _f1_threshold(self, p: Any, alpha: float | None = None) -> float | None:
        """The pixel F1-max threshold of the category's maps at ``alpha`` (default: the slider's)."""
        a = float(self.alpha.value if alpha is None else alpha)
        key = (self._index(p), a)
        if key not in self._thresholds:
            try:
                masks = getattr(p, "masks", None)
                if masks is None or not np.asarray(masks).any():
                    raise ValueError("no ground-truth masks with a defect: no pixel threshold")
                self._thresholds[key] = ed.prediction_threshold(p, self.category_maps(p, a))
            except ValueError:
                self._thresholds[key] = None
        return self._thresholds[key]

    def _map_range(self) -> tuple[float, float]:
        """Threshold slider limits: every category's maps fit (fused maps of any alpha lie between the
        smaller and the larger branch sum, so 0 .. the largest branch sum covers every weight)."""
        import math

        maps = [np.asarray(p.maps) for p in self.predictions if getattr(p, "maps", None) is not None]
        lo = min([0.0, *(float(np.nanmin(m)) for m in maps)])
        hi = max([lo, *(float(np.nanmax(m)) for m in maps)])
        for p in self.predictions:
            for keys in (ed.CLIP_KEYS, ed.DIFF_KEYS):
                comps = getattr(p, "components", None) or {}
                present = [np.asarray(comps[k]) for k in keys if k in comps]
                if present:
                    hi = max(hi, float(np.nanmax(np.sum(present, axis=0))))
        lo, hi = math.floor(lo * 1e3) / 1e3, math.ceil(hi * 1e3) / 1e3
        return lo, hi if hi > lo else lo + 1.0

    def _reset_threshold(self) -> None:
        """The threshold of the current category: the one chosen for it, else the run's pixel F1-max."""
        if self.image.value is None:
            return
        p, _ = self.current
        j = self._index(p)
        value = self._chosen_threshold.get(j)
        if value is None:
            value = self._f1_threshold(p, self._run_seg() if self._run_seg() is not None else self.alpha.value)
        if value is not None:
            self._quiet = True
            try:
                self.threshold.value = min(max(value, self.threshold.min), self.threshold.max)
            finally:
                self._quiet = False

    def _set_f1_threshold(self) -> None:
        p, _ = self.current
        value = self._f1_threshold(p)
        if value is not None:
            self.threshold.value = min(max(value, self.threshold.min), self.threshold.max)

    def threshold_source(self) -> str:
        """Where the threshold on screen comes from: the pixel F1-max at some alpha_seg, or set by hand."""
        p, _ = self.current
        thr = float(self.threshold.value)
        for a in dict.fromkeys([float(self.alpha.value), self._run_seg()]):
            if a is None:
                continue
            f1 = self._thresholds.get((self._index(p), a))
            if f1 is not None and abs(f1 - thr) <= self.threshold.step / 2 + 1e-12:
                return ("pixel F1-max of the category" + (f" at alpha_seg = {a:.2f}" if self.fusable(p) else ""))
        return "set by hand"

    @staticmethod
    def fusable(p: Any) -> bool:
        """Whether ``p`` carries both branches (CLIPFusion): only then do the two weights apply."""
        return ed.fusable(getattr(p, "components", None) or {})

    # ------------------------------------------------------------------ figures for export (matplotlib)
    def attention_figure(self, note: str | None = None) -> Any:
        """The attention view in the current state (every control's value), as a matplotlib Figure."""
        st = self.state
        return ed.attention_figure(self.data, layer=st["layer"], step=st["step"], token=st["token"],
                                   opacity=st["opacity"], show_mask=st["show_mask"], clip_scale=st["clip_scale"],
                                   note=self.note if note is None else note)

    def fusion_figure(self, note: str | None = None) -> Any:
        """The fusion view (branch maps and the fused map at the current alpha_seg) as a matplotlib Figure."""
        st = self.state
        return ed.fusion_figure(self.data, st["alpha"], sigma=self.sigma, opacity=st["opacity"],
                                show_mask=st["show_mask"], metrics=self.live_metrics(),
                                note=self.note if note is None else note)

    def screen_figure(self) -> Any:
        """The explorer's view as a matplotlib Figure for a paper, with everything that makes it honest.

        Each panel is the very image the browser shows (the same JPEG decoded, drawn without
        resampling) under its on-screen title, with its colour bar in the same limits (the fused
        map's with the threshold marked), the window-rank and TP/FP/FN legends, both score
        histograms, the header and metrics line above and the settings line and the note below.
        Use :meth:`save_view` to write it as PNG and PDF.
        """
        from cfviz.viz import explorer_export

        return explorer_export.screen_figure(self)

    def save_view(self, name: str = "explorer_view", out_dir: Any = "figures",
                  formats: Sequence[str] = ("png", "pdf")) -> list[Any]:
        """Write :meth:`screen_figure` to ``out_dir/name.png`` and ``.pdf``; return the paths."""
        from cfviz.viz.style import save_figure

        return save_figure(self.screen_figure(), name, out_dir, formats)

    def export_all(self, out_dir: Any = "figures/explorer_export", *, show: str | None = None, dpi: float = 110) -> Any:
        """Every image of the menu (or of ``show``, e.g. ``"wrong"``) as a PNG of :meth:`screen_figure`,
        with an ``index.html`` that opens without Jupyter; returns the index's path. The view's other
        settings (layer, timestep, weights, threshold, ...) are those on screen."""
        from cfviz.viz import explorer_export

        return explorer_export.export_all(self, out_dir, show=show, dpi=dpi)

    def live_metrics(self) -> dict[str, float]:
        """The current image's numbers at the weights on screen (cached per image and weights)."""
        p, _ = self.current
        return self._metrics_for(p, self.data, float(self.alpha.value), float(self.alpha_cls.value))

    def _metrics_for(self, p: Any, d: ed.ImageData, alpha: float, alpha_cls: float | None = None) -> dict[str, float]:
        alpha_cls = float(self.alpha_cls.value) if alpha_cls is None else alpha_cls
        key = (d.image_id, alpha, alpha_cls)
        if key not in self._metrics:
            final = self._final(p, d, alpha)
            scores = self.category_scores(p, alpha_cls)
            if ed.fusable(d.components):
                self._metrics[key] = ed.live_metrics(d, alpha, alpha_cls=alpha_cls, sigma=self.sigma, predictions=p,
                                                     fused=final, scores=scores)
            else:  # one method's own map and score: no weights
                out = {"score": float(scores[p.image_ids.index(d.image_id)])}
                if final is not None:
                    out["map_max"] = float(final.max())
                auc = ed.category_image_auroc(p, scores)
                if auc is not None:
                    out["category_image_auroc"] = auc
                self._metrics[key] = out
        return self._metrics[key]

    def _fused(self, d: ed.ImageData, alpha: float) -> np.ndarray:
        """The fused map at ``alpha`` from the image's smoothed branch sums (smoothed once per image)."""
        clip, diff = self._cached(("fusion-parts", d.image_id, self.sigma),
                                  lambda: ed.fusion_parts(d.components, self.sigma))
        return blend(clip, diff, float(alpha))

    def _final(self, p: Any, d: ed.ImageData, alpha: float) -> np.ndarray | None:
        """The map the fused panel shows and the predicted mask thresholds: the run's own map
        (``Predictions.maps``) at the run's alpha_seg and smoothing, else the fused map at ``alpha``;
        a method without both branches: its own map."""
        both = ed.fusable(d.components)
        if not both or (float(alpha) == self._run_seg() and d.prediction is not None):
            return d.prediction
        return self._fused(d, alpha)

    # ------------------------------------------------------------------ array rendering
    def _cached(self, key: Any, make: Callable[[], Any], limit: int = 160, store: OrderedDict[Any, Any] | None = None
                ) -> Any:
        """``make()`` kept under ``key`` in ``store`` (default the per-image layers), the oldest of more
        than ``limit`` entries dropped: every cache of the explorer (image data, renders, layers)."""
        store = self._layers if store is None else store
        with self._lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
        value = make()
        with self._lock:
            store[key] = value
            while len(store) > limit:
                store.popitem(last=False)
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

    def _fused_colors(self, p: Any, d: ed.ImageData, alpha: float) -> Any:
        """``(colours, lo, hi)`` of the final map at ``alpha``: min-max of the map, in its own units."""
        shape = self._shape(d, SMALL)
        return self._cached(("fused", d.image_id, alpha), lambda: rd.heat_colors(self._final(p, d, alpha), shape))

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
        if self.image.value is None:  # the chosen subset is empty: say so, show nothing else
            what = dict((v, k) for k, v in self.show.options).get(self.show.value, self.show.value)
            self.message.value = (f'<div class="cfviz-none" style="font-size:13px;margin:8px 0"><b>{html.escape(what)}'
                                  f"</b>: {NONE_LABEL} (the image menu's outcomes are taken at each category's image "
                                  "F1-max threshold of the run's scores).</div>")
            self.body.layout.display = "none"
            return
        if self.message.value:
            self.message.value = ""
            self.body.layout.display = None
        p, i = self.current
        d = self.data
        st = self.state
        op, gt = st["opacity"], st["show_mask"]
        has_gt = gt and d.mask is not None
        self._attention_view(d, st, op, gt)
        self._clip_view(d, st, op, gt)
        self._fusion_views(p, d, st, op, gt, has_gt)
        self._texts(p, i, d, st)
        # category-wide work (a histogram, the pixel F1-max at a new alpha_seg: a sort of every pixel) only
        # while its tab is open, so that it never delays the panels
        if self.tabs.selected_index == TABS.index("score histograms"):
            self._histograms(p)
        if self.tabs.selected_index == TABS.index("words"):
            self._words_view(d, st, op, gt)
        self._schedule_prefetch(st)

    def _texts(self, p: Any, i: int, d: ed.ImageData, st: dict[str, Any]) -> None:
        """Header, metrics line, caption and the on-screen settings line: every number with its settings."""
        seg, cls, run = st["alpha"], st["alpha_cls"], self.scoring
        fusable = ed.fusable(d.components)
        metrics = self.live_metrics()
        run_auc = ed.category_image_auroc(p, p.scores)

        def value(key: str, text: str) -> str:
            return (f'<span class="cfviz-metric" data-metric="{key}" data-value="{metrics[key]!r}">'
                    f"{html.escape(text)}</span>")

        shown = ed.metric_labels(metrics)
        parts = []
        if "score" in metrics:
            parts.append("<b>image score</b>" + (f" (eq. 9, alpha_cls = {cls:.2f})" if fusable else "")
                         + f": {value('score', shown['score'])}")
        if "map_max" in metrics:
            parts.append("<b>map max</b>" + (f" (eq. 4, alpha_seg = {seg:.2f})" if fusable else "")
                         + f": {value('map_max', shown['map max'])}")
        if "pixel_auroc" in metrics:
            parts.append(f"<b>pixel AUROC</b> of this image: {value('pixel_auroc', shown['pixel AUROC'])}")
        if "category_image_auroc" in metrics:
            same = not fusable or cls == float(run.alpha_cls)
            where = ("= results.csv" if same else
                     f"the run's, at alpha_cls = {float(run.alpha_cls):.2f}: {100 * run_auc:.1f} %" if run_auc is not None
                     else "")
            parts.append("<b>category image AUROC</b>" + (f" (alpha_cls = {cls:.2f})" if fusable else "")
                         + f": {value('category_image_auroc', shown['category image AUROC'])} ({where})")
        self.metrics.value = " · ".join(parts)
        scores = self.category_scores(p, cls)
        head = (f"<b>{html.escape(d.image_id)}</b> · {html.escape(d.defect_type)} · "
                f"{'anomalous' if d.label else 'normal'}")
        if getattr(p, "scores", None) is not None:
            at = SimpleNamespace(labels=p.labels, scores=scores)
            head += (f" · image score {float(scores[i]):.3f}" + (f" at alpha_cls = {cls:.2f}" if fusable else "")
                     + f" ({ed.outcomes(at)[i]} at its "
                     f"image F1-max threshold {ed.image_threshold(at):.3f})")
        self.header.value = head
        self.caption.value = html.escape(ed.layer_caption(st["layer"]) + "." + (f" {self.note}" if self.note else ""))
        # the caption (layer, note) ends the settings line: one line less between the controls and the panels
        method = str(getattr(p, "method", "?"))
        settings = (f"alpha_seg = {seg:.2f} (eq. 4), alpha_cls = {cls:.2f} (eq. 9), sigma = {self.sigma:g}"
                    if fusable else f"{html.escape(method)}'s own map and score (no weights)")
        run_line = ("the run's: numbers = results.csv" if self.at_run_settings() or not fusable else
                    f"the run's: alpha_seg = {float(run.alpha_seg):.2f}, alpha_cls = {float(run.alpha_cls):.2f}, "
                    f"sigma = {float(run.sigma):g}; numbers at other weights are not the run's")
        thr = st["threshold"]
        self.on_screen.value = (
            f"<b>on screen</b>: {html.escape(method)}, "
            f"{html.escape(str(getattr(p, 'category', '?')))}, k = {getattr(p, 'shots', '?')} "
            f"(references: seed {getattr(p, 'seed', '?')}) · {settings} ({run_line}) · predicted mask: "
            f"map >= {thr:.3g} ({html.escape(self.threshold_source())}) · colours: min..max per map · "
            f"{self.caption.value}")

    def _attention_view(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> None:
        layer, step, token = st["layer"], st["step"], st["token"]
        colors, lo, hi = self._attention_colors(d, layer, step, token)
        tok = token if isinstance(token, str) else d.tokens[int(token)] if d.tokens else f"#{token}"
        self._show(self.attention_panel, *self._attention_job(d, st, op, gt))
        self.attention_panel.set_title(f"attention to '{html.escape(str(tok))}', t = {d.timesteps[step]:g}<br>"
                                       f"{html.escape(ed.layer_label(layer))}", ed.layer_caption(layer))
        self.layer.tooltip = f"{HELP['layer']}; {ed.layer_caption(layer)}"
        self._bars["attention"] = (lo, hi)
        self.attention_bar.value = _colorbar(self._css_height(d, BIG), f"{hi:.3g}", f"{lo:.3g}", "cross-attention")

    def _clip_view(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> None:
        scales = ed.window_scales(d)
        if not scales:
            self.clip_panel.set_title("no CLIP window scores stored")
            self._show(self.clip_panel, ("win-none", d.image_id, gt), lambda: self._compose(d, BIG, None, op, gt))
            self.clip_bar.value, self.window_legend.value = "", ""
            self._bars.pop("clip", None)
            return
        s = st["clip_scale"] if st["clip_scale"] in scales else scales[0]
        _, lo, hi = self._window_colors(d, s)
        tops = ed.top_windows(d, s, TOP_K)
        self._show(self.clip_panel, *self._clip_job(d, s, op, gt))
        self.clip_panel.set_title(f"CLIP windows {s}x{s} patches<br>mean window score per patch")
        self._bars["clip"] = (lo, hi)
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
        height = self._css_height(d, SMALL)
        final = self._final(p, d, alpha)
        thr = st["threshold"]
        if final is not None:
            _, lo, hi = self._fused_colors(p, d, alpha)
            self._show(self.fused_panel, *self._fused_job(p, d, alpha, op, gt))
            fusable = ed.fusable(d.components)
            self.fused_panel.set_title(f"fused, alpha_seg = {alpha:.2f}<br>(eq. 4, sigma = {self.sigma:g})" if fusable
                                       else f"{html.escape(str(getattr(p, 'method', '')))} map")
            self._bars["fused"] = (lo, hi)
            # no side label: the threshold's mark and number take its place (units: the map's own values)
            self.fusion_bar.value = _colorbar(height, f"{hi:.3g}", f"{lo:.3g}", "",
                                              marks=[threshold_mark(thr, lo, hi)])
        else:
            self._show(self.fused_panel, ("fused-none", shape), lambda: rd.placeholder(shape))
            self.fused_panel.set_title("fused (needs both branches)")
            self.fusion_bar.value = ""
        self._prediction_view(p, d, alpha, thr, op, has_gt)
        self.branch_bar.value = _colorbar(height, "1", "0", "min-max per map")

    def _prediction_view(self, p: Any, d: ed.ImageData, alpha: float, thr: float, op: float, has_gt: bool) -> None:
        shape = self._shape(d, SMALL)
        if self._final(p, d, alpha) is None:
            self._show(self.pred_panel, ("pred-none", shape), lambda: rd.placeholder(shape))
            self.pred_panel.set_title("predicted mask (needs a map)")
            self.outcome_legend.value = ""
            return
        self._show(self.pred_panel, *self._pred_job(p, d, alpha, thr, op, has_gt))
        fusable = ed.fusable(d.components)
        self.pred_panel.set_title(f"predicted: &ge; {thr:.3g}<br>(alpha_seg = {alpha:.2f})" if fusable
                                  else f"predicted mask<br>map &ge; {thr:.3g}", self.threshold_source())
        if has_gt:
            self.outcome_legend.value = (f'<div class="cfviz-legend"><b>predicted mask</b>: map &ge; {thr:.3g}<br>'
                                         "(the mark on the fused bar)<br>" + "<br>".join(
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

    def _fused_job(self, p: Any, d: ed.ImageData, alpha: float, op: float, gt: bool) -> tuple[Any, Any]:
        colors = self._fused_colors(p, d, alpha)[0]
        return ("fused", d.image_id, alpha, op, gt), lambda: self._compose(d, SMALL, colors, op, gt)

    def _pred_job(self, p: Any, d: ed.ImageData, alpha: float, thr: float, op: float, has_gt: bool) -> tuple[Any, Any]:
        shape = self._shape(d, SMALL)
        final = self._final(p, d, alpha)

        def draw() -> np.ndarray:
            pred = rd.resize_map(final, shape) >= thr
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
        return ("pred", d.image_id, alpha, thr, has_gt, max(op, 0.5)), draw

    def _encoded(self, key: tuple[Any, ...], draw: Callable[[], np.ndarray]) -> bytes:
        """The panel's image bytes from the render cache, or drawn and encoded now (and kept)."""
        def make() -> bytes:
            data = rd.encode(draw())
            with self._lock:
                self.draws += 1
            return data

        return self._cached(key, make, self._render_cache_size, self._renders)

    def _css_height(self, d: ed.ImageData, css: int) -> int:
        h, w = d.image.shape[:2]
        return css if h >= w else max(1, round(css * h / w))

    # ------------------------------------------------------------------ events
    def _changed(self, change: Any) -> None:
        if self._quiet:
            return
        try:
            if change["owner"] in self.setting_menus:
                self._setting_changed()
            if change["owner"] in (self.show, self.sort):
                self._update_image_menu()
            if change["owner"] is self.image and self.image.value is not None:
                self._image_changed()
            if change["owner"] is self.threshold and self.image.value is not None:
                self._chosen_threshold[self._index(self.current[0])] = float(self.threshold.value)
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a widget callback's error is invisible in JupyterLab otherwise
            import traceback

            self.error.value = (f'<pre style="color:#b00;font-size:11px">{html.escape(repr(exc))}\n'
                                f"{html.escape(traceback.format_exc(limit=-3))}</pre>")
            raise
        if self.error.value:
            self.error.value = ""

    def _setting_changed(self) -> None:
        """Another method, k or seed: its predictions (scored from the store at the run's settings, once per
        setting), every cache dropped, the menus rebuilt; the same image stays on screen when it can."""
        key = (self.method.value, int(self.shots.value), int(self.seed.value))  # k = 0: the seed draws nothing
        self.seed.disabled = key[1] == 0
        if key not in self._runs:
            self.message.value = f"<i>scoring {html.escape(key[0])}, k = {key[1]}, seed {key[2]} from the store ...</i>"
            self._runs[key] = [self._predict(c, key[0], shots=key[1], seed=key[2]) for c in self._categories]
            self.message.value = ""
        keep = self.state["image_id"] if self.image.value is not None else None
        with self._job_lock, self._lock:  # no prefetch job may write the old setting's views into the caches
            self.predictions = self._runs[key]
            for cache in (self._cache, self._renders, self._layers, self._category, self._metrics, self._blends,
                          self._thresholds, self._chosen_threshold):
                cache.clear()
            self._pending = []
        for panel in (self.attention_panel, self.clip_panel, self.image_panel, self.gt_panel, self.fused_panel,
                      self.pred_panel, *self.branch_panels.values(), *self.word_panels):
            panel.key = None
        self._quiet = True
        try:
            lo, hi = self._map_range()
            self.threshold.max = max(hi, self.threshold.min)
            self.threshold.min, self.threshold.max, self.threshold.step = lo, hi, (hi - lo) / 400
            self.alpha.disabled = self.alpha_cls.disabled = not all(self.fusable(p) for p in self.predictions)
            self.show.options = ed.filter_options(self.predictions)
            self.show.value = "all"
            self.image.options = ed.browse_choices(self.predictions, sort=self.sort.value)
            values = [v for _, v in self.image.options]
            found = next(((j, i) for j, p in enumerate(self.predictions) for i, x in enumerate(p.image_ids)
                          if x == keep), None)
            self.image.value = found if found in values else ed.default_choice(self.predictions)
        finally:
            self._quiet = False
        self._image_changed()

    def _update_image_menu(self) -> None:
        options = ed.browse_choices(self.predictions, sort=self.sort.value, show=self.show.value)
        keep = self.image.value
        self._quiet = True
        try:  # an empty subset is said to be empty, never replaced by all images
            self.image.options = options or [(NONE_LABEL, None)]
            values = [v for _, v in self.image.options]
            self.image.value = keep if keep in values else values[0]
        finally:
            self._quiet = False
        if self.image.value != keep and self.image.value is not None:
            self._image_changed()

    def _image_changed(self) -> None:
        self._reset_threshold()
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
            sides = [(f"{x}x{x}", x) for x in ed.layer_sides(d)]
            if tuple(self.sides.options) != tuple(sides):
                chosen = [x for x in self.sides.value if x in [v for _, v in sides]]
                self.sides.options = sides
                self.sides.value = tuple(chosen or [v for _, v in sides])
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
        if not self._prefetch or self.image.value is None:
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
        p = self.predictions[j]
        if self._final(p, d, st["alpha"]) is not None:
            self._metrics_for(p, d, st["alpha"], st["alpha_cls"])
            jobs.append(self._fused_job(p, d, st["alpha"], op, gt))
            thr = self._chosen_threshold.get(j) if j != self._index(self.current[0]) else st["threshold"]
            thr = self._f1_threshold(p, self._run_seg()) if thr is None and self._run_seg() is not None else thr
            if thr is not None:
                jobs.append(self._pred_job(p, d, st["alpha"], thr, op, has_gt))
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
                    with self._job_lock:
                        job()
                except Exception:  # noqa: BLE001 - a prefetch is only a guess; the view computes it again
                    pass


def explore(store: Any, dataset: Any, predictions: Any | Sequence[Any], **kwargs: Any) -> Any:
    """Build an :class:`AttentionExplorer` and return its widget (display it in a notebook)."""
    return AttentionExplorer(store, dataset, predictions, **kwargs).widget
