"""The evaluation runner: spec -> plan -> models once per image (cached) -> maps -> metrics -> tables.

>>> from cfviz.experiments import RunSpec, evaluate                     # doctest: +SKIP
>>> result = evaluate(RunSpec(dataset="textures", methods=("clipfusion", "winclip"),
...                           shots=(0, 1), seeds=(0, 1)), "runs/demo")  # doctest: +SKIP
>>> result.summary                                                      # doctest: +SKIP

:func:`evaluate` resolves the spec once into a :class:`~cfviz.evaluation.plan.RunPlan`
(:func:`~cfviz.evaluation.plan.plan_run`) and hands the plan to each stage: extraction (this
shard's or process's batches), compaction, scoring, and the report (:mod:`cfviz.evaluation.report`:
``results.csv``, tidy, one row per dataset, category, method, shots, seed, metric; ``summary.md``;
``run.json``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import RunSpec
from cfviz.evaluation.extraction import ExtractionReport, extract
from cfviz.evaluation.plan import RunPlan
from cfviz.evaluation.report import EvaluationResult, summarize, write_outputs
from cfviz.utils.lazy import lazy_names

#: Names that lived here before the plan and the report had modules of their own, loaded from their
#: home on first use (the library imports them from there).
__getattr__, __dir__ = lazy_names(__name__, {
    **dict.fromkeys(("model_identity", "open_run_dataset", "store_identity", "stored_clip_windows", "subset_options",
                     "test_categories"), "cfviz.evaluation.plan"),
    **dict.fromkeys(("METRIC_ORDER", "RANDOM_WEIGHTS_NOTE", "summary_markdown"), "cfviz.evaluation.report")})


def evaluate(spec: RunSpec, out_dir: str | Path, *, store_dir: str | Path | None = None,
             shard: tuple[int, int] | None = None, progress: bool = True,
             repair: bool = False, distributed: str = "auto",
             keep: Collection[tuple[str, int, int]] = (),
             recompute_changed: bool = False) -> EvaluationResult | ExtractionReport:
    """Run (or resume) an evaluation and write its tables.

    Parameters
    ----------
    spec:
        Data set, methods, shots, seeds, models and settings (:class:`~cfviz.evaluation.config.RunSpec`).
    out_dir:
        Where ``results.csv``, ``summary.md`` and ``run.json`` go.
    store_dir:
        The capture store (default ``out_dir/store``). Reuse it across runs: images already in it
        are not recomputed; a store made with other model/extraction settings is refused, and so
        is an entry whose image file now holds other bytes (:mod:`cfviz.evaluation.store_check`).
        When every image is stored, no model loads: the store may then be read-only, and the
        settings that matter only when models run (threads, device type) are not compared.
    shard:
        ``(i, n)``: only run the models for shard i of n and return the extraction report. Run
        every shard (processes, GPUs, machines sharing the folder), then call again without
        ``shard`` to score everything from the merged store. Shards take whole batches of one
        plan (:func:`~cfviz.evaluation.extraction.run_batches`), so the merged store is the
        store a single run writes, byte for byte.
    repair:
        Delete damaged store entries (an unreadable tensors or JSON file) and recompute them,
        instead of stopping with an error that names them.
    recompute_changed:
        Recompute the entries whose image file changed since they were stored (and entries of
        older stores, which recorded no fingerprint), instead of refusing the run.
    distributed:
        ``"auto"``: when this process is one of several started by ``accelerate launch``
        (``WORLD_SIZE`` > 1), extract process ``p``'s share of the batches (``shard=(p, n)``),
        wait for every process, then score on the main process only; the others return their
        extraction report. ``"off"``: ignore the launcher. See :mod:`cfviz.evaluation.distributed`.
    keep:
        ``(method, shots, seed)`` settings whose predictions (maps, scores, branch maps) the result
        keeps in :attr:`EvaluationResult.predictions`, for every category: a figure then shows what
        was scored without predicting again. Empty by default (predictions of a full data set are
        large).

    The result (or, with ``shard``, the report itself) carries the
    :class:`~cfviz.evaluation.extraction.ExtractionReport`: N new, M already stored, K in all.
    """
    import pandas as pd

    from cfviz.evaluation.distributed import processes
    from cfviz.evaluation.plan import plan_run
    from cfviz.evaluation.store_check import open_run_store

    procs = processes(distributed, shard, spec.models.device)  # None unless launched by accelerate
    if procs is not None:
        spec, shard = procs.place(spec), procs.shard
    started = time.perf_counter()
    # launched: the main process first (it may generate the data set, or repair the store), then the others
    with procs.main_first() if procs is not None else contextlib.nullcontext():
        plan = plan_run(spec, out_dir, store_dir, shard)  # checks everything, then resolves it once
        ids = [r.image_id for r in plan.records]
        # the header is written with the first entry: a run that fails before it leaves no store
        store = open_run_store(plan.store_dir, plan.identity, plan.records,
                               planned=[i for batch in plan.batches for i in batch], repair=repair,
                               recompute_changed=recompute_changed)
        missing_at_start = len(store.missing(ids))
        if plan.spec.store_form == "compact":  # a compacted store that cannot serve these shots/seeds: say so now
            from cfviz.evaluation.compact import check_before_extraction

            check_before_extraction(store, plan)

    report = _extract_if_needed(plan, store, progress)
    if procs is not None:  # the reduce step: one process scores the merged store
        procs.wait()
        if not procs.is_main:
            procs.close()
            return report
        _await_entries(store, ids)  # entries the other processes wrote
        report = ExtractionReport(total=len(ids), already=len(ids) - missing_at_start, new=missing_at_start,
                                  seconds=time.perf_counter() - started)
    elif shard is not None:
        return report

    if plan.spec.store_form == "compact":  # every entry is in: test features -> M_diff_V maps (resumable)
        from cfviz.evaluation.compact import compact_store

        compact_store(store, plan, progress=progress)
    kept: dict[tuple[str, str, int, int], Any] = {}
    frame = pd.DataFrame(_score(store, plan, progress, keep=set(keep), kept=kept))
    result = EvaluationResult(frame=frame, summary=summarize(frame), out_dir=plan.out_dir, store=store,
                              extraction=report, references=plan.reference_table(),
                              random_weights=plan.spec.models.random_weights, spec=plan.spec,
                              left_out=dict(plan.left_out), predictions=kept)
    write_outputs(result, plan)
    if procs is not None:
        procs.close()
    return result


#: After the barrier, how long the main process waits for entries that other machines wrote to
#: appear in its view of a shared folder (NFS caches directory listings for up to a minute).
SHARED_FOLDER_WAIT_S = 180.0


def _await_entries(store: CaptureStore, ids: list[str], timeout: float = SHARED_FOLDER_WAIT_S) -> None:
    """Re-scan the store until every id is in it (or ``timeout`` passes; scoring then names what is missing)."""
    deadline = time.monotonic() + timeout
    store.refresh()
    while store.missing(ids) and time.monotonic() < deadline:
        time.sleep(2.0)
        store.refresh()


def _extract_if_needed(plan: RunPlan, store: CaptureStore, progress: bool) -> ExtractionReport:
    mine = [i for batch in plan.batches for i in batch]
    if not store.missing(mine):  # everything cached: no model is even loaded
        return ExtractionReport(total=len(mine), already=len(mine), new=0, seconds=0.0)
    from cfviz.evaluation.models import load_models, resolved_weights

    models = load_models(plan.spec.models)
    store.confirm("weights_resolved", resolved_weights(models))  # hub commits, known only now
    return extract(plan.dataset, plan.records, models, plan.spec.extraction, store, batches=plan.batches,
                   progress=progress)


def _score(store: CaptureStore, plan: RunPlan, progress: bool, *, cache: bool = True,
           keep: Collection[tuple[str, int, int]] = (),
           kept: dict[tuple[str, str, int, int], Any] | None = None) -> list[dict]:
    """Metric rows of every category and (method, shots, seed) setting of the plan.

    The predictions of the ``keep`` settings ``(method, shots, seed)`` go into ``kept``.

    With ``cache`` (the default) a category's store entries are read, and each branch map
    computed, once for all its settings (:class:`~cfviz.evaluation.scoring.BranchCache`, dropped
    before the next category); ``cache=False`` recomputes them per setting (same rows, slower).
    """
    from cfviz.evaluation.scoring import BranchCache, annotated_masks, predict
    from cfviz.metrics import image_metrics, pixel_metrics
    from cfviz.utils.progress import progress_bar

    spec, dataset = plan.spec, plan.dataset
    bar = progress_bar(total=len(plan.categories) * len(plan.settings), desc="scoring", unit="setting",
                       disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        for category in plan.categories:
            tests = [r for r in dataset.records if r.category == category and r.split == "test"]
            masks, annotated = (annotated_masks(dataset, tests, spec.scoring.eval_size) if dataset.has_masks
                                else (None, None))
            branches = BranchCache() if cache else None  # one category's maps at a time in memory
            for method, shots, seed in plan.settings:
                p = predict(store, dataset, category, method, shots=shots, seed=seed, scoring=spec.scoring,
                            extraction=spec.extraction, masks=masks, cache=branches,
                            references=plan.references_of(category, shots, seed))
                if kept is not None and (method, shots, seed) in keep:
                    kept[(category, method, shots, seed)] = p
                values: dict[str, Any] = dict(image_metrics(p.labels, p.scores))
                if p.masks is not None and p.masks[annotated].any():  # images without a mask left out
                    values.update(pixel_metrics(p.masks[annotated], p.maps[annotated]))
                for metric, value in values.items():
                    if metric.startswith("n_") or metric.endswith("_threshold") or metric == "aupro_fpr_limit":
                        continue
                    rows.append({"dataset": spec.dataset, "category": category, "method": method, "shots": shots,
                                 "seed": seed, "metric": metric, "value": float(value)})
                bar.update(1)
    finally:
        bar.close()
    return rows


