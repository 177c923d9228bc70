"""Scoring reads a category's store entries, and computes each branch map, once for all its settings.

One small generated category (64 px, 2 timesteps, 4 test images), every method that reads the
diffusion and CLIP branches, shots 0 and 1, two seeds: 8 settings per category. With the runner's
per-category :class:`~cfviz.evaluation.scoring.BranchCache`, M_diff_L is computed once per
category and no stored tensor of an image is read twice; the metric rows are those of the
uncached code, float for float.
"""

from __future__ import annotations

from collections import Counter

import pytest

from cfviz.capture.store import StoreEntry
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation import scoring as scoring_module
from cfviz.evaluation.plan import open_run_dataset, plan_run
from cfviz.evaluation.runner import EvaluationResult, _score


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationResult, RunSpec]:
    from cfviz.data.textures import generate_textures

    base = tmp_path_factory.mktemp("scoring_cache")
    root = generate_textures(base / "tex", seed=5, image_size=64, n_train=3, n_test_good=2, n_per_defect=1,
                             categories=["grass"], defect_kinds=["stain", "hole"])
    spec = RunSpec(dataset="folder", root=str(root), methods=("clipfusion", "mapdiff", "patchclip", "winclip"),
                   shots=(0, 1), seeds=(0, 1), batch_size=2,
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=64))
    result = evaluate(spec, base / "out", progress=False)
    assert isinstance(result, EvaluationResult)
    return result, spec


def _counting(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter, Counter]:
    """Count M_diff_L computations per category and tensor reads per (image, tensor name)."""
    maps: Counter = Counter()
    reads: Counter = Counter()
    real_language, real_load = scoring_module.diffusion_language_maps, StoreEntry.load

    def language(store, ids, scoring, extraction=None):  # type: ignore[no-untyped-def]
        maps[store[ids[0]].metadata["category"]] += 1
        return real_language(store, ids, scoring, extraction)

    def load(self, names=None):  # type: ignore[no-untyped-def]
        out = real_load(self, names)
        reads.update((self.image_id, n) for n in out)
        return out

    monkeypatch.setattr(scoring_module, "diffusion_language_maps", language)
    monkeypatch.setattr(StoreEntry, "load", load)
    return maps, reads


def test_each_branch_map_and_entry_is_computed_or_read_once_per_category(run, monkeypatch) -> None:
    result, spec = run
    plan = plan_run(spec, result.out_dir)
    dataset = plan.dataset
    settings = 2 * (1 + 2)  # clipfusion and mapdiff read M_diff_L: 0-shot once, 1-shot per seed

    maps, reads = _counting(monkeypatch)
    uncached = _score(result.store, plan, False, cache=False)
    assert maps == {"grass": settings}  # what the runner did before the cache
    assert max(reads.values()) > 1

    maps.clear()
    reads.clear()
    cached = _score(result.store, plan, False)
    assert maps == {"grass": 1}
    twice = {k: n for k, n in reads.items() if n > 1}
    assert not twice, f"tensors read more than once: {sorted(twice)[:5]}"
    tests = {r.image_id for r in dataset.records if r.split == "test"}
    assert {i for i, _ in reads} >= tests

    assert cached == uncached  # the same rows, float for float
    assert [r["value"] for r in cached] == list(result.frame["value"])


def test_a_caller_changing_its_predictions_does_not_change_the_cache(run) -> None:
    result, spec = run
    dataset = open_run_dataset(spec)
    # normalization "none" and maps already on the eval grid: the components could alias the cache
    scoring = ScoringConfig(language_min_resolution=1, eval_size=8, normalization="none")

    def predict(cache):  # type: ignore[no-untyped-def]
        return scoring_module.predict(result.store, dataset, "grass", "mapdiff", shots=1, seed=0, scoring=scoring,
                                      extraction=spec.extraction, cache=cache)

    cache = scoring_module.BranchCache()
    first = predict(cache)
    assert cache.computed["diff_language"] == 1 and cache.computed["diff_visual"] == 1
    for arr in first.components.values():
        arr += 1.0  # the caller's own arrays
    again = predict(cache)
    assert cache.computed["diff_language"] == 1 and cache.computed["diff_visual"] == 1
    assert (again.maps == predict(None).maps).all()
    assert all((again.components[k] == v).all() for k, v in predict(None).components.items())


def test_a_cache_reused_under_other_settings_recomputes(run) -> None:
    result, spec = run
    dataset = open_run_dataset(spec)
    other = ScoringConfig(language_min_resolution=4, eval_size=64)

    def predict(scoring, cache):  # type: ignore[no-untyped-def]
        return scoring_module.predict(result.store, dataset, "grass", "mapdiff", shots=1, seed=0, scoring=scoring,
                                      extraction=spec.extraction, cache=cache)

    cache = scoring_module.BranchCache()
    predict(spec.scoring, cache)
    reused = predict(other, cache)
    assert cache.computed["diff_language"] == 2
    assert (reused.maps == predict(other, None).maps).all()
    assert not (reused.maps == predict(spec.scoring, None).maps).all()
