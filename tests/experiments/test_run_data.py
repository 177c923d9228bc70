"""What a run needs of its data set is checked when the data set is listed, before any model loads (issue 19).

Before: a data set whose categories have no test images crashed after scoring with
``KeyError: 'category'``; one empty category of two was left out of the means without a word; a
category with only normal (or only anomalous) test images failed in the metrics, after
extraction, without its name; ``--shots 1`` without training images said ``split='train'``.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from cfviz.cli import main
from cfviz.errors import DataContentError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.datacheck import LeftOutCategoryWarning


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=2, n_test_good=2,
                             n_per_defect=1, categories=["grass", "brick"], defect_kinds=["stain"])


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    shutil.copytree(source, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data set was checked")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)


def _spec(root: Path, **kw) -> RunSpec:
    base = RunSpec(dataset="folder", root=str(root), methods=("patchclip",), shots=(0,), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1), batch_size=4)
    return replace(base, **kw)


def _empty_tests(root: Path, category: str) -> None:
    shutil.rmtree(root / category / "test")
    shutil.rmtree(root / category / "ground_truth")  # else its masks are masks without images (warned about)
    (root / category / "test").mkdir()


def test_no_test_images_anywhere_is_one_sentence_and_keeps_earlier_results(root: Path, tmp_path: Path,
                                                                            no_models: None) -> None:
    for cat in ("grass", "brick"):
        _empty_tests(root, cat)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("an earlier complete result\n")
    with pytest.raises(DataContentError, match=r"no category of the data set has test images \('brick', 'grass'"):
        evaluate(_spec(root), out, progress=False)
    assert (out / "results.csv").read_text() == "an earlier complete result\n"


def test_an_empty_category_is_named_never_silently_dropped(root: Path, tmp_path: Path) -> None:
    _empty_tests(root, "brick")
    with pytest.warns(LeftOutCategoryWarning, match=r"category 'brick' is left out: no test images in .*brick"):
        result = evaluate(_spec(root), tmp_path / "out", progress=False)
    assert set(result.frame["category"]) == {"grass"}
    assert list(result.left_out) == ["brick"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Left out of every table and mean: brick (no test images in" in summary


@pytest.mark.parametrize("remove, expected", [
    ("test/stain", r"category 'grass' has only normal test images \(2 in .*grass/test/good\) and no anomalous ones"),
    ("test/good", r"category 'grass' has no normal test images \(.*grass/test/good is missing or empty"),
])
def test_a_category_with_one_kind_of_test_image_is_named_before_any_model(root: Path, tmp_path: Path, remove: str,
                                                                          expected: str, no_models: None) -> None:
    shutil.rmtree(root / "grass" / remove)
    if remove == "test/stain":
        shutil.rmtree(root / "grass" / "ground_truth")  # its masks would be masks without images
    with pytest.raises(DataContentError, match=expected):
        evaluate(_spec(root), tmp_path / "out", progress=False)


@pytest.mark.parametrize("train_images, expected", [
    (0, r"--shots 1 draws normal reference images .* category 'grass' has none \(.*grass/train/good is missing or "
        r"empty\); add normal images there, or use --shots 0"),
    (1, r"--shots 2 needs 2 normal training images of category 'grass', but .*grass/train/good holds 1; use "
        r"--shots 1 or less"),
])
def test_shots_without_enough_training_images_speaks_cli(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        train_images: int, expected: str, no_models: None) -> None:
    files = sorted((root / "grass" / "train" / "good").iterdir())
    for f in files[train_images:]:
        f.unlink()
    shots = "1" if train_images == 0 else "2"
    code = main(["evaluate", "--dataset", "folder", "--root", str(root), "--method", "patchclip", "--shots", shots,
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(expected, err), err
    assert "split=" not in err and "shots=" not in err


def test_a_complete_data_set_passes_the_check_untouched(source: Path) -> None:
    from cfviz.evaluation.datacheck import check_run_data
    from cfviz.evaluation.runner import open_run_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_run_data(open_run_dataset(_spec(source)), shots=(0, 2)) == {}


def test_every_category_is_scored_or_named(tmp_path: Path) -> None:
    """The invariant, over random layouts: a category is scored only with both kinds of test image
    (and k training images for k shots), is named as left out when it has no test image, and any
    other case stops the run with a sentence naming it. Nothing is dropped without a word."""
    import numpy as np

    from cfviz.data.samples import AnomalyDataset, SampleRecord, make_image_id
    from cfviz.evaluation.datacheck import check_run_data
    from cfviz.evaluation.runner import test_categories

    rng = np.random.default_rng(0)
    for trial in range(300):
        records = []
        counts = {}
        for c in range(int(rng.integers(1, 4))):
            cat = f"c{c}"
            n_train, n_good, n_bad = (int(x) for x in rng.integers(0, 3, size=3))
            counts[cat] = (n_train, n_good, n_bad)
            for split, defect, n in (("train", "good", n_train), ("test", "good", n_good), ("test", "dent", n_bad)):
                for i in range(n):
                    records.append(SampleRecord(Path(f"/d/{cat}/{split}/{defect}/{i}.png"), None, int(defect != "good"),
                                                cat, defect, split, make_image_id(cat, split, defect, str(i))))
        if not records:
            continue
        ds = AnomalyDataset(records, has_masks=False, info={"kind": "folder"})
        k = int(rng.integers(0, 3))
        present = list(ds.categories)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                left_out = check_run_data(ds, shots=(k,))
            except DataContentError as exc:
                text = str(exc)
                bad = [c for c in present if (sum(counts[c][1:]) and (not counts[c][1] or not counts[c][2]
                                                                    or counts[c][0] < k))]
                assert bad or all(not sum(counts[c][1:]) for c in present), (trial, counts, k, text)
                assert any(f"'{c}'" in text for c in (bad or present)), (trial, text)
                continue
        scored = test_categories(ds)
        assert set(scored) | set(left_out) == set(present) and not set(scored) & set(left_out), trial
        for c in scored:
            n_train, n_good, n_bad = counts[c]
            assert n_good and n_bad and n_train >= k, (trial, c, counts[c], k)
        for c in left_out:
            assert not sum(counts[c][1:]) and any(f"'{c}' is left out" in str(w.message) for w in caught), trial
