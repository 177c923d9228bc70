"""VisA reader: split file, binarised class-index masks, bad split files."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.data.images import DataConversionWarning
from cfviz.data.visa import VISA_CATEGORIES, VisA
from cfviz.errors import DatasetError


def test_reads_split_file(visa_root):
    test = VisA(visa_root)
    assert test.categories == ("candle", "pcb1")
    assert len(test) == 2 * (2 + 2)
    assert {r.split for r in test.records} == {"test"}
    assert [r.image_id for r in test.records[:4]] == [
        "candle/test/good/0002", "candle/test/good/0003", "candle/test/anomaly/000", "candle/test/anomaly/001"]
    train = VisA(visa_root, split="train", categories="pcb1")
    assert len(train) == 2 and all(r.label == 0 and r.mask_path is None for r in train.records)
    both = VisA(visa_root, split="all")
    assert len(both) == 12 and len(set(both.image_ids)) == 12


def test_masks_are_binarised(visa_root):
    ds = VisA(visa_root, categories="pcb1")
    bad = [ds.load(r) for r in ds.records if r.label == 1]
    for s in bad:
        assert s.mask.dtype == np.uint8 and set(np.unique(s.mask).tolist()) == {0, 1}
        assert s.mask.sum() == 9 + 6  # both regions (class indices 1 and 2) count as defect
        assert s.image.shape == (10, 14, 3)
    good = ds.load(next(r for r in ds.records if r.label == 0))
    assert good.mask.sum() == 0 and good.mask.shape == (10, 14)


def test_missing_split_file(visa_root):
    (visa_root / "split_csv/1cls.csv").unlink()
    with pytest.raises(DatasetError, match="split file not found.*1cls.csv.*split_csv="):
        VisA(visa_root)


def test_split_file_elsewhere(visa_root, tmp_path):
    moved = tmp_path / "my_split.csv"
    (visa_root / "split_csv/1cls.csv").rename(moved)
    assert len(VisA(visa_root, split_csv=moved)) == 8


def test_wrong_columns_named(visa_root):
    csv_path = visa_root / "split_csv/1cls.csv"
    text = csv_path.read_text().replace("object,split,label,image,mask", "object,split,class,image,mask")
    csv_path.write_text(text)
    with pytest.raises(DatasetError, match=r"lacks columns \['label'\].*expected columns object, split, label, image, mask"):
        VisA(visa_root)


def test_rows_pointing_to_missing_files(visa_root):
    (visa_root / "pcb1/Data/Images/Anomaly/001.JPG").unlink()
    (visa_root / "candle/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(DatasetError) as err:
        VisA(visa_root)
    msg = str(err.value)
    assert "pcb1/Data/Images/Anomaly/001.JPG" in msg and "candle/Data/Masks/Anomaly/000.png" in msg
    assert "line" in msg
    # a category without missing files still opens
    with pytest.raises(DatasetError):
        VisA(visa_root, categories="pcb1")
    assert len(VisA(visa_root, categories="pcb1", split="train")) == 2


def test_bad_label_and_split_values(visa_root):
    csv_path = visa_root / "split_csv/1cls.csv"
    original = csv_path.read_text()
    csv_path.write_text(original.replace(",test,anomaly,", ",test,defect,", 1))
    with pytest.raises(DatasetError, match="label 'defect' is not 'normal' or 'anomaly'"):
        VisA(visa_root)
    csv_path.write_text(original.replace(",train,normal,", ",val,normal,", 1))
    with pytest.raises(DatasetError, match="split 'val'"):
        VisA(visa_root)


def test_empty_mask_column_policy(visa_root):
    csv_path = visa_root / "split_csv/1cls.csv"
    lines = csv_path.read_text().splitlines()
    idx = next(i for i, ln in enumerate(lines) if ln.startswith("pcb1,test,anomaly"))
    lines[idx] = lines[idx].rsplit(",", 1)[0] + ","
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="Anomaly/000.JPG has an empty mask column"):
        VisA(visa_root)
    with pytest.warns(DataConversionWarning):
        ds = VisA(visa_root, missing_masks="warn")
    assert ds.conversions["missing_mask"] == 1
    assert ds.load(next(r for r in ds.records if r.label == 1 and r.mask_path is None)).mask is None


def test_unknown_category_and_missing_root(visa_root, tmp_path):
    with pytest.raises(DatasetError, match="available categories: candle, pcb1"):
        VisA(visa_root, categories=["pcb9"])
    with pytest.raises(DatasetError, match="VisA folder not found"):
        VisA(tmp_path / "nothing")


def test_listing_reads_no_pixels(visa_root):
    for p in visa_root.rglob("*.JPG"):
        p.write_bytes(b"corrupt")
    ds = VisA(visa_root, split="all")
    assert len(ds.to_frame()) == 12
    with pytest.raises(DatasetError, match="cannot read image"):
        ds[0]


def test_category_constant():
    assert len(VISA_CATEGORIES) == 12 and "pipe_fryum" in VISA_CATEGORIES
