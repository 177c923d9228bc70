"""The run pipeline: a :class:`RunSpec` in; a capture store, ``results.csv``, ``summary.md`` and ``run.json`` out.

A run's settings go down through the layers once and come back as results; every stage reads
the one resolved :class:`~cfviz.evaluation.plan.RunPlan`::

    cfviz evaluate FLAGS        commands/evaluate.py        flags -> RunSpec (validated as it is made)
      evaluate(spec)            runner.py
        plan_run(spec)          plan.py                     the run resolved once, before any model loads:
          preflight             preflight.py, families.py     paths, device, model names, family settings
          resolve_spec          config.py, families.py        CLIP size, CLIP windows, the family's layers
          the data              datacheck.py                  data set opened and checked, references drawn
          the batches           extraction.run_batches        per (category, k, seed); batches; store identity
        -> RunPlan (frozen)
        open_run_store          store_check.py              identity and image fingerprints agree, or stop
        extract                 extraction.py               plan.batches -> models/, clip/, diffusion/, capture/
                                clip_branch.py, aaclip_branch.py, prompt_tokens.py  (what each image stores)
        compact_store           compact.py, compact_form.py plan.compact (store_form "compact" only)
        score                   scoring.py -> fusion, metrics/   plan.settings x plan.categories, plan.references
        write_outputs           report.py                   results.csv, summary.md, run.json (plan.rule, pair)

Under ``accelerate launch`` (:mod:`~cfviz.evaluation.distributed`) each process plans its share
(``plan.batches``), extracts it, and the main process scores. What reads stores and results
afterwards (ablations, comparisons, paper tables, failure cases) is :mod:`cfviz.analysis`.

Importing this package is light; the names below load on first use. ``cfviz.experiments``
re-exports them (the names users import: ``from cfviz.experiments import RunSpec, evaluate``).

>>> from cfviz.evaluation import RunSpec, plan_run                       # doctest: +SKIP
>>> plan = plan_run(RunSpec(methods=("clipfusion", "winclip"), shots=(0, 1)), "runs/demo")  # doctest: +SKIP
>>> plan.spec.extraction.clip_windows, len(plan.batches)                # doctest: +SKIP
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    **dict.fromkeys(("RunSpec", "ModelChoice", "ExtractionConfig", "ScoringConfig", "METHODS"),
                    "cfviz.evaluation.config"),
    **dict.fromkeys(("RunPlan", "plan_run", "resolve_spec", "store_identity"), "cfviz.evaluation.plan"),
    **dict.fromkeys(("evaluate",), "cfviz.evaluation.runner"),
    **dict.fromkeys(("EvaluationResult", "summarize"), "cfviz.evaluation.report"),
    **dict.fromkeys(("extract",), "cfviz.evaluation.extraction"),
    **dict.fromkeys(("load_models",), "cfviz.evaluation.models"),
    **dict.fromkeys(("predict", "Predictions"), "cfviz.evaluation.scoring"),
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
