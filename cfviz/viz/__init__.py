"""Paper-quality figures of cfviz's maps, scores and ablations (matplotlib + seaborn).

Every function returns a matplotlib Figure (or draws into a given Axes, or returns a NumPy array)
and draws in one shared style (:mod:`cfviz.viz.style`): ``inferno`` for anomaly scores,
``RdBu_r`` centred on zero for differences, 8 pt text for a two-column paper, constrained
layout, labelled colour bars. Figure-level functions take ``note=``: a small caption under the
figure, e.g. :data:`~cfviz.viz.style.OFFLINE_NOTE` for numbers from the offline tiny models.

Modules: ``style`` (style, captions, saving), ``overlays`` (map over image, a row of maps),
``grids`` (timestep x block, token, and words x timesteps/blocks grids), ``clipviz`` (CLIP window and patch scores),
``ablation`` (heat maps, alpha curves, bars), ``gallery`` (image galleries, qualitative grid),
``failures`` (ranked failure cases, their attention, branch disagreement), ``compare`` (two
runs' maps of one image side by side on one colour scale), ``sensitivity`` (notebook 08: each
knob's effect with its spread over seeds, methods under one shared rule vs their favourites).

Importing :mod:`cfviz.viz` does not import matplotlib: names resolve on first use.

Example
-------
>>> import numpy as np, cfviz.viz as viz
>>> fig = viz.maps_row(np.zeros((32, 32, 3), np.uint8), {"fused": np.eye(8)}, note=viz.OFFLINE_NOTE)
>>> import matplotlib.figure
>>> isinstance(fig, matplotlib.figure.Figure), [ax.get_title() for ax in fig.axes]
(True, ['image', 'fused'])
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    # style
    "apply_style": ".style", "style_context": ".style", "style_rc": ".style", "save_figure": ".style",
    "add_note": ".style", "new_figure": ".style", "symmetric_limits": ".style", "check_figure_name": ".style",
    "SCORE_CMAP": ".style", "DIVERGING_CMAP": ".style", "METRIC_CMAP": ".style", "MASK_COLOR": ".style",
    "CATEGORICAL": ".style", "COLUMN_WIDTH": ".style", "PAGE_WIDTH": ".style", "OFFLINE_NOTE": ".style",
    # overlays
    "overlay": ".overlays", "maps_row": ".overlays", "resize_bilinear": "._common",
    # grids
    "timestep_block_grid": ".grids", "token_grid": ".grids", "short_name": ".grids", "module_path": "cfviz.capture.naming", "timestep_label": ".grids",
    "word_timestep_grid": ".grids", "word_block_grid": ".grids",
    # two runs side by side
    "compare_maps": ".compare", "compare_store_maps": ".compare",
    # clip
    "window_scores_to_map": ".clipviz", "plot_window_scores": ".clipviz", "plot_patch_scores": ".clipviz",
    "clip_scores_figure": ".clipviz",
    # ablation
    "ablation_heatmap": ".ablation", "alpha_curves": ".ablation", "metric_bars": ".ablation",
    # sensitivity study (notebook 08)
    "knob_sensitivity": ".sensitivity", "method_comparison": ".sensitivity",
    # gallery
    "gallery": ".gallery", "qualitative_grid": ".gallery",
    # failure cases
    "failure_gallery": ".failures", "case_attention_grid": ".failures", "disagreement_figure": ".failures",
    "defect_breakdown_figure": ".failures",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
