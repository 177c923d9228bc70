"""The evaluation runner: a RunSpec in, a capture store and tidy results out.

Importing this package is light; the names below load on first use. The analysis of stores and
results (ablations, comparisons, exports, ...) lives in :mod:`cfviz.analysis`; its modules still
import under their old names in this package, with a DeprecationWarning.

Example
-------
>>> from cfviz.experiments import RunSpec, evaluate                      # doctest: +SKIP
>>> result = evaluate(RunSpec(dataset="textures", methods=("clipfusion", "winclip"), shots=(0, 1)),
...                   "runs/demo")                                        # doctest: +SKIP
>>> result.summary                                                       # doctest: +SKIP
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names, moved_modules

_LAZY: dict[str, str] = {
    "RunSpec": "cfviz.experiments.config",
    "ModelChoice": "cfviz.experiments.config",
    "ExtractionConfig": "cfviz.experiments.config",
    "ScoringConfig": "cfviz.experiments.config",
    "METHODS": "cfviz.experiments.config",
    "evaluate": "cfviz.experiments.runner",
    "EvaluationResult": "cfviz.experiments.runner",
    "extract": "cfviz.experiments.extraction",
    "load_models": "cfviz.experiments.models",
    "predict": "cfviz.experiments.scoring",
    "Predictions": "cfviz.experiments.scoring",
    # analysis names exported here before cfviz.analysis existed (public: kept, without a warning)
    "compare_results": "cfviz.analysis.compare",
    "load_results": "cfviz.analysis.compare",
    "results_table": "cfviz.analysis.export",
    "matching_export": "cfviz.analysis.export",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
moved_modules(__name__, {name: f"cfviz.analysis.{name}" for name in (
    "ablations", "block_widths", "compare", "export", "failures", "family_maps", "published", "sensitivity")})
