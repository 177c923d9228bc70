"""Data that is wrong in ways that change numbers (issue 10): JPEG masks, empty masks of anomalous
images, data sets without masks, and the deterministic ``limit_per_type`` subset.

Each test uses only names that existed before the fix, so on the old code it fails on its
assertions (or on the rejected ``limit_per_type`` argument), not on an import.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from cfviz.data import DataConversionWarning, open_dataset
from cfviz.data.mvtec import FolderDataset
from cfviz.errors import DatasetError
from cfviz.metrics import image_metrics, pixel_metrics


def _defect_mask(i: int, size: int = 64) -> np.ndarray:
    """An MVTec-like 0/255 mask: a blob, a box and a thin scratch (thin parts suffer most from JPEG)."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    d.ellipse((10 + i, 12, 30 + i, 34), fill=255)
    d.rectangle((40, 40 - i, 52, 50), fill=255)
    d.line((5, 60, 60, 55 - i), fill=255, width=2)
    return np.asarray(im)


def _folder(root: Path, n_anomalous: int, mask_ext: str, size: int = 64) -> Path:
    """One category ``c``: 2 good and ``n_anomalous`` cracked test images, masks as PNG or JPEG (quality 75)."""
    rng = np.random.default_rng(0)
    for split, defect, n in (("train", "good", 1), ("test", "good", 2), ("test", "crack", n_anomalous)):
        for i in range(n):
            path = root / "c" / split / defect / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    gt = root / "c" / "ground_truth" / "crack"
    gt.mkdir(parents=True, exist_ok=True)
    for i in range(n_anomalous):
        img = Image.fromarray(_defect_mask(i, size))
        if mask_ext == ".jpg":
            img.save(gt / f"{i:03d}_mask.jpg", format="JPEG", quality=75)
        else:
            img.save(gt / f"{i:03d}_mask.png")
    return root


