"""One comparison rule for every method (issue 20), and the three bugs it fixes.

Each run-level rule (smoothing, image score, normalisation, evaluation grid) is a named scoring
setting, printed in summary.md, that never touches the store; each test here checks that a rule
changes every method in the same way. Maps and scores are compared directly (the tiny set's 4
test images tie the metrics). Tiny random-weight models: these numbers say the pipeline works,
not how well any method detects anomalies.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.runner import EvaluationResult, open_run_dataset

METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip", "aaclip")
#: Methods with a global (CLS) image score besides their map.
WITH_CLS = ("clipfusion", "patchclip", "winclip", "aaclip")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    from cfviz.clip.aaclip import AAClip
    from cfviz.data.textures import generate_textures
    from cfviz.evaluation import aaclip_branch
    from cfviz.models import tiny_clip

    tmp = tmp_path_factory.mktemp("rule")
    root = generate_textures(tmp / "tex", seed=5, image_size=64, n_train=2, n_test_good=2, n_per_defect=1,
                             categories=["brick"], defect_kinds=["stain", "hole"])
    path, digest = aaclip_branch.resolve_checkpoint(str(AAClip(tiny_clip(seed=0), seed=0).save(tmp / "a.safetensors")))
    # timesteps out of order: the list's middle (100) is not the middle by value (250)
    spec = RunSpec(dataset="folder", root=str(root), methods=METHODS, shots=(0, 1), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(400, 100, 250), diffusion_size=64, aaclip=path,
                                               aaclip_sha256=digest),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)
    result = evaluate(spec, tmp / "out", progress=False)
    assert isinstance(result, EvaluationResult)
    return result


def _predict(run: EvaluationResult, method: str, shots: int, dataset=None, **scoring):
    from cfviz.evaluation.scoring import predict

    spec = run.spec
    return predict(run.store, dataset or open_run_dataset(spec), "brick", method, shots=shots, seed=0,
                   scoring=replace(spec.scoring, **scoring), extraction=spec.extraction)


SETTINGS = [(m, k) for m in METHODS for k in (0, 1)]


# ---------------------------------------------------------------------------------------------- bugs
def test_the_visual_timestep_is_the_middle_by_value() -> None:
    """Bug: `--timesteps 50 400 261` took 400 (the list's middle) for M_diff_V."""
    from cfviz.evaluation.config import default_visual_timestep, resolved_pair

    assert default_visual_timestep([50, 400, 261]) == 261
    assert resolved_pair(ScoringConfig(), ExtractionConfig(timesteps=(50, 400, 261)))[0] == 261


def test_the_run_names_the_visual_pair_it_used(run: EvaluationResult) -> None:
    saved = json.loads((run.out_dir / "run.json").read_text())
    assert saved["visual_pair"] == {"query_timestep": 250, "query_block": "up_blocks.1",
                                    "reference_timestep": 250, "reference_block": "up_blocks.1"}
    assert "M_diff_V pair: query t=250 up_blocks.1, reference t=250 up_blocks.1" in \
        (run.out_dir / "summary.md").read_text()
    default = _predict(run, "mapdiff", 1).components["diff_visual"]
    np.testing.assert_array_equal(default, _predict(run, "mapdiff", 1, visual_timestep=250).components["diff_visual"])
    assert not np.array_equal(default, _predict(run, "mapdiff", 1, visual_timestep=100).components["diff_visual"])


@pytest.mark.parametrize("method, shots", SETTINGS)
def test_the_score_rule_moves_every_methods_image_score(run: EvaluationResult, method: str, shots: int) -> None:
    """Bug: --score-rule did nothing for PatchCLIP (and moved only the diffusion share of CLIPFusion)."""
    a, b = _predict(run, method, shots, score_rule="max"), _predict(run, method, shots, score_rule="mean")
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.allclose(a.scores, b.scores)


def test_a_knob_shows_only_the_metrics_it_can_move(run: EvaluationResult) -> None:
    """Bug: notebook 08 drew image AUROC for patchclip_language, which cannot move it when the image
    score is the CLS score. Invariant: no metric outside metric_kinds ever moves."""
    from cfviz.analysis.ablations import DESIGN_KNOBS, design_choices, metric_kind, metric_kinds

    ds = open_run_dataset(run.spec)
    metrics = ("image_auroc", "pixel_auroc")
    own = replace(run.spec.scoring, image_score="own")
    shown = design_choices(run.store, ds, knobs={"patchclip_language": ("patches",)}, methods=["patchclip"],
                           shots=(0,), scoring=own, metrics=metrics, movable_only=True)
    assert set(shown.metric) == {"pixel_auroc"}
    for scoring in (own, run.spec.scoring, replace(run.spec.scoring, image_score="cls")):
        table = design_choices(run.store, ds, methods=METHODS, shots=(0, 1), scoring=scoring, metrics=metrics)
        for (knob, method, shots, metric), group in table.groupby(["knob", "method", "shots", "metric"]):
            if metric_kind(metric) in metric_kinds(knob, scoring, [method]):
                continue
            assert group["value"].nunique() == 1, (knob, method, shots, metric, scoring.image_score)
        assert set(DESIGN_KNOBS) - {"smoothing"} <= set(table.knob)


# ------------------------------------------------------------------------------------ the shared rules
@pytest.mark.parametrize("method, shots", SETTINGS)
def test_smoothing_is_the_same_for_every_method(run: EvaluationResult, method: str, shots: int) -> None:
    """smoothing="shared": every method's final map is its unsmoothed map, Gaussian-smoothed by sigma."""
    from cfviz.fusion import smooth

    flat, smoothed = _predict(run, method, shots, sigma=0.0), _predict(run, method, shots, sigma=3.0)
    np.testing.assert_allclose(smoothed.maps, smooth(flat.maps, 3.0), atol=1e-5)
    assert not np.allclose(smoothed.maps, flat.maps)
    own = _predict(run, method, shots, sigma=3.0, smoothing="own")
    if method in ("winclip", "aaclip"):  # their own favourite: as released, no extra smoothing
        np.testing.assert_array_equal(own.maps, flat.maps)
    else:
        np.testing.assert_array_equal(own.maps, smoothed.maps)


@pytest.mark.parametrize("method, shots", SETTINGS)
def test_the_image_score_rule_is_the_same_for_every_method(run: EvaluationResult, method: str, shots: int) -> None:
    from cfviz.fusion import fuse, image_scores, smooth

    sc = run.spec.scoring
    for rule in ("max", "topk_mean"):
        by_map = _predict(run, method, shots, image_score="map", score_rule=rule)
        np.testing.assert_array_equal(by_map.scores, image_scores(by_map.maps, rule, topk=sc.topk))
        eq9 = _predict(run, method, shots, score_rule=rule)  # the default rule
        if method == "clipfusion":  # eq. 9: eq. 4's fusion with the classification alpha
            c = eq9.components
            cls_map = smooth(fuse({"language": c["clip_language"], "visual": c.get("clip_visual")},
                                  {"language": c["diff_language"], "visual": c.get("diff_visual")}, sc.alpha_cls),
                             sc.sigma)
            np.testing.assert_array_equal(eq9.scores, image_scores(cls_map, rule, topk=sc.topk))
        else:
            np.testing.assert_array_equal(eq9.scores, by_map.scores)
    cls = _predict(run, method, shots, image_score="cls")
    if method in WITH_CLS:
        assert cls.cls_scores is not None
        np.testing.assert_array_equal(cls.scores, cls.cls_scores)
    else:  # MapDiff has no CLS score: its map's
        assert cls.cls_scores is None
        np.testing.assert_array_equal(cls.scores, image_scores(cls.maps, sc.score_rule, topk=sc.topk))
    own = _predict(run, method, shots, image_score="own")
    if method == "clipfusion":  # cfviz's rule before issue 20, kept by name
        s = own.component_scores
        np.testing.assert_allclose(own.scores, sc.alpha_cls * s["clip"] + (1 - sc.alpha_cls) * s["diff"], atol=1e-6)


@pytest.mark.parametrize("method, shots", SETTINGS)
def test_inductive_normalisation_uses_no_other_test_image(run: EvaluationResult, method: str, shots: int) -> None:
    """normalization="inductive": an image's map and score do not change when other test images are left
    out, for every method (under the default "dataset" min-max they may: it is transductive)."""
    full_ds = open_run_dataset(run.spec)
    tests = [r for r in full_ds.records if r.split == "test"]
    subset = copy.copy(full_ds)
    subset._records = tuple(r for r in full_ds.records if r is not tests[-1])  # one anomalous image less
    full = _predict(run, method, shots, normalization="inductive")
    part = _predict(run, method, shots, dataset=subset, normalization="inductive")
    np.testing.assert_allclose(part.maps, full.maps[:-1], atol=1e-6)
    np.testing.assert_allclose(part.scores, full.scores[:-1], atol=1e-6)


@pytest.mark.parametrize("method, shots", SETTINGS)
def test_every_method_is_scored_on_one_grid(run: EvaluationResult, method: str, shots: int) -> None:
    """eval_size: every method's maps and the masks share the grid (masks nearest-neighbour, values kept)."""
    p = _predict(run, method, shots, eval_size=16)
    assert p.maps.shape[1:] == p.masks.shape[1:] == (16, 16)
    assert set(np.unique(p.masks)) <= {0, 1}


# ------------------------------------------------------------------------------ named, printed, validated
def test_the_rule_is_printed_and_kept(run: EvaluationResult) -> None:
    summary = (run.out_dir / "summary.md").read_text()
    saved = json.loads((run.out_dir / "run.json").read_text())
    for name in ("smoothing", "normalization before fusion", "image score", "evaluation grid"):
        assert f"- {name}: " in summary and name in saved["comparison_rule"]
    assert "Gaussian sigma 4 px on every method's final map (shared)" in summary
    assert "32 x 32 px: masks resized nearest-neighbour" in summary
    assert saved["spec"]["scoring"]["image_score"] == "eq9" and saved["spec"]["scoring"]["smoothing"] == "shared"


def test_published_numbers_state_their_grid(run: EvaluationResult) -> None:
    import pandas as pd

    from cfviz.analysis.published import published_frame
    from cfviz.evaluation.runner import summarize, summary_markdown

    pub = published_frame()
    assert pub["grid"].str.len().gt(0).all()
    frame = run.frame[run.frame.method == "winclip"].assign(dataset="mvtec", category="carpet")
    spec = replace(run.spec, dataset="mvtec", methods=("winclip",))
    text = summary_markdown(frame, summarize(frame), spec, random_weights=False)
    assert "(paper " in text and "240 px CLIP input" in text and "--image-score own --smoothing own" in text
    assert isinstance(pub, pd.DataFrame)
    from cfviz.analysis.export import results_table

    table = results_table(frame, published=True)
    assert any("grid: 240 px CLIP input" in note for note in table.notes)


def test_rule_settings_are_validated_and_set_by_the_cli() -> None:
    import argparse

    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args
    from cfviz.errors import ConfigError

    for name, bad in (("image_score", "max"), ("smoothing", "none"), ("normalization", "transductive")):
        with pytest.raises(ConfigError) as err:
            ScoringConfig(**{name: bad})
        assert err.value.field == f"scoring.{name}"
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    s = spec_from_args(p.parse_args(["--image-score", "cls", "--smoothing", "own", "--normalization", "inductive"]))
    assert (s.scoring.image_score, s.scoring.smoothing, s.scoring.normalization) == ("cls", "own", "inductive")
    assert {"scoring.image_score", "scoring.smoothing"} <= set(FLAGS)


def test_the_rule_is_scoring_only(run: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rule setting rescored from the same store: no model loads, no store file changes."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a scoring setting loaded a model")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    files = {p: p.stat().st_mtime_ns for p in sorted(run.store.path.rglob("*")) if p.is_file()}
    scoring = replace(run.spec.scoring, image_score="cls", smoothing="own", normalization="inductive")
    other = evaluate(replace(run.spec, scoring=scoring), tmp_path, store_dir=run.store.path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in sorted(run.store.path.rglob("*")) if p.is_file()} == files
    assert len(other.frame) == len(run.frame)
    assert "each method's own (own)" in (tmp_path / "summary.md").read_text()


def test_the_rule_takes_the_resolved_pair_and_still_the_older_extraction_form() -> None:
    from cfviz.evaluation.scoring import comparison_rule, visual_pair

    s, e = ScoringConfig(), ExtractionConfig(timesteps=(50, 400, 261))
    assert comparison_rule(s, e) == comparison_rule(s, visual_pair(s, e))  # the form before the plan
    assert "M_diff_V pair" in comparison_rule(s, e) and comparison_rule(s, e, k_shot=False) == comparison_rule(s)
