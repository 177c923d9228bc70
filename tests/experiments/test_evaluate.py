"""The evaluation runner end to end on a small generated data set with the offline tiny models.

Checks: the tables it writes, a rerun that loads no model, resuming after an interruption
without redoing finished images, shards that merge into the same result, a store refused when
the extraction settings change, and the CLI.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from cfviz.capture.store import CaptureStore, StoreMismatchError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation import runner
from cfviz.evaluation.runner import RANDOM_WEIGHTS_NOTE, EvaluationResult

METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=3, n_test_good=2,
                             n_per_defect=1, categories=["grass", "brick"], defect_kinds=["stain", "hole"])


@pytest.fixture(scope="module")
def spec(small_root: Path) -> RunSpec:
    return RunSpec(dataset="folder", root=str(small_root), methods=METHODS, shots=(0, 1), seeds=(0, 1),
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64),
                   # 64 px images give coarse attention grids: use every recorded resolution
                   scoring=ScoringConfig(language_min_resolution=1), batch_size=3)


@pytest.fixture(scope="module")
def full(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    result = evaluate(spec, tmp_path_factory.mktemp("full"), progress=False)
    assert isinstance(result, EvaluationResult)
    return result


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["category", "method", "shots", "seed", "metric"]).reset_index(drop=True)


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although every image is in the store")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)


def test_tables_cover_every_setting(full: EvaluationResult, spec: RunSpec) -> None:
    f = full.frame
    assert set(f["method"]) == set(METHODS)
    assert set(f["category"]) == {"brick", "grass"}
    # zero-shot is seed-independent (one seed row); 1-shot has one row per seed
    assert set(f[f.shots == 0]["seed"]) == {0} and set(f[f.shots == 1]["seed"]) == {0, 1}
    assert {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
            "pixel_aupro"} <= set(f["metric"])
    assert f["value"].between(0, 1).all()
    assert len(full.summary) == len(METHODS) * 2 * f["metric"].nunique()
    md = (full.out_dir / "summary.md").read_text()
    assert RANDOM_WEIGHTS_NOTE in md and "| clipfusion | 1 |" in md
    run = (full.out_dir / "run.json").read_text()
    # the k-shot references of every category and seed are recorded, drawn from train/good
    assert '"references"' in run and "train/good" in run
    written = pd.read_csv(full.out_dir / "results.csv")
    pd.testing.assert_frame_equal(_sorted(written), _sorted(f), check_dtype=False)


def test_k_shot_seeds_draw_different_references(full: EvaluationResult) -> None:
    refs = full.references["grass"]
    assert refs["0"] != refs["1"]


def test_rerun_uses_the_store_and_loads_no_model(full: EvaluationResult, spec: RunSpec, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _no_models(monkeypatch)
    again = evaluate(spec, tmp_path, store_dir=full.store.path, progress=False)
    assert again.extraction.new == 0 and again.extraction.already == again.extraction.total
    pd.testing.assert_frame_equal(_sorted(again.frame), _sorted(full.frame))


def test_interrupted_run_resumes_without_redoing_finished_images(full: EvaluationResult, spec: RunSpec,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_add = CaptureStore.add
    written: list[str] = []

    def add_then_interrupt(self, image_id, *args, **kwargs):
        if len(written) == 4:
            raise KeyboardInterrupt
        written.append(image_id)
        return real_add(self, image_id, *args, **kwargs)

    monkeypatch.setattr(CaptureStore, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        evaluate(spec, tmp_path, progress=False)
    monkeypatch.setattr(CaptureStore, "add", real_add)
    store = CaptureStore(tmp_path / "store")
    assert sorted(store.ids) == sorted(written)  # finished images survived, nothing half-written

    redone: list[str] = []

    def counting_add(self, image_id, *args, **kwargs):
        redone.append(image_id)
        return real_add(self, image_id, *args, **kwargs)

    monkeypatch.setattr(CaptureStore, "add", counting_add)
    resumed = evaluate(spec, tmp_path, progress=False)
    assert resumed.extraction.already == 4
    assert not set(redone) & set(written)
    assert resumed.extraction.new == len(redone) == resumed.extraction.total - 4
    pd.testing.assert_frame_equal(_sorted(resumed.frame), _sorted(full.frame), atol=1e-6)


def test_shards_merge_into_the_same_result(full: EvaluationResult, spec: RunSpec, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "shared_store"
    reports = [evaluate(spec, tmp_path, store_dir=store, shard=(i, 2), progress=False) for i in range(2)]
    assert all(not isinstance(r, EvaluationResult) for r in reports)
    assert sum(r.new for r in reports) == full.extraction.total
    _no_models(monkeypatch)
    merged = evaluate(spec, tmp_path, store_dir=store, progress=False)
    pd.testing.assert_frame_equal(_sorted(merged.frame), _sorted(full.frame), atol=1e-6)


def test_store_of_other_extraction_settings_is_refused(full: EvaluationResult, spec: RunSpec,
                                                       tmp_path: Path) -> None:
    other = replace(spec, extraction=replace(spec.extraction, timesteps=(100, 500)))
    with pytest.raises(StoreMismatchError, match="timesteps"):
        evaluate(other, tmp_path, store_dir=full.store.path, progress=False)


def test_scoring_settings_change_results_without_new_extraction(full: EvaluationResult, spec: RunSpec,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _no_models(monkeypatch)
    clip_only = replace(spec, methods=("clipfusion",), shots=(1,),
                        scoring=replace(spec.scoring, alpha_seg=1.0, alpha_cls=1.0))
    patch = replace(clip_only, methods=("patchclip",))
    a = evaluate(clip_only, tmp_path / "a", store_dir=full.store.path, progress=False).frame
    b = evaluate(patch, tmp_path / "b", store_dir=full.store.path, progress=False).frame
    # alpha = 1 keeps only the CLIP branch: CLIPFusion's maps and scores become PatchCLIP's
    key = ["category", "seed", "metric"]
    a, b = a.set_index(key)["value"].sort_index(), b.set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(a, b, atol=1e-6)


def test_unknown_method_is_a_clear_error(spec: RunSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate(replace(spec, methods=("patchcore",)), tmp_path)


def test_cli_writes_tables(full: EvaluationResult, small_root: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import main

    code = main(["evaluate", "--dataset", "folder", "--root", str(small_root), "--method", "winclip",
                 "--shots", "0", "1", "--seeds", "0", "1", "--timesteps", "100", "400",
                 "--diffusion-size", "64", "--out", str(tmp_path), "--store", str(full.store.path),
                 "--batch-size", "3", "--no-progress"])  # the store's batch size (part of its identity)
    assert code == 0
    out = capsys.readouterr().out
    assert "| winclip | 1 |" in out and RANDOM_WEIGHTS_NOTE in out
    frame = pd.read_csv(tmp_path / "results.csv")
    expected = full.frame[full.frame.method == "winclip"]
    pd.testing.assert_frame_equal(_sorted(frame), _sorted(expected), check_dtype=False, atol=1e-6)


def test_cli_bad_shard_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--shard", "3/2"])
    assert "--shard 3/2: need 0 <= i < n" in capsys.readouterr().err


def test_dataset_options_reach_the_reader(tmp_path: Path) -> None:
    from cfviz.evaluation.runner import open_run_dataset

    spec = RunSpec(dataset="textures", root=str(tmp_path / "tex"), categories=("gravel",),
                   dataset_options={"n_train": 1, "n_test_good": 1, "n_per_defect": 1, "image_size": 32})
    ds = open_run_dataset(spec)
    assert sum(r.split == "train" for r in ds.records) == 1
    assert ds.load(ds.records[0]).image.shape == (32, 32, 3)


def test_a_missing_mask_leaves_out_that_image_not_the_category(small_root: Path, spec: RunSpec,
                                                               tmp_path: Path) -> None:
    """--missing-masks warn: the unannotated image is left out of pixel metrics; the category keeps them."""
    import shutil
    import warnings

    from cfviz.evaluation.scoring import annotated_masks, predict
    from cfviz.metrics import pixel_metrics

    root = tmp_path / "data"
    shutil.copytree(small_root, root)
    (root / "grass" / "ground_truth" / "hole" / "000_mask.png").unlink()
    one = replace(spec, root=str(root), dataset_options={"missing_masks": "warn"}, methods=("patchclip",),
                  shots=(0,), seeds=(0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(one, tmp_path / "out", progress=False)
        f = result.frame
        got = f[(f.category == "grass") & (f.metric == "pixel_auroc")]["value"]
        assert len(got) == 1  # the category still has pixel metrics
        dataset = runner.open_run_dataset(one)
        tests = [r for r in dataset.records if r.category == "grass" and r.split == "test"]
        masks, keep = annotated_masks(dataset, tests, one.scoring.eval_size)
        p = predict(result.store, dataset, "grass", "patchclip", shots=0, seed=0, scoring=one.scoring,
                    extraction=one.extraction, masks=masks)
    assert keep.tolist() == ["hole" not in i for i in p.image_ids]  # only the image without a mask
    expected = pixel_metrics(p.masks[keep], p.maps[keep])["pixel_auroc"]
    assert float(got.iloc[0]) == pytest.approx(expected, abs=1e-12)
