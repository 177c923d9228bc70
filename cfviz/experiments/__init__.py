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

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "RunSpec": "cfviz.experiments.config",
    "ModelChoice": "cfviz.experiments.config",
    "ExtractionConfig": "cfviz.experiments.config",
    "ScoringConfig": "cfviz.experiments.config",
    "METHODS": "cfviz.experiments.config",
    "evaluate": "cfviz.experiments.evaluate",
    "EvaluationResult": "cfviz.experiments.evaluate",
    "extract": "cfviz.experiments.extract",
    "load_models": "cfviz.experiments.models",
    "predict": "cfviz.experiments.scoring",
    "Predictions": "cfviz.experiments.scoring",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cfviz.experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
