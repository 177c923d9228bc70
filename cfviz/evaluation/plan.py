"""The resolved run: :func:`plan_run` turns a :class:`RunSpec` into an immutable :class:`RunPlan`, once.

A ``RunSpec`` is what the user asked for, and it may leave settings to the run: the CLIP's own
input size, CLIP windows "when a method needs them", a denoiser family's own layers. The plan
decides each of them once, opens the data set, draws every k-shot reference and cuts the batches;
every later stage reads the plan and resolves nothing again (the journey: :mod:`cfviz.evaluation`).

Where each setting is resolved (one home, one test each):

=========================== ===================================================================
CLIP input size             :func:`cfviz.evaluation.config.resolve_clip_size`
CLIP windows (auto)         :func:`cfviz.evaluation.config.resolve_clip_windows` (with the store's)
family defaults             :func:`cfviz.evaluation.families.resolve_family_settings`
M_diff_V (timestep, block)  :func:`cfviz.evaluation.config.resolved_pair`
store identity              :func:`store_identity` (models, weights, extraction, batch size, ...)
batches                     :func:`cfviz.evaluation.extraction.run_batches`
reference draws             :func:`cfviz.data.samples.sample_references`, per (category, k, seed)
compact plan                :func:`cfviz.evaluation.compact.compact_plan`
=========================== ===================================================================

>>> from cfviz.evaluation.config import RunSpec
>>> resolve_spec(RunSpec()).extraction.clip_size, resolve_spec(RunSpec()).extraction.clip_windows
(240, False)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfviz.evaluation.config import DIFFUSION_METHODS, ModelChoice, RunSpec

#: Reader options that drop test images (and so change which images share a planned batch).
SUBSET_OPTIONS: dict[str, Any] = {"limit_per_type": None, "missing_masks": "skip"}


@dataclass(frozen=True)
class RunPlan:
    """Everything a run does, decided before any model loads (see the module docstring).

    ``references[category][k][seed]`` are the reference ids of every k >= 1 of the run (a smaller
    k is a prefix of a larger one); ``records`` are the images extracted: the test images of
    ``categories``, then each reference of the largest k once; ``batches`` the batches of this
    shard (or process) of the run's batch plan.
    """

    spec: RunSpec  #: the spec with every setting resolved (:func:`resolve_spec`), as recorded in run.json
    out_dir: Path
    store_dir: Path
    dataset: Any  #: the opened data set, both splits
    family: str  #: the denoiser family (:func:`cfviz.evaluation.families.diffusion_family`)
    categories: tuple[str, ...]  #: the categories scored (those with test images)
    left_out: Mapping[str, str]  #: categories not scored, with the reason
    references: Mapping[str, Mapping[int, Mapping[int, tuple[str, ...]]]]
    records: tuple[Any, ...]
    batches: tuple[tuple[str, ...], ...]
    shard: tuple[int, int] | None
    identity: Mapping[str, Any]  #: what the capture store must agree on (:func:`store_identity`)
    settings: tuple[tuple[str, int, int], ...]  #: (method, shots, seed) scored, in order
    visual_pair: Mapping[str, Any] | None  #: M_diff_V's pair, named, of a run that scores it
    rule: Mapping[str, str]  #: the comparison rule in words (:func:`cfviz.evaluation.scoring.comparison_rule`)
    compact: Mapping[str, Any]  #: category -> :class:`~cfviz.evaluation.compact.CompactPlan` (compact form)

    def references_of(self, category: str, shots: int, seed: int) -> list[str]:
        """The reference ids of one setting (empty in zero-shot)."""
        return list(self.references[category][shots][seed]) if shots else []

    def reference_table(self) -> dict[str, dict[str, list[str]]]:
        """``category -> seed -> ids`` of the largest k, as ``run.json`` records them."""
        k = max(self.spec.shots)
        return {c: {str(s): list(ids) for s, ids in per[k].items()} for c, per in self.references.items()} if k else {}


def resolve_spec(spec: RunSpec, stored_windows: bool | None = None, *, family: str | None = None) -> RunSpec:
    """``spec`` with every setting it leaves to the run decided: CLIP size, CLIP windows, family defaults.

    ``stored_windows``: whether the store the run will use holds CLIP windows (an existing store's
    are reused, :func:`stored_clip_windows`); ``family``: the denoiser family, when known already.
    """
    from cfviz.evaluation.config import resolve_clip_size, resolve_clip_windows
    from cfviz.evaluation.families import resolve_family_settings

    spec = resolve_clip_size(spec)
    spec = resolve_clip_windows(spec, stored_windows)
    return resolve_family_settings(spec, family=family)


def plan_run(spec: RunSpec, out_dir: str | Path, store_dir: str | Path | None = None,
             shard: tuple[int, int] | None = None) -> RunPlan:
    """Check ``spec`` (:func:`~cfviz.evaluation.preflight.preflight`), then resolve it into a :class:`RunPlan`.

    Opens the data set (a texture set is generated on first use) and checks what each category
    needs (:func:`~cfviz.evaluation.datacheck.check_run_data`); no model loads.
    """
    from cfviz.evaluation.compact import compact_plan, group_draws
    from cfviz.evaluation.datacheck import check_run_data
    from cfviz.evaluation.extraction import run_batches
    from cfviz.evaluation.preflight import preflight
    from cfviz.evaluation.scoring import comparison_rule

    out = Path(out_dir)
    store = Path(store_dir) if store_dir is not None else out / "store"
    family = preflight(spec, out, store)  # every check, before any data is generated; the family it read
    spec = resolve_spec(spec, stored_clip_windows(store), family=family)
    dataset = open_run_dataset(spec)
    left_out = check_run_data(dataset, spec.shots)  # what each category lacks, before any model loads
    categories = test_categories(dataset)
    references = draw_references(dataset, categories, spec.shots, spec.seeds)
    records = run_records(dataset, categories, references, max(spec.shots))
    pair = scored_visual_pair(spec)
    compact = {}
    if spec.store_form == "compact":
        ks = sorted({int(k) for k in spec.shots if k})
        for c in categories:
            draws = group_draws((k, s, references[c][k][s]) for k in ks for s in spec.seeds)
            tests = [r.image_id for r in dataset.records if r.category == c and r.split == "test"]
            compact[c] = compact_plan(tests, draws, spec.extraction, spec.scoring)
    settings = tuple((m, k, s) for m in spec.methods for k in spec.shots for s in (spec.seeds if k else spec.seeds[:1]))
    return RunPlan(spec=spec, out_dir=out, store_dir=store, dataset=dataset, family=family,
                   categories=tuple(categories), left_out=left_out, references=references, records=tuple(records),
                   batches=tuple(tuple(b) for b in run_batches(records, spec.batch_size, shard)), shard=shard,
                   identity=_identity(spec, family), settings=settings, visual_pair=pair,
                   rule=comparison_rule(spec.scoring, pair), compact=compact)


def scored_visual_pair(spec: RunSpec) -> dict[str, Any] | None:
    """M_diff_V's (timestep, block) pair, named, of a run that scores it (a diffusion method, k > 0); else ``None``.

    >>> scored_visual_pair(RunSpec()) is None, scored_visual_pair(RunSpec(shots=(0, 1)))["query_block"]
    (True, 'up_blocks.1')
    """
    from cfviz.evaluation.scoring import visual_pair

    k_shot_diffusion = max(spec.shots) > 0 and bool(set(spec.methods) & set(DIFFUSION_METHODS))
    return visual_pair(spec.scoring, spec.extraction) if k_shot_diffusion else None


def model_identity(choice: ModelChoice, family: str | None = None) -> dict[str, Any]:
    """The parts of a model choice that change outputs: the device's type, not its index.

    Shards on ``cuda:0`` and ``cuda:1`` share a store; CPU and CUDA kernels give different numbers,
    so ``cpu`` and ``cuda`` stores are kept apart.

    The denoiser family (:func:`cfviz.evaluation.families.diffusion_family`, looked up unless
    given) is recorded for every family but SD 1.x/2.x (whose stores were written before families
    existed), so a store made by one family refuses another (``models.family: "sdxl" -> "sd3"``).

    >>> model_identity(ModelChoice(device="cuda:1"))["device_type"]
    'cuda'
    >>> model_identity(ModelChoice(diffusion="tiny-sd3"))["family"]
    'sd3'
    """
    from cfviz.evaluation.families import diffusion_family

    d = choice.identity()  # the speed options only when they may change numbers (ModelChoice.identity)
    device = str(d.pop("device"))
    d["device_type"] = device.split(":", 1)[0].strip().lower() or "cpu"
    family = family or diffusion_family(choice)
    if family != "sd":
        d["family"] = family
    return d


def store_identity(spec: RunSpec) -> dict[str, Any]:
    """What the capture store of a run of ``spec`` must agree on before any entry is shared (see CaptureStore).

    Models (with dtype and device type), a fingerprint of their weights (seeds of random weights,
    SHA-256 of local files; hub commits are added once the models load), the extraction settings
    and the batch size (kernels give batch-dependent numbers; batches are planned from it); on
    the CPU also the number of torch threads. ``spec`` is resolved first (:func:`resolve_spec`);
    a run's plan keeps the identity it computed (``RunPlan.identity``).
    """
    return _identity(resolve_spec(spec))


def _identity(spec: RunSpec, family: str | None = None) -> dict[str, Any]:
    """:func:`store_identity` of a resolved spec."""
    from cfviz.evaluation.models import weights_identity

    identity = {"models": model_identity(spec.models, family), "weights": weights_identity(spec.models),
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


def subset_options(dataset_options: dict[str, Any]) -> dict[str, Any]:
    """The reader options of a run that take a subset of each category's test images.

    Batches are planned per category (:func:`cfviz.evaluation.extraction.run_batches`), so a
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


