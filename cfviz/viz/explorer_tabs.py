"""The attention explorer's extra tabs (:mod:`cfviz.viz.explorer`): words, score histograms, compare.

A mixin of :class:`~cfviz.viz.explorer.AttentionExplorer`, kept apart so that each module stays small:

* words: one panel per recorded prompt word at the timestep and layer on screen (or the mean over the
  resolutions chosen), on one colour scale (DAAM's word maps, prompt-to-prompt's per-token view);
* score histograms: normal vs anomalous image scores (at ``alpha_cls``) and pixel scores (at
  ``alpha_seg``) with the F1-max thresholds (the run's metric functions) and the threshold on screen;
* compare: the map on screen beside another ``alpha_seg`` or another method / k / seed, by
  :func:`cfviz.viz.compare.compare_maps` (one colour scale, and the difference); or the image's M_diff_L
  in this run's store beside another store's (another run, model or family), by
  :func:`cfviz.viz.compare.compare_store_maps`.

Each is drawn only while its tab is open (the compare figure on request), so none delays the panels.

>>> sorted(m for m in vars(ExplorerTabs) if not m.startswith("__"))
['_histograms', '_words_view', 'comparison_figure', 'histogram_data', 'show_comparison']
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from cfviz.viz import explore_data as ed
from cfviz.viz import render as rd


class ExplorerTabs:
    """Words, histograms and compare views of :class:`~cfviz.viz.explorer.AttentionExplorer`."""

    def _histograms(self, p: Any) -> None:
        """Normal vs anomalous image scores (at alpha_cls) and pixel scores (at alpha_seg), thresholds marked."""
        from cfviz.viz.score_hist import histogram_svg

        svgs = [histogram_svg(*h["counts"], h["thresholds"], title=h["title"], xlabel=h["xlabel"], width=360,
                              height=170) for h in self.histogram_data(p)]
        self.histograms.value = "".join(f'<div style="display:inline-block;margin-right:16px">{svg}</div>'
                                        for svg in svgs) or "no histogram: the category has one class only"

    def histogram_data(self, p: Any | None = None) -> list[dict[str, Any]]:
        """The two histograms of the view (counts, thresholds, titles), for the screen and the export."""
        from cfviz.metrics import image_metrics

        p = self.current[0] if p is None else p
        seg, cls = float(self.alpha.value), float(self.alpha_cls.value)
        out = []
        scores = self.category_scores(p)
        labels = np.asarray(p.labels)
        if len(set(labels.tolist())) == 2:
            thr = self._cached(("image-f1", self._index(p), cls),
                               lambda: float(image_metrics(labels, scores)["image_f1_threshold"]))
            out.append({"counts": self._cached(("hist-image", self._index(p), cls),
                                               lambda: ed.score_histogram(scores, labels, bins=20)),
                        "thresholds": {"F1-max": thr}, "xlabel": f"image score (eq. 9, alpha_cls = {cls:.2f})" if self.fusable(p)
                        else f"image score ({p.method})",
                        "title": f"image scores, {getattr(p, 'category', '')} (n = {len(labels)})"})
        masks = getattr(p, "masks", None)
        if masks is not None and np.asarray(masks).any():
            maps = self.category_maps(p)
            f1 = self._f1_threshold(p)
            thresholds = {"threshold": float(self.threshold.value)}
            if f1 is not None:
                thresholds["F1-max"] = f1
            out.append({"counts": self._cached(("hist-pixel", self._index(p), seg),
                                               lambda: ed.score_histogram(maps, np.asarray(masks), bins=40)),
                        "thresholds": thresholds, "xlabel": f"fused map value (eq. 4, alpha_seg = {seg:.2f})" if self.fusable(p)
                        else f"map value ({p.method})",
                        "title": f"pixel scores ({np.asarray(masks).size:,} pixels)"})
        return out

    def comparison_figure(self) -> Any:
        """The map on screen (A: the fused map at the alpha_seg on screen, or the method's own map) beside
        B (another alpha_seg, or the same image under another method / k / seed) by
        :func:`cfviz.viz.compare.compare_maps`: one colour scale for both, and ``B - A``."""
        from cfviz.viz.compare import compare_maps, compare_store_maps

        p, _ = self.current
        d = self.data
        st = self.state
        if self.compare_what.value == "store":  # the language map as each store holds it
            return compare_store_maps(self.store, self.compare_store, d.image_id, image=d.image,
                                      mask=d.mask if st["show_mask"] else None, alpha=st["opacity"], note=self.note)
        a = self._final(p, d, st["alpha"])
        label_a = f"{p.method}, k = {p.shots}: alpha_seg = {st['alpha']:.2f}"
        if self.compare_what.value == "alpha":
            b, label_b = self._final(p, d, float(self.compare_alpha.value)), f"alpha_seg = {self.compare_alpha.value:.2f}"
        else:
            key = self.compare_setting.value
            if key not in self._runs:
                self._runs[key] = [self._predict(c, key[0], shots=key[1], seed=key[2]) for c in self._categories]
            q = self._runs[key][self._index(p)]
            b, label_b = np.asarray(q.maps[q.image_ids.index(d.image_id)]), f"{key[0]}, k = {key[1]}, seed {key[2]}"
        if a is None or b is None:
            raise ValueError("nothing to compare: the method on screen has no map for this image")
        return compare_maps(a, b, labels=(label_a, label_b), image=d.image, mask=d.mask if st["show_mask"] else None,
                            alpha=st["opacity"], label="map value", title=d.image_id, note=self.note)

    def show_comparison(self) -> None:
        """Draw :meth:`comparison_figure` into the compare tab."""
        fig = self.comparison_figure()
        self.compare_view.value = ed.figure_png(fig, dpi=100)
        what = self.compare_what.value
        b = (f"alpha_seg = {self.compare_alpha.value:.2f}" if what == "alpha" else
             str(self.compare_setting.label) if what == "setting" else f"the store at {self.compare_store.path}")
        a = "M_diff_L of this run's store" if what == "store" else "the map on screen"
        self.compare_caption.value = (f"A: {html.escape(a)}; B: {html.escape(b)}; one colour scale for A and B, "
                                      "B - A on its own.")

    def _words_view(self, d: ed.ImageData, st: dict[str, Any], op: float, gt: bool) -> None:
        """One panel per recorded word at the timestep and layer on screen (or the mean over the chosen
        resolutions), on one colour scale: DAAM's word maps, prompt-to-prompt's per-token view."""
        import ipywidgets as w

        from cfviz.viz.explorer_widgets import WORD, _colorbar, _Panel

        if not d.attention:
            self.word_caption.value = "no cross-attention was stored for this image"
            self.word_box.children, self.word_bar.value = (), ""
            return
        layer, step, sides = st["layer"], st["step"], tuple(sorted(self.sides.value))
        try:
            maps, lo, hi = self._cached(("words", d.image_id, layer, step, sides),
                                        lambda: ed.word_maps(d, step, layer=layer, sides=sides or None))
        except ValueError as exc:
            self.word_caption.value = html.escape(str(exc))
            return
        while len(self.word_panels) < len(maps):
            self.word_panels.append(_Panel(w, WORD, f"cfviz-word-view-{len(self.word_panels)}"))
        panels = self.word_panels[:len(maps)]
        shape = self._shape(d, WORD)
        for panel, (word, m) in zip(panels, maps.items()):
            key = ("word", d.image_id, layer, step, sides, word, op, gt)
            colors = self._cached(("word-colors", *key[1:6]), lambda m=m: rd.heat_colors(m, shape, vmin=lo, vmax=hi)[0])
            self._show(panel, key, lambda colors=colors: self._compose(d, WORD, colors, op, gt))
            panel.set_title(f"'{html.escape(word)}'")
        if tuple(self.word_box.children) != tuple(p.box for p in panels):
            self.word_box.children = tuple(p.box for p in panels)
        self.word_bar.value = _colorbar(self._css_height(d, WORD), f"{hi:.3g}", f"{lo:.3g}", "attention")
        what = (ed.layer_caption(layer) if layer != ed.ALL_LAYERS else
                "mean over the layers at " + ", ".join(f"{x}x{x}" for x in sides) + " (upsampled, then averaged)")
        self.word_caption.value = html.escape(f"t = {d.timesteps[step]:g}; {what}; one colour scale for every "
                                              f"word ({lo:.3g}..{hi:.3g}).")
