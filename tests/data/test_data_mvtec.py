"""MVTec-layout reader: listing, ordering, ids, bad input, conversions, references."""

from __future__ import annotations

import json
import warnings
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from cfviz.data import images as images_module
from cfviz.data.images import DataConversionWarning
from cfviz.data.mvtec import MVTEC_CATEGORIES, FolderDataset, MVTecAD
from cfviz.data.samples import AnomalyDataset, SampleRecord, sample_references
from cfviz.errors import DatasetError


def test_reads_layout_in_deterministic_order(mvtec_root):
    ds = MVTecAD(mvtec_root, split="all")
    assert ds.categories == ("bottle", "tile")
    ids = [r.image_id for r in ds.records]
    assert ids[:6] == ["bottle/train/good/000", "bottle/train/good/001", "bottle/train/good/002",
                       "bottle/test/good/000", "bottle/test/good/001", "bottle/test/crack/000"]
    assert len(ds) == 2 * (3 + 2 + 2 + 1)
    assert len(set(ids)) == len(ids)
    # same listing twice -> same order
    assert [r.image_id for r in MVTecAD(mvtec_root, split="all").records] == ids


def test_splits_and_labels(mvtec_root):
    test = MVTecAD(mvtec_root)
    assert {r.split for r in test.records} == {"test"}
    train = MVTecAD(mvtec_root, split="train")
    assert {(r.split, r.label, r.defect_type) for r in train.records} == {("train", 0, "good")}
    for r in test.records:
        assert (r.label == 1) == (r.defect_type != "good")
        assert (r.mask_path is not None) == (r.label == 1)
        if r.mask_path is not None:
            assert r.mask_path.name == r.image_path.stem + "_mask.png"
            assert r.mask_path.parent.name == r.defect_type
    with pytest.raises(DatasetError, match="'train', 'test' or 'all'"):
        MVTecAD(mvtec_root, split="val")


def test_sample_loading(mvtec_root):
    ds = MVTecAD(mvtec_root, categories="bottle")
    good = ds[0]
    assert good.image.shape == (12, 10, 3) and good.image.dtype == np.uint8
    assert good.mask is not None and good.mask.shape == (12, 10) and good.mask.sum() == 0
    bad = next(s for s in ds if s.label == 1)
    assert set(np.unique(bad.mask).tolist()) == {0, 1} and bad.mask[:6, :5].all() and bad.mask.sum() == 30
    assert bad.path == bad.image_path and bad.gt_mask is bad.mask and bad.gt_label == 1
    assert bad.record in ds.records


def test_listing_reads_no_pixels(mvtec_root):
    # corrupt every image: listing still works, only loading fails
    for p in mvtec_root.rglob("*.png"):
        p.write_bytes(b"garbage")
    ds = MVTecAD(mvtec_root, split="all")
    assert len(ds) == 16
    frame = ds.to_frame()
    assert len(frame) == 16
    assert len(ds.filter(label=1)) == 6
    with pytest.raises(DatasetError, match="cannot read image"):
        ds[0]


def test_listing_opens_no_files(mvtec_root):
    with mock.patch.object(images_module, "_open", side_effect=AssertionError("pixels read")) as opened, \
            mock.patch("PIL.Image.open", side_effect=AssertionError("file opened")):
        ds = MVTecAD(mvtec_root, split="all")
        repr(ds)
        ds.to_frame()
        ds.filter(category="tile", label="anomalous")
    assert opened.call_count == 0


def test_to_frame_and_filter(mvtec_root):
    ds = MVTecAD(mvtec_root, split="all")
    frame = ds.to_frame()
    assert list(frame.columns) == ["image_id", "category", "split", "defect_type", "label", "image_path", "mask_path"]
    assert frame["label"].sum() == 6 and frame["mask_path"].isna().sum() == 10
    sub = ds.filter(category="tile", split="test", label=1)
    assert len(sub) == 3 and isinstance(sub, MVTecAD) and sub.categories == ("tile",)
    assert len(ds.filter(defect_type=["crack", "scratch"])) == 6
    assert len(ds.filter(label="normal")) == 10
    assert len(ds) == 16  # the original is unchanged
    with pytest.raises(DatasetError, match="available categories: bottle, tile"):
        ds.filter(category="bottel")
    assert len(ds[2:5]) == 3


def test_repr_counts(mvtec_root):
    text = repr(MVTecAD(mvtec_root, split="all"))
    assert "16 samples" in text and "2 categories" in text
    assert "bottle" in text and "tile" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("bottle") and "test" in ln)
    assert line.split()[-2:] == ["2", "3"]


