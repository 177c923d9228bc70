"""The evaluation runner: data set -> models once per image (cached) -> maps -> metrics -> tables.

>>> from cfviz.experiments import RunSpec, evaluate                     # doctest: +SKIP
>>> result = evaluate(RunSpec(dataset="textures", methods=("clipfusion", "winclip"),
...                           shots=(0, 1), seeds=(0, 1)), "runs/demo")  # doctest: +SKIP
>>> result.summary                                                      # doctest: +SKIP

Results: ``results.csv`` (tidy: one row per dataset, category, method, shots, seed, metric),
``summary.md`` (per-method means over categories, mean ± std over seeds, with published numbers
beside them when a real data set is run with real weights) and ``run.json`` (the spec, the
library versions, the store, and the reference images drawn for every category and seed).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.experiments.config import ModelChoice, RunSpec
from cfviz.experiments.extraction import ExtractionReport, extract
from cfviz.utils.env import library_versions
from cfviz.utils.io import atomic_write_files, json_bytes

RANDOM_WEIGHTS_NOTE = ("Offline random-weight models: these numbers show that the pipeline runs end to end, "
                       "not how well the method detects anomalies.")


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns (and wrote to ``out_dir``)."""

    frame: Any  #: tidy DataFrame: dataset, category, method, shots, seed, metric, value
    summary: Any  #: mean over categories, mean ± std over seeds (a DataFrame)
    out_dir: Path
    store: CaptureStore
    extraction: ExtractionReport
    references: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    random_weights: bool = True
    spec: RunSpec | None = None  #: the run's settings
    #: categories of the data set not scored, with the reason (no test images); the means leave them out
    left_out: dict[str, str] = field(default_factory=dict)
    #: the scoring's own :class:`~cfviz.experiments.scoring.Predictions` of the settings asked for
    #: with ``evaluate(keep=...)``, by (category, method, shots, seed): figures reuse them
    predictions: dict[tuple[str, str, int, int], Any] = field(default_factory=dict)


def model_identity(choice: ModelChoice) -> dict[str, Any]:
    """The parts of a model choice that change outputs: the device's type, not its index.

    Shards on ``cuda:0`` and ``cuda:1`` share a store; CPU and CUDA kernels give different numbers,
    so ``cpu`` and ``cuda`` stores are kept apart.

    The denoiser family (:func:`cfviz.experiments.families.diffusion_family`) is recorded for every
    family but SD 1.x/2.x (whose stores were written before families existed), so a store made by
    one family refuses another (``models.family: "sdxl" -> "sd3"``).

    >>> model_identity(ModelChoice(device="cuda:1"))["device_type"]
    'cuda'
    >>> model_identity(ModelChoice(diffusion="tiny-sd3"))["family"]
    'sd3'
    """
    from cfviz.experiments.families import diffusion_family

    d = choice.identity()  # the speed options only when they may change numbers (ModelChoice.identity)
    device = str(d.pop("device"))
    d["device_type"] = device.split(":", 1)[0].strip().lower() or "cpu"
    family = diffusion_family(choice)
    if family != "sd":
        d["family"] = family
    return d


def store_identity(spec: RunSpec) -> dict[str, Any]:
    """What a run's capture store must agree on before any entry is shared (see CaptureStore).

    Models (with dtype and device type), a fingerprint of their weights (seeds of random weights,
    SHA-256 of local files; hub commits are added once the models load), the extraction settings
    and the batch size (kernels give batch-dependent numbers; batches are planned from it); on
    the CPU also the number of torch threads.
    """
    from cfviz.experiments.config import resolve_clip_size, resolve_clip_windows
    from cfviz.experiments.families import resolve_family_settings
    from cfviz.experiments.models import weights_identity

    spec = resolve_clip_size(spec)  # the CLIP input size it resolves to (None = the model's), as stored
    spec = resolve_clip_windows(spec)  # auto: windows only when a method needs them
    spec = resolve_family_settings(spec)  # a transformer family's own attention/feature defaults
    identity = {"models": model_identity(spec.models), "weights": weights_identity(spec.models),
                "extraction": spec.extraction.to_json(), "batch_size": spec.batch_size}
    if identity["models"]["device_type"] == "cpu":
        import torch

        # CPU kernels split their sums across threads, so another thread count (accelerate and
        # torchrun start each process with OMP_NUM_THREADS=1) gives other last bits
        identity["cpu_threads"] = torch.get_num_threads()
    subset = subset_options(spec.dataset_options)
    if subset:  # absent when every test image is used, so stores written without it keep matching
        identity["test_subset"] = subset
    if spec.store_form != "full":  # absent for the full form, so stores written before it keep matching
        identity["store_form"] = spec.store_form
    return identity


