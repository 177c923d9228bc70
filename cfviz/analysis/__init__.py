"""Analysis of capture stores and results: ablations, comparisons, paper tables, failure cases.

The run pipeline (:mod:`cfviz.experiments`: spec, preflight, extraction, scoring, report) writes a
store and ``results.csv``; this package only reads them. Two functions run models, each through
:func:`cfviz.experiments.evaluate` (one store per setting): :func:`extraction_choices` and
:func:`family_runs`. Importing the package is light; the names below load on first use.

==================  ==============================================================================
module              what it computes
==================  ==============================================================================
``ablations``       the timestep/block matching table, the alpha sweep, every design choice
``block_widths``    UNet block widths: which block pairs the matching table compares as they are
``sensitivity``     which metrics a knob can move, knob effects over seeds, methods compared
``compare``         two result sets side by side (per-metric deltas)
``export``          paper-ready LaTeX and Markdown tables of results and of the matching table
``published``       published numbers of the papers, with their sources and evaluation grids
``failures``        worst false positives and negatives, defect types, branch disagreement
``family_maps``     MapDiff's language map from several denoiser families (notebook 09)
==================  ==============================================================================

``metric_kinds`` has two forms (``ablations``: a frozenset, ``sensitivity``: a tuple); import it from
its module.

>>> from cfviz.analysis import compare_results, results_table          # doctest: +SKIP
>>> compare_results("runs/before", "runs/after")                        # doctest: +SKIP
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_EXPORTS: dict[str, tuple[str, ...]] = {
    ".ablations": ("matching_table", "alpha_sweep", "mean_over_categories", "design_choices",
                   "extraction_choices", "DESIGN_KNOBS", "EXTRACTION_KNOBS"),
    ".block_widths": ("block_pairs", "equal_width_pairs", "stored_block_widths", "unet_block_widths"),
    ".sensitivity": ("knob_effects", "movable", "compare_methods", "METHOD_FAVOURITES"),
    ".compare": ("compare_results", "load_results", "ResultsError"),
    ".export": ("results_table", "matching_export", "Table"),
    ".published": ("published_frame", "PUBLISHED"),
    ".failures": ("rank_failures", "defect_breakdown", "branch_maps", "disagreement", "disagreement_maps"),
    ".family_maps": ("family_runs", "family_table", "family_language_figure", "FamilyRuns"),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
