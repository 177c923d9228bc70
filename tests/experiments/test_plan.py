"""One plan per run (issue 22): every setting a spec leaves to the run is resolved once, and the stages read it.

The invariant: during ``evaluate``, each resolver runs once per thing it resolves (the CLIP size,
the CLIP windows, the family defaults, the denoiser's pipeline class, the weights' fingerprints,
the batch plan, one draw per (category, k, seed)); whatever the stages print and write is the
plan's (``run.json`` = the plan's pair, rule, references and resolved spec).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.plan import RunPlan, plan_run


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> RunSpec:
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path_factory.mktemp("plan") / "tex", seed=5, image_size=48, n_train=3, n_test_good=2,
                             n_per_defect=1, categories=["grass", "brick"], defect_kinds=["stain"])
    return RunSpec(dataset="folder", root=str(root), methods=("clipfusion", "winclip"), shots=(0, 1, 2), seeds=(0, 3),
                   extraction=ExtractionConfig(diffusion_size=48, timesteps=(100, 400)),
                   scoring=ScoringConfig(eval_size=48, language_min_resolution=1), batch_size=3, store_form="compact")


def _count(monkeypatch: pytest.MonkeyPatch, calls: Counter, target: str, key=lambda *a, **k: None) -> None:
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[(name, key(*args, **kwargs))] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(target, counted)


def test_every_setting_is_resolved_once_per_run(spec: RunSpec, tmp_path: Path, monkeypatch) -> None:
    calls: Counter = Counter()
    for target in ("cfviz.evaluation.config.resolve_clip_size", "cfviz.evaluation.config.resolve_clip_windows",
                   "cfviz.evaluation.families.resolve_family_settings",
                   "cfviz.evaluation.families.diffusion_pipeline_class",
                   "cfviz.evaluation.models.weights_identity", "cfviz.evaluation.extraction.run_batches",
                   "cfviz.evaluation.plan.open_run_dataset", "cfviz.evaluation.scoring.visual_pair"):
        _count(monkeypatch, calls, target)
    _count(monkeypatch, calls, "cfviz.data.samples.sample_references", key=lambda d, c, k, s=0: (c, k, s))
    result = evaluate(spec, tmp_path / "run", progress=False)

    draws = {k for k in calls if k[0] == "sample_references"}
    assert draws == {("sample_references", (c, k, s)) for c in ("brick", "grass") for k in (1, 2) for s in (0, 3)}
    assert all(calls[k] == 1 for k in draws), {k[1]: calls[k] for k in draws if calls[k] != 1}
    once = {name: calls[(name, None)] for name in ("resolve_clip_size", "resolve_clip_windows",
                                                   "resolve_family_settings", "diffusion_pipeline_class",
                                                   "weights_identity", "run_batches", "open_run_dataset",
                                                   "visual_pair")}
    assert once == dict.fromkeys(once, 1)
    assert not result.frame.empty


def test_what_the_run_writes_is_the_plan(spec: RunSpec, tmp_path: Path) -> None:
    result = evaluate(spec, tmp_path / "run", progress=False)
    plan = plan_run(spec, tmp_path / "run")  # the store exists now: planning again reads it, resolves the same
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["visual_pair"] == plan.visual_pair == {"query_timestep": 400, "query_block": "up_blocks.1",
                                                        "reference_timestep": 400, "reference_block": "up_blocks.1"}
    assert saved["comparison_rule"] == dict(plan.rule)
    assert saved["references"] == plan.reference_table() == result.references
    assert plan.reference_table()["grass"]["3"] == list(plan.references["grass"][2][3])  # the largest k
    assert list(plan.references["grass"][1][3]) == list(plan.references["grass"][2][3])[:1]  # smaller k: a prefix
    assert result.spec == plan.spec and plan.spec.extraction.clip_size == 240 and plan.spec.extraction.clip_windows
    assert saved["store_identity"]["config"] == json.loads(json.dumps(dict(plan.identity)))
    assert set(plan.compact) == {"brick", "grass"}  # one draw per (k, seed), equal draws kept once:
    assert sum(len(d["seeds"]) for d in plan.compact["grass"].draws.values()) == 4
    rows = {(m, k, s) for m, k, s in result.frame[["method", "shots", "seed"]].itertuples(index=False)}
    assert rows == set(plan.settings)


def test_a_plan_is_frozen_and_a_shards_batches_are_its_share(spec: RunSpec, tmp_path: Path) -> None:
    from cfviz.evaluation.extraction import batches_for_shard

    whole = plan_run(spec, tmp_path / "run")
    with pytest.raises(dataclasses.FrozenInstanceError):
        whole.batches = ()  # type: ignore[misc]
    parts = [plan_run(spec, tmp_path / "run", shard=(i, 3)).batches for i in range(3)]
    assert [list(map(list, p)) for p in parts] == [batches_for_shard(whole.batches, i, 3) for i in range(3)]
    assert sorted(i for p in parts for b in p for i in b) == sorted(r.image_id for r in whole.records)
    assert isinstance(whole, RunPlan) and whole.family == "sd"