def stored_clip_windows(store_dir: str | Path) -> bool | None:
    """Whether an existing store at ``store_dir`` holds CLIP window embeddings; ``None`` without a store.

    Its header records ``clip_windows`` only when off (stores written before the setting have windows).
    """
    header = Path(store_dir) / "store.json"
    if not header.is_file():
        return None
    try:
        extraction = json.loads(header.read_text()).get("config", {}).get("extraction", {})
    except (ValueError, AttributeError):
        return None  # a damaged header: CaptureStore says so, naming the file
    return extraction.get("clip_windows", True) is not False


#: Reader options that drop test images (and so change which images share a planned batch).
SUBSET_OPTIONS: dict[str, Any] = {"limit_per_type": None, "missing_masks": "skip"}


def subset_options(dataset_options: dict[str, Any]) -> dict[str, Any]:
    """The reader options of a run that take a subset of each category's test images.

    Batches are planned per category (:func:`cfviz.experiments.extraction.run_batches`), so a
    subset gives an image other batch neighbours, and CPU kernels give batch-dependent numbers:
    such runs need their own store.

    >>> subset_options({"limit_per_type": 2, "missing_masks": "warn", "mask_suffix": "_mask"})
    {'limit_per_type': 2}
    """
    out = {}
    for name, dropping in SUBSET_OPTIONS.items():
        value = dataset_options.get(name)
        if value is not None and (dropping is None or value == dropping):
            out[name] = value
    return out


def open_run_dataset(spec: RunSpec) -> Any:
    """The data set of a run, both splits (test images and normal training references)."""
    from cfviz.data import open_dataset

    return open_dataset(spec.dataset, spec.root, categories=list(spec.categories) if spec.categories else None,
                        split="all", **spec.dataset_options)


def references_needed(dataset: Any, spec: RunSpec) -> dict[str, dict[str, list[Any]]]:
    """Reference records per category and seed for the largest k (smaller k are prefixes)."""
    from cfviz.data.samples import sample_references

    k = max(spec.shots)
    if k == 0:
        return {}
    return {c: {str(s): sample_references(dataset, c, k, s) for s in spec.seeds} for c in test_categories(dataset)}


def test_categories(dataset: Any) -> list[str]:
    return [c for c in dataset.categories if any(r.category == c and r.split == "test" for r in dataset.records)]


def run_records(dataset: Any, categories: list[str], refs: dict[str, dict[str, list[Any]]]) -> list[Any]:
    """The images a run extracts: the test images of ``categories``, then each k-shot reference
    (``refs``: :func:`references_needed`) once."""
    records = [r for r in dataset.records if r.split == "test" and r.category in categories]
    seen = {r.image_id for r in records}
    for per_seed in refs.values():  # k-shot references join the extraction, each once
        for rec in (r for recs in per_seed.values() for r in recs):
            if rec.image_id not in seen:
                seen.add(rec.image_id)
                records.append(rec)
    return records


