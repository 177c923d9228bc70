"""Evaluation and ablation runners that return tidy pandas DataFrames.

Importing this package is light; the names below load on first use.

Example
-------
>>> from cfviz.experiments import RunSpec, evaluate                      # doctest: +SKIP
>>> result = evaluate(RunSpec(dataset="textures", methods=("clipfusion", "winclip"), shots=(0, 1)),
...                   "runs/demo")                                        # doctest: +SKIP
>>> result.summary                                                       # doctest: +SKIP
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

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
    "compare_results": "cfviz.experiments.compare",
    "load_results": "cfviz.experiments.compare",
    "results_table": "cfviz.experiments.export",
    "matching_export": "cfviz.experiments.export",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
