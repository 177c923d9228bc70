"""The names users import to run and compare evaluations; they live in :mod:`cfviz.evaluation` (the run
pipeline) and :mod:`cfviz.analysis` (what reads stores and results).

Importing this package is light; the names below load on first use. The modules that lived here
before the two packages existed (``runner``, ``scoring``, ``ablations``, ...) still import under
their old dotted names, as the moved module itself, with a DeprecationWarning naming the new path.

Example
-------
>>> from cfviz.experiments import RunSpec, evaluate                      # doctest: +SKIP
>>> result = evaluate(RunSpec(dataset="textures", methods=("clipfusion", "winclip"), shots=(0, 1)),
...                   "runs/demo")                                        # doctest: +SKIP
>>> result.summary                                                       # doctest: +SKIP
"""

from __future__ import annotations

from cfviz.evaluation import _LAZY as _EVALUATION  # light: its names load on first use too
from cfviz.utils.lazy import lazy_names, moved_modules

_LAZY: dict[str, str] = {
    **_EVALUATION,
    **dict.fromkeys(("compare_results", "load_results"), "cfviz.analysis.compare"),
    **dict.fromkeys(("results_table", "matching_export"), "cfviz.analysis.export"),
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
moved_modules(__name__, {name: f"cfviz.{package}.{name}" for package, names in (
    ("evaluation", ("aaclip_branch", "clip_branch", "compact", "compact_form", "config", "datacheck", "distributed",
                    "extraction", "families", "models", "plan", "preflight", "prompt_tokens", "report", "runner",
                    "scoring", "store_check")),
    ("analysis", ("ablations", "block_widths", "compare", "export", "failures", "family_maps", "published",
                  "sensitivity"))) for name in names})