def evaluate(spec: RunSpec, out_dir: str | Path, *, store_dir: str | Path | None = None,
             shard: tuple[int, int] | None = None, progress: bool = True,
             repair: bool = False, distributed: str = "auto",
             keep: Collection[tuple[str, int, int]] = (),
             recompute_changed: bool = False) -> EvaluationResult | ExtractionReport:
    """Run (or resume) an evaluation and write its tables.

    Parameters
    ----------
    spec:
        Data set, methods, shots, seeds, models and settings (:class:`~cfviz.experiments.config.RunSpec`).
    out_dir:
        Where ``results.csv``, ``summary.md`` and ``run.json`` go.
    store_dir:
        The capture store (default ``out_dir/store``). Reuse it across runs: images already in it
        are not recomputed; a store made with other model/extraction settings is refused, and so
        is an entry whose image file now holds other bytes (:mod:`cfviz.experiments.store_check`).
        When every image is stored, no model loads: the store may then be read-only, and the
        settings that matter only when models run (threads, device type) are not compared.
    shard:
        ``(i, n)``: only run the models for shard i of n and return the extraction report. Run
        every shard (processes, GPUs, machines sharing the folder), then call again without
        ``shard`` to score everything from the merged store. Shards take whole batches of one
        plan (:func:`~cfviz.experiments.extraction.run_batches`), so the merged store is the
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
        extraction report. ``"off"``: ignore the launcher. See :mod:`cfviz.experiments.distributed`.
    keep:
        ``(method, shots, seed)`` settings whose predictions (maps, scores, branch maps) the result
        keeps in :attr:`EvaluationResult.predictions`, for every category: a figure then shows what
        was scored without predicting again. Empty by default (predictions of a full data set are
        large).

    The result (or, with ``shard``, the report itself) carries the
    :class:`~cfviz.experiments.extraction.ExtractionReport`: N new, M already stored, K in all.
    """
    import pandas as pd

    from cfviz.experiments.datacheck import check_run_data
    from cfviz.experiments.distributed import processes
    from cfviz.experiments.config import resolve_clip_size, resolve_clip_windows
    from cfviz.experiments.extraction import run_batches
    from cfviz.experiments.store_check import open_run_store
    from cfviz.experiments.families import resolve_family_settings
    from cfviz.experiments.preflight import preflight

    procs = processes(distributed, shard, spec.models.device)  # None unless launched by accelerate
    if procs is not None:
        spec, shard = procs.place(spec), procs.shard
    started = time.perf_counter()
    # launched: the main process first (it may generate the data set, or repair the store), then the others
    with procs.main_first() if procs is not None else contextlib.nullcontext():
        # every setting, path, device and model name, before any data is generated or model built
        preflight(spec, out_dir, store_dir if store_dir is not None else Path(out_dir) / "store")
        spec = resolve_clip_size(spec)  # the CLIP's own input size, recorded in the store's identity
        # auto: window embeddings only when a method or form needs them, or the store already holds them
        spec = resolve_clip_windows(spec, stored_clip_windows(store_dir or Path(out_dir) / "store"))
        spec = resolve_family_settings(spec)  # SD3/FLUX/PixArt: their layers in place of the UNet defaults
        out = Path(out_dir)
        dataset = open_run_dataset(spec)
        left_out = check_run_data(dataset, spec.shots)  # what each category lacks, before any model loads
        categories = test_categories(dataset)
        refs = references_needed(dataset, spec)
        records = run_records(dataset, categories, refs)
        # the header is written with the first entry: a run that fails before it leaves no store
        planned = [i for batch in run_batches(records, spec.batch_size, shard) for i in batch]
        store = open_run_store(store_dir or out / "store", store_identity(spec), records, planned=planned,
                               repair=repair, recompute_changed=recompute_changed)
        missing_at_start = len(store.missing([r.image_id for r in records]))
        if spec.store_form == "compact":  # a compacted store that cannot serve these shots/seeds: say so now
            from cfviz.experiments.compact import check_before_extraction

            check_before_extraction(store, dataset, categories, spec)

    report = _extract_if_needed(dataset, records, spec, store, shard, progress)
    if procs is not None:  # the reduce step: one process scores the merged store
        procs.wait()
        if not procs.is_main:
            procs.close()
            return report
        _await_entries(store, [r.image_id for r in records])  # entries the other processes wrote
        report = ExtractionReport(total=len(records), already=len(records) - missing_at_start,
                                  new=missing_at_start, seconds=time.perf_counter() - started)
    elif shard is not None:
        return report

    if spec.store_form == "compact":  # every entry is in: test features -> M_diff_V maps (resumable)
        from cfviz.experiments.compact import compact_store

        compact_store(store, dataset, categories, spec, progress=progress)
    kept: dict[tuple[str, str, int, int], Any] = {}
    rows = _score(store, dataset, categories, spec, progress, keep=set(keep), kept=kept)
    frame = pd.DataFrame(rows)
    summary = summarize(frame)
    references = {c: {s: [r.image_id for r in recs] for s, recs in per.items()} for c, per in refs.items()}
    result = EvaluationResult(frame=frame, summary=summary, out_dir=out, store=store, extraction=report,
                              references=references, random_weights=spec.models.random_weights, spec=spec,
                              left_out=left_out, predictions=kept)
    write_outputs(result, spec)
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


def _extract_if_needed(dataset: Any, records: list[Any], spec: RunSpec, store: CaptureStore,
                       shard: tuple[int, int] | None, progress: bool) -> ExtractionReport:
    from cfviz.experiments.extraction import run_batches

    mine = [i for batch in run_batches(records, spec.batch_size, shard) for i in batch]
    if not store.missing(mine):  # everything cached: no model is even loaded
        return ExtractionReport(total=len(mine), already=len(mine), new=0, seconds=0.0)
    from cfviz.experiments.models import load_models, resolved_weights

    models = load_models(spec.models)
    store.confirm("weights_resolved", resolved_weights(models))  # hub commits, known only now
    return extract(dataset, records, models, spec.extraction, store, batch_size=spec.batch_size, shard=shard,
                   progress=progress)