def test_missing_root():
    with pytest.raises(DatasetError, match="not found: /no/such/folder"):
        MVTecAD("/no/such/folder")


def test_misnamed_category_lists_available(mvtec_root):
    with pytest.raises(DatasetError, match=r"'botle'.*did you mean 'bottle'.*available categories: bottle, tile"):
        MVTecAD(mvtec_root, categories=["botle"])


def test_root_without_category_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no category folders.*images"):
        FolderDataset(tmp_path)


def test_missing_mask_error_names_image_and_expected_path(mvtec_root):
    (mvtec_root / "tile/ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(DatasetError) as err:
        MVTecAD(mvtec_root)
    msg = str(err.value)
    assert "tile/test/crack/001.png" in msg and "tile/ground_truth/crack/001_mask.png" in msg
    assert "missing_masks='warn'" in msg


def test_missing_mask_warn_counts_and_keeps_unannotated(mvtec_root):
    for name in ("000_mask.png", "001_mask.png"):
        (mvtec_root / "tile/ground_truth/crack" / name).unlink()
    with pytest.warns(DataConversionWarning, match="no mask") as rec:
        ds = MVTecAD(mvtec_root, missing_masks="warn")
    assert len([w for w in rec if issubclass(w.category, DataConversionWarning)]) == 1
    assert ds.conversions["missing_mask"] == 2
    unannotated = [r for r in ds.records if r.label == 1 and r.mask_path is None]
    assert len(unannotated) == 2
    sample = ds.load(unannotated[0])
    assert sample.mask is None and sample.label == 1
    with pytest.raises(DatasetError, match="missing_masks"):
        MVTecAD(mvtec_root, missing_masks="ignore")


def test_mask_size_mismatch_error_at_load(mvtec_root, builders):
    builders["mask"](mvtec_root / "bottle/ground_truth/scratch/000_mask.png", size=(6, 5))
    ds = MVTecAD(mvtec_root, categories="bottle")  # listing is fine
    rec = next(r for r in ds.records if r.defect_type == "scratch")
    with pytest.raises(DatasetError) as err:
        ds.load(rec)
    msg = str(err.value)
    assert "000_mask.png" in msg and "scratch/000.png" in msg and "5x6" in msg and "10x12" in msg


def test_unreadable_image_error_names_it(mvtec_root):
    (mvtec_root / "bottle/test/good/001.png").write_bytes(b"not an image at all")
    ds = MVTecAD(mvtec_root, categories="bottle")
    with pytest.raises(DatasetError, match="bottle/test/good/001.png"):
        ds[1]


def test_empty_category_error(mvtec_root):
    (mvtec_root / "empty" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="category 'empty' has no images"):
        MVTecAD(mvtec_root)
    # the other categories can still be read by leaving it out
    assert MVTecAD(mvtec_root, categories=["bottle", "tile"]).categories == ("bottle", "tile")


def test_loose_images_and_anomalous_training_folder(tmp_path, builders):
    root = builders["mvtec"](tmp_path / "a", categories=("x",))
    builders["rgb"](root / "x/test/stray.png")
    with pytest.raises(DatasetError, match="directly in .*test.*Fix: move"):
        FolderDataset(root)
    root = builders["mvtec"](tmp_path / "b", categories=("x",))
    builders["rgb"](root / "x/train/crack/000.png")
    with pytest.raises(DatasetError, match="training images must all be normal"):
        FolderDataset(root, split="train")


def test_grayscale_rgba_16bit_conversions_warn_once_per_kind(tmp_path, builders):
    root = builders["mvtec"](tmp_path / "m", categories=("c",), n_train=0, n_good=6, defects={})
    good = sorted((root / "c/test/good").glob("*.png"))
    Image.fromarray(np.full((12, 10), 80, np.uint8)).save(good[0])             # grayscale
    Image.fromarray(np.full((12, 10, 4), 80, np.uint8)).save(good[1])          # RGBA
    Image.fromarray(np.full((12, 10, 4), 90, np.uint8)).save(good[2])          # RGBA again
    builders["png16"](good[3], np.full((12, 10), 4000, np.uint16))             # 16-bit
    builders["png16"](good[4], np.full((12, 10, 3), 9000, np.uint16))          # 16-bit RGB
    ds = FolderDataset(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = list(ds)
        samples += list(ds)  # loading again counts again, but does not warn again
    conv = [w for w in caught if issubclass(w.category, DataConversionWarning)]
    assert len(conv) == 2
    assert any("alpha" in str(w.message) for w in conv) and any("8 bits" in str(w.message) for w in conv)
    assert ds.conversions["alpha"] == 4 and ds.conversions["high_bit_depth"] == 4
    assert ds.conversions["grayscale"] == 4  # informational, not warned
    assert all(s.image.shape == (12, 10, 3) and s.image.dtype == np.uint8 for s in samples)
    assert "conversions:" in repr(ds)


def test_any_extension_case_insensitive_and_mask_suffix(tmp_path, builders):
    root = tmp_path / "f"
    builders["rgb"](root / "widget/train/good/a.JPG", fmt="JPEG")
    builders["rgb"](root / "widget/test/good/b.jpeg", fmt="JPEG")
    builders["rgb"](root / "widget/test/dent/c.BMP", fmt="BMP")
    builders["rgb"](root / "widget/test/dent/d.tif", fmt="TIFF")
    builders["mask"](root / "widget/ground_truth/dent/c.png")
    builders["mask"](root / "widget/ground_truth/dent/d.PNG")
    (root / "widget/test/dent/notes.txt").write_text("not an image")
    (root / "widget/test/dent/.DS_Store").write_bytes(b"x")
    ds = FolderDataset(root, split="all", mask_suffix="")
    assert [r.image_path.name for r in ds.records] == ["a.JPG", "b.jpeg", "c.BMP", "d.tif"]
    assert ds.info["ignored_files"] == 1
    assert all(s.image.shape == (12, 10, 3) for s in ds)
    assert ds[3].mask.sum() == 30


def test_single_category_folder_as_root(mvtec_root):
    ds = FolderDataset(mvtec_root / "tile")
    assert ds.categories == ("tile",) and len(ds) == 5


def test_classification_folder_without_masks(tmp_path, builders):
    root = builders["mvtec"](tmp_path / "c", categories=("x",))
    import shutil

    shutil.rmtree(root / "x/ground_truth")
    with pytest.raises(DatasetError, match="no mask"):
        FolderDataset(root)
    ds = FolderDataset(root, has_masks=False)
    assert not ds.has_masks and all(s.mask is None for s in ds)


def test_duplicate_image_ids_are_an_error(tmp_path, builders):
    root = builders["mvtec"](tmp_path / "d", categories=("x",), defects={})
    builders["rgb"](root / "x/test/good/000.jpg", fmt="JPEG")
    with pytest.raises(DatasetError, match="same image id 'x/test/good/000'"):
        FolderDataset(root)


def test_image_ids_are_filesystem_safe(tmp_path, builders):
    root = tmp_path / "s"
    builders["rgb"](root / "metal nut/test/good/img 01 (copy).png")
    ds = FolderDataset(root)
    assert ds.records[0].image_id == "metal_nut/test/good/img_01_copy_"
    assert ds.records[0].category == "metal nut"  # the category keeps its real name


def test_reference_samples_are_deterministic_and_nested(tmp_path, builders):
    root = builders["mvtec"](tmp_path / "r", categories=("x", "y"), n_train=8)
    ds = FolderDataset(root, split="all")
    a = ds.reference_samples("x", k=4, seed=7)
    assert a == sample_references(FolderDataset(root, split="train"), "x", 4, seed=7)
    assert all(r.split == "train" and r.label == 0 and r.category == "x" for r in a)
    assert len({r.image_id for r in a}) == 4
    assert ds.reference_samples("x", k=2, seed=7) == a[:2]  # smaller k is a prefix
    draws = {tuple(r.image_id for r in ds.reference_samples("x", k=4, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    assert ds.reference_samples("x", k=0) == []
    with pytest.raises(DatasetError, match="only 8"):
        ds.reference_samples("x", k=9)
    with pytest.raises(DatasetError, match="split='train'"):
        FolderDataset(root).reference_samples("x", k=1)
    with pytest.raises(DatasetError, match="available categories: x, y"):
        ds.reference_samples("z", k=1)
    json.dumps([r.to_dict() for r in a])  # recordable with results


def test_record_validation():
    from pathlib import Path

    with pytest.raises(ValueError, match="defect_type must be 'good'"):
        SampleRecord(Path("a.png"), None, 1, "c", "good", "test", "c/test/good/a")
    with pytest.raises(ValueError, match="split"):
        SampleRecord(Path("a.png"), None, 0, "c", "good", "val", "c/val/good/a")
    with pytest.raises(TypeError):
        AnomalyDataset(["not a record"])  # type: ignore[list-item]


def test_category_constant():
    assert len(MVTEC_CATEGORIES) == 15 and "metal_nut" in MVTEC_CATEGORIES