def _load_all(ds: FolderDataset) -> tuple[np.ndarray, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = np.stack([ds.load(r).mask for r in ds.records])
        masks_again = np.stack([ds.load(r).mask for r in ds.records])  # a second pass warns no more
    assert np.array_equal(masks, masks_again)
    return masks, [w for w in caught if issubclass(w.category, DataConversionWarning)]


def _fixed_maps(masks: np.ndarray) -> np.ndarray:
    """A fixed score map per image: the defect, blurred and noisy, so metrics are neither 0 nor 1."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    blurred = np.stack([gaussian_filter(m.astype(np.float32), 3.0) for m in masks])
    return (blurred + 0.15 * rng.standard_normal(masks.shape)).astype(np.float32)


# --------------------------------------------------------------------------------------- JPEG masks
def test_jpeg_masks_are_binarised_at_half_their_range_and_warned_once(tmp_path: Path) -> None:
    png = FolderDataset(_folder(tmp_path / "png", 4, ".png"), name="png-set")
    jpg = FolderDataset(_folder(tmp_path / "jpg", 4, ".jpg"), name="jpeg-set")
    png_masks, png_warnings = _load_all(png)
    jpg_masks, jpg_warnings = _load_all(jpg)

    # the JPEG files really are noisy: counting every value above 0 would grow the defects a lot
    raw = np.stack([np.asarray(Image.open(r.mask_path)) for r in jpg.records if r.mask_path is not None])
    assert (raw > 0).sum() > 1.3 * png_masks.sum()
    # binarised at half the range, they match the PNG masks (at most a few border pixels)
    assert png_masks.sum() > 0 and set(np.unique(jpg_masks)) <= {0, 1}
    assert np.count_nonzero(jpg_masks != png_masks) <= 0.01 * png_masks.sum()
    maps = _fixed_maps(png_masks)
    ref, got = pixel_metrics(png_masks, maps), pixel_metrics(jpg_masks, maps)
    assert 0.05 < ref["pixel_aupro"] < 0.99
    for metric in ("pixel_auroc", "pixel_aupro", "pixel_ap"):
        assert got[metric] == pytest.approx(ref[metric], abs=0.005), metric

    # one warning for the data set (not one per mask), naming the set, a file and the cause
    assert png_warnings == []
    assert len(jpg_warnings) == 1, [str(w.message) for w in jpg_warnings]
    text = str(jpg_warnings[0].message)
    assert text.startswith("jpeg-set: ") and "_mask.jpg" in text and "JPEG" in text
    assert "4 of the 4 mask files" in text and "PNG" in text
    assert jpg.conversions["mask_levels"] == 8  # every load is counted (two passes of 4 masks)


def test_class_index_masks_of_visa_stay_whole_and_quiet(tmp_path: Path, builders) -> None:
    ds = open_dataset("visa", builders["visa"](tmp_path / "visa", categories=("pcb1",)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        masks = [ds.load(r).mask for r in ds.records if r.label == 1]
    # VisA masks hold class indices 1 and 2 (two regions): both are defects
    assert all(int(m.sum()) == 9 + 6 for m in masks)


# ------------------------------------------------------------------------- empty mask of an anomaly
def test_all_zero_mask_of_an_anomalous_image_warns_naming_it_and_keeps_the_image(tmp_path: Path) -> None:
    from cfviz.evaluation.scoring import load_masks

    root = _folder(tmp_path / "d", 3, ".png")
    empty = root / "c" / "ground_truth" / "crack" / "001_mask.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(empty)
    ds = FolderDataset(root)
    tests = [r for r in ds.records if r.split == "test"]
    with pytest.warns(DataConversionWarning, match="001_mask.png.*no defect pixel") as caught:
        masks = load_masks(ds, tests, 32)
    assert len([w for w in caught if issubclass(w.category, DataConversionWarning)]) == 1
    assert "001.png" in str(caught[0].message)  # its image is named too
    # the image stays: anomalous, in the image-metric set, its mask all zero
    idx = [r.mask_path for r in tests].index(empty)
    assert tests[idx].label == 1 and masks is not None and len(masks) == len(tests) and not masks[idx].any()
    labels = np.array([r.label for r in tests])
    assert image_metrics(labels, np.arange(len(tests), dtype=float))["n_anomalous_images"] == 3
    assert ds.conversions["empty_mask"] == 1


# ------------------------------------------------------------------------ data sets without masks
def _image_only_frame(dataset: str, categories: tuple[str, ...], pixel_for: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = []
    for cat in categories:
        metrics = ["image_auroc", "image_ap"] + (["pixel_auroc", "pixel_aupro"] if cat in pixel_for else [])
        rows += [{"dataset": dataset, "category": cat, "method": "patchclip", "shots": 0, "seed": 0,
                  "metric": m, "value": 0.5} for m in metrics]
    return pd.DataFrame(rows)


def test_summary_says_pixel_metrics_were_skipped_and_why() -> None:
    from cfviz.experiments import RunSpec
    from cfviz.evaluation.runner import summarize, summary_markdown

    frame = _image_only_frame("conformal", ("textile",))
    md = summary_markdown(frame, summarize(frame), RunSpec(dataset="conformal"), random_weights=True)
    assert "Pixel metrics skipped: the conformal data set has no pixel masks" in md
    # any reader opened without masks says the same
    spec = RunSpec(dataset="folder", root=".", dataset_options={"has_masks": False})
    assert "has no pixel masks" in summary_markdown(frame, summarize(frame), spec, random_weights=True)
    # a data set with masks names the categories that lack pixel metrics, and only those
    frame = _image_only_frame("textures", ("brick", "grass"), pixel_for=("grass",))
    md = summary_markdown(frame, summarize(frame), RunSpec(dataset="textures"), random_weights=True)
    assert "Pixel metrics skipped for categories brick:" in md
    frame = _image_only_frame("textures", ("brick",), pixel_for=("brick",))
    assert "skipped" not in summary_markdown(frame, summarize(frame), RunSpec(dataset="textures"), random_weights=True)


def test_conformal_subset_evaluates_and_its_summary_explains_the_missing_pixel_metrics(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("conformal_clip_data")
    from cfviz.cli import main
    from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate

    spec = RunSpec(dataset="conformal", dataset_options={"limit_per_type": 1}, methods=("patchclip",), shots=(0,),
                   extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=3)
    result = evaluate(spec, tmp_path, progress=False)
    tests = [r for r in open_dataset("conformal", limit_per_type=1).records]
    assert [r.defect_type for r in tests] == ["good", "local", "global"]  # one image per type reached the run
    assert result.store.missing([r.image_id for r in tests]) == [] and len(result.frame) > 0
    assert set(result.frame["metric"]) <= {"image_auroc", "image_ap", "image_f1_max"}
    md = (tmp_path / "summary.md").read_text()
    assert "Pixel metrics skipped: the conformal data set has no pixel masks" in md

    # the terminal says it too: the same run from the CLI (the store is complete, so no model loads)
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although every image is in the store")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    code = main(["evaluate", "--dataset", "conformal", "--limit-per-type", "1", "--method", "patchclip",
                 "--shots", "0", "--timesteps", "100", "--diffusion-size", "64", "--min-resolution", "1",
                 "--eval-size", "32", "--batch-size", "3", "--out", str(tmp_path / "cli"),
                 "--store", str(result.store.path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "Pixel metrics skipped: the conformal data set has no pixel masks" in out


# ------------------------------------------------------------------------------- limit_per_type
def _test_ids(ds) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in ds.records:
        if r.split == "test":
            out.setdefault((r.category, r.defect_type), []).append(r.image_id)
    return out


def test_limit_per_type_keeps_the_first_n_test_images_per_type_of_every_reader(tmp_path: Path, builders) -> None:
    build_mvtec, build_visa = builders["mvtec"], builders["visa"]
    mvtec = build_mvtec(tmp_path / "m", n_train=3, n_good=4, defects={"crack": 3, "scratch": 1})
    visa = build_visa(tmp_path / "v", n_train=2, n_test_good=3, n_anomaly=3)
    for kind, root in (("mvtec", mvtec), ("folder", mvtec), ("visa", visa)):
        full = open_dataset(kind, root, split="all")
        cut = open_dataset(kind, root, split="all", limit_per_type=2)
        assert cut.image_ids == open_dataset(kind, root, split="all", limit_per_type=2).image_ids  # deterministic
        assert [r for r in cut.records if r.split == "train"] == [r for r in full.records if r.split == "train"]
        for key, ids in _test_ids(full).items():
            assert _test_ids(cut)[key] == sorted(ids)[:2], (kind, key)
        assert cut.info["limit_per_type"] == 2
        assert len(open_dataset(kind, root, limit_per_type=1)) == len(_test_ids(full))  # one per type

    tex = open_dataset("textures", tmp_path / "t", limit_per_type=1, image_size=32, n_train=1, n_test_good=2,
                       n_per_defect=2, categories_generated=["brick"], defect_kinds=["hole", "stain"])
    assert [r.image_id for r in tex.records] == ["brick/test/good/000", "brick/test/hole/000", "brick/test/stain/000"]


def test_limit_per_type_of_conformal_is_the_first_images_by_id() -> None:
    pytest.importorskip("conformal_clip_data")
    full = open_dataset("conformal", split="all", seed=2)
    cut = open_dataset("conformal", split="all", seed=2, limit_per_type=3)
    assert [r for r in cut.records if r.split == "train"] == [r for r in full.records if r.split == "train"]
    for key, ids in _test_ids(full).items():
        assert _test_ids(cut)[key] == sorted(ids)[:3], key


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
@pytest.mark.parametrize("kind", ["mvtec", "visa", "textures", "conformal"])
def test_bad_limit_per_type_is_one_clear_error(kind: str, bad: object, tmp_path: Path, builders) -> None:
    build_mvtec, build_visa = builders["mvtec"], builders["visa"]
    root = {"mvtec": lambda: build_mvtec(tmp_path / "m"), "visa": lambda: build_visa(tmp_path / "v"),
            "textures": lambda: tmp_path / "t", "conformal": lambda: None}[kind]()
    with pytest.raises(DatasetError, match=r"limit_per_type must be None \(every image\) or an int >= 1"):
        open_dataset(kind, root, limit_per_type=bad)
    assert not (tmp_path / "t").exists()  # textures: checked before anything is generated