def test_categories(dataset: Any) -> list[str]:
    """The categories of ``dataset`` that have test images (the ones a run scores)."""
    return [c for c in dataset.categories if any(r.category == c and r.split == "test" for r in dataset.records)]


def draw_references(dataset: Any, categories: Sequence[str], shots: Sequence[int],
                    seeds: Sequence[int]) -> dict[str, dict[int, dict[int, tuple[str, ...]]]]:
    """``category -> k -> seed -> reference ids`` for every k >= 1 of a run (a smaller k is a prefix)."""
    from cfviz.data.samples import sample_references

    ks = sorted({int(k) for k in shots if k})
    return {c: {k: {int(s): tuple(r.image_id for r in sample_references(dataset, c, k, s)) for s in seeds}
                for k in ks} for c in categories} if ks else {}


def run_records(dataset: Any, categories: Sequence[str], references: Mapping[str, Mapping[int, Any]],
                shots: int) -> list[Any]:
    """The images a run extracts: the test images of ``categories``, then each reference of
    ``shots`` (the largest k; ``references``: :func:`draw_references`) once."""
    records = [r for r in dataset.records if r.split == "test" and r.category in categories]
    seen = {r.image_id for r in records}
    by_id = {r.image_id: r for r in dataset.records}
    for per_k in references.values():  # k-shot references join the extraction, each once
        for image_id in (i for ids in (per_k[shots].values() if shots else ()) for i in ids):
            if image_id not in seen:
                seen.add(image_id)
                records.append(by_id[image_id])
    return records
