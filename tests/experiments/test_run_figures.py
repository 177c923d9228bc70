"""Figures and exports of a run keep its truth and its context (issue 21), on one small tiny-model run:

* the demo's qualitative figure shows the run's own predictions (nothing predicted again: the maps
  are the ones that were scored) and one image per defect type, saying how it picked;
* ``matching_export`` of a random-weight store keeps the random-weights note, names the block or
  timestep held fixed, and puts no project-internal text in the LaTeX footnote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.runner import EvaluationResult


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationResult, object]:
    from cfviz.data.textures import generate_textures
    from cfviz.evaluation.runner import open_run_dataset

    root = generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=2, n_test_good=1,
                             n_per_defect=2, categories=["grass", "brick"], defect_kinds=["stain", "hole", "scratch"])
    spec = RunSpec(dataset="folder", root=str(root), methods=("clipfusion", "winclip"), shots=(1,), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=4)
    keep = [("clipfusion", 1, 0), ("winclip", 1, 0)]
    result = evaluate(spec, tmp_path_factory.mktemp("run"), progress=False, keep=keep)
    assert isinstance(result, EvaluationResult)
    return result, open_run_dataset(spec)


def test_kept_predictions_are_what_predict_gives(run: tuple[EvaluationResult, object]) -> None:
    from cfviz.evaluation.scoring import predict

    result, dataset = run
    assert sorted(result.predictions) == [(c, m, 1, 0) for c in ("brick", "grass") for m in ("clipfusion", "winclip")]
    for (category, method, shots, seed), kept in result.predictions.items():
        again = predict(result.store, dataset, category, method, shots=shots, seed=seed, scoring=result.spec.scoring,
                        extraction=result.spec.extraction)
        assert kept.image_ids == again.image_ids
        np.testing.assert_array_equal(kept.maps, again.maps)  # byte for byte
        np.testing.assert_array_equal(kept.scores, again.scores)


def test_demo_figure_reuses_the_run_and_shows_each_defect_type(
        run: tuple[EvaluationResult, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cfviz.evaluation.scoring as scoring
    from cfviz.commands.demo import PICK_RULE, qualitative_rows, write_figures

    result, dataset = run

    def refuse(*args, **kwargs):
        raise AssertionError("the figure predicted again instead of reusing the run's predictions")

    monkeypatch.setattr(scoring, "predict", refuse)
    rows = qualitative_rows(result, dataset, shots=1)
    kinds = [row["label"].split("\n")[0].split(", ")[1] for row in rows]
    assert kinds == ["hole", "scratch", "stain"]  # one per defect type, not the first anomalous image each
    assert {row["label"].split(",")[0] for row in rows} == {"brick", "grass"}  # categories in turn
    for row in rows:  # the highest-scored image of its type in its category, its score shown
        cat, kind = row["label"].split("\n")[0].split(", ")
        p = result.predictions[(cat, "clipfusion", 1, 0)]
        best = max(s for s, t in zip(p.scores, p.defect_types) if t == kind)
        assert row["label"].endswith(f"image score {best:.2f}")
        assert any(np.array_equal(row["fused"], m) for m in p.maps)
    paths = write_figures(result, dataset, tmp_path, note="random weights")
    assert {p.name for p in paths} >= {"demo_qualitative.png", "demo_metrics.png"}
    assert "defect type" in PICK_RULE and "highest" in PICK_RULE


def test_matching_export_keeps_the_context_of_the_store(run: tuple[EvaluationResult, object]) -> None:
    from cfviz.analysis.ablations import matching_table
    from cfviz.analysis.export import RANDOM_WEIGHTS_TABLE_NOTE, matching_export, results_table

    result, dataset = run
    for kind, fixed in (("timestep", "block up1 held fixed"), ("block", "timestep 400 held fixed")):
        frame = matching_table(result.store, dataset, kind=kind, shots=1, scoring=result.spec.scoring)
        assert set(frame["fixed"]) == {fixed.removesuffix(" held fixed")}
        t = matching_export(frame)
        tex, md = t.latex(), t.markdown()
        assert fixed in md and fixed in tex
        # the same note results_table keeps for this run
        assert RANDOM_WEIGHTS_TABLE_NOTE in md and RANDOM_WEIGHTS_TABLE_NOTE in results_table(result).markdown()
        footnote = tex.split(r"\footnotesize", 1)[1]
        assert "cfviz" not in footnote and "No published numbers" not in footnote
    assert RANDOM_WEIGHTS_TABLE_NOTE not in matching_export(frame, random_weights=False).markdown()