def _score(store: CaptureStore, dataset: Any, categories: list[str], spec: RunSpec, progress: bool, *,
           cache: bool = True, keep: Collection[tuple[str, int, int]] = (),
           kept: dict[tuple[str, str, int, int], Any] | None = None) -> list[dict]:
    """Metric rows of every (category, method, shots, seed).

    The predictions of the ``keep`` settings ``(method, shots, seed)`` go into ``kept``.

    With ``cache`` (the default) a category's store entries are read, and each branch map
    computed, once for all its settings (:class:`~cfviz.experiments.scoring.BranchCache`, dropped
    before the next category); ``cache=False`` recomputes them per setting (same rows, slower).
    """
    from cfviz.experiments.scoring import BranchCache, annotated_masks, predict
    from cfviz.metrics import image_metrics, pixel_metrics
    from cfviz.utils.progress import progress_bar

    settings = [(m, k, s) for m in spec.methods for k in spec.shots for s in (spec.seeds if k else spec.seeds[:1])]
    bar = progress_bar(total=len(categories) * len(settings), desc="scoring", unit="setting", disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        for category in categories:
            tests = [r for r in dataset.records if r.category == category and r.split == "test"]
            masks, annotated = (annotated_masks(dataset, tests, spec.scoring.eval_size) if dataset.has_masks
                                else (None, None))
            branches = BranchCache() if cache else None  # one category's maps at a time in memory
            for method, shots, seed in settings:
                p = predict(store, dataset, category, method, shots=shots, seed=seed, scoring=spec.scoring,
                            extraction=spec.extraction, masks=masks, cache=branches)
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


METRIC_ORDER = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")


def summarize(frame: Any) -> Any:
    """Mean over categories per seed, then mean and std over seeds: one row per method, shots, metric.

    Units: ``mean`` and ``std`` are fractions in [0, 1], as in ``results.csv`` and ``result.frame``
    (data for programs); the ``unit`` column says so. Tables and figures for people show
    percent, labelled "(%)": ``summary.md`` and :func:`cfviz.notebooks.summary_table`.
    """
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=["method", "shots", "metric", "mean", "std", "n_seeds", "unit"])
    per_seed = frame.groupby(["method", "shots", "seed", "metric"], as_index=False)["value"].mean()
    agg = per_seed.groupby(["method", "shots", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    agg["unit"] = "fraction"
    return agg.rename(columns={"count": "n_seeds"})


def summary_markdown(frame: Any, summary: Any, spec: RunSpec, *, random_weights: bool,
                     left_out: dict[str, str] | None = None) -> str:
    """The Markdown tables: means ± std per method and shots, per-category detail, published numbers.

    ``left_out`` (category -> reason) names the data set's categories that were not scored.
    """
    from cfviz.analysis.published import published_frame
    from cfviz.data import dataset_has_masks

    lines = [f"# cfviz evaluation: {spec.dataset}", ""]
    if random_weights:
        lines += [f"> **{RANDOM_WEIGHTS_NOTE}**", ""]
    lines += [f"Categories: {', '.join(sorted(frame['category'].unique()))}. Seeds: {list(spec.seeds)}. "
              "Values in %, mean over categories; ± is the std over seeds (k-shot references differ per seed).", ""]
    lines += ["Comparison rule (every method alike):", ""]
    lines += [f"- {name}: {text}" for name, text in run_rule(spec).items()] + [""]
    if left_out:
        lines += ["> **Left out of every table and mean: " + "; ".join(f"{c} ({why})" for c, why in left_out.items())
                  + ".**", ""]
    # say when and why pixel metrics are missing (a mask-less data set, or categories without usable masks)
    cats = sorted(frame["category"].unique())
    with_pixel = set(frame.loc[frame["metric"].str.startswith("pixel_"), "category"])
    no_pixel = [c for c in cats if c not in with_pixel]
    if no_pixel and not dataset_has_masks(spec.dataset, spec.dataset_options):
        lines += [f"> **Pixel metrics skipped: the {spec.dataset} data set has no pixel masks (image labels only), "
                  "so only image metrics are reported.**", ""]
    elif no_pixel:
        which = "every category" if len(no_pixel) == len(cats) else "categories " + ", ".join(no_pixel)
        lines += [f"> **Pixel metrics skipped for {which}: no mask there marks a defect pixel at the evaluation "
                  "size (anomalous images without a mask are left out of pixel metrics); only image metrics are "
                  "reported for them.**", ""]
    metrics = [m for m in METRIC_ORDER if m in set(summary["metric"])]
    pub = published_frame()
    real_data = spec.dataset in ("mvtec", "visa") and not random_weights
    header = ["method", "shots", *_percent_columns(metrics)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, shots), grp in summary.groupby(["method", "shots"], sort=True):
        cells = [method, str(shots)]
        for m in metrics:
            row = grp[grp["metric"] == m]
            if row.empty:
                cells.append("–")
                continue
            mean, std = 100 * float(row["mean"].iloc[0]), 100 * float(row["std"].iloc[0])
            cell = f"{mean:.1f} ± {std:.1f}" if int(row["n_seeds"].iloc[0]) > 1 else f"{mean:.1f}"
            if real_data:
                match = pub[(pub.dataset == spec.dataset) & (pub.method == method) & (pub.shots == shots)
                            & (pub.category == "mean") & (pub.metric == m)]
                if not match.empty:
                    cell += f" (paper {match['published'].iloc[0]:.1f})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    if real_data:
        grids = sorted(set(pub.loc[(pub.dataset == spec.dataset) & pub.method.isin(list(spec.methods)), "grid"]))
        lines += ["", "(paper X): the published number for the same setting (see cfviz/analysis/published.py); "
                  "published numbers come from each method's own image-score and smoothing rules (compare with "
                  "--image-score own --smoothing own) and other evaluation grids: " + "; ".join(grids) + "."]
    lines += ["", "## Per category (mean over seeds)", ""]
    per_cat = frame.groupby(["method", "shots", "category", "metric"])["value"].mean().reset_index()
    header = ["method", "shots", "category", *_percent_columns(metrics)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, shots, category), grp in per_cat.groupby(["method", "shots", "category"], sort=True):
        vals = {r.metric: r.value for r in grp.itertuples()}
        lines.append("| " + " | ".join([method, str(shots), category,
                                        *[f"{100 * vals[m]:.1f}" if m in vals else "–" for m in metrics]]) + " |")
    return "\n".join(lines) + "\n"


def _diffusion_k_shot(spec: RunSpec) -> bool:
    """Whether a run scores M_diff_V (a diffusion method with k > 0)."""
    from cfviz.experiments.config import DIFFUSION_METHODS

    return max(spec.shots) > 0 and bool(set(spec.methods) & set(DIFFUSION_METHODS))


def run_rule(spec: RunSpec) -> dict[str, str]:
    """The comparison rule of a run in words (:func:`cfviz.experiments.scoring.comparison_rule`)."""
    from cfviz.experiments.scoring import comparison_rule

    return comparison_rule(spec.scoring, spec.extraction, k_shot=_diffusion_k_shot(spec))


def _visual_pair(spec: RunSpec) -> dict[str, Any] | None:
    """M_diff_V's (timestep, block) pair, named, of a run that scores it; else ``None``."""
    from cfviz.experiments.scoring import visual_pair

    return visual_pair(spec.scoring, spec.extraction) if _diffusion_k_shot(spec) else None


def _percent_columns(metrics: list[str]) -> list[str]:
    """Column names of the Markdown tables: each metric with its unit, as in
    :func:`cfviz.notebooks.summary_table` (``image_auroc (%)``)."""
    return [f"{m} (%)" for m in metrics]


def write_outputs(result: EvaluationResult, spec: RunSpec) -> None:
    """Write results.csv, summary.md and run.json into ``result.out_dir``, only when all three are complete.

    Every text is made first; then each goes to a temporary file in ``out_dir``, and only when
    all are written are they renamed over the old ones (:func:`cfviz.utils.io.atomic_write_files`):
    a failure at any point (an empty table, a full disk) leaves the earlier results as they were.
    """
    from cfviz.errors import CfvizError

    frame = result.frame
    if frame.empty:  # nothing to report (no test image was scored): never replace earlier tables with nothing
        raise CfvizError(f"no metric was computed, so no results were written to {result.out_dir} (earlier "
                         "results there are kept)")
    out = result.out_dir
    atomic_write_files({
        out / "results.csv": frame.to_csv(index=False).encode("utf-8"),
        out / "summary.md": summary_markdown(frame, result.summary, spec, random_weights=result.random_weights,
                                             left_out=result.left_out).encode("utf-8"),
        out / "run.json": json_bytes({
            "spec": json.loads(json.dumps(asdict(spec), default=str)),
            "comparison_rule": run_rule(spec), "visual_pair": _visual_pair(spec),
            "store": str(result.store.path), "extraction": str(result.extraction),
            # what the stored entries were computed with (a scoring-only run may differ in threads or device)
            "store_identity": result.store.identity(),
            "references": result.references, "random_weights": result.random_weights, "left_out": result.left_out,
            "library_versions": library_versions(),
        }),
    })
