"""Adapter for the conformal-clip-data textile images (classification only, seeded split)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cfviz.data import open_dataset
from cfviz.data.conformal import ConformalTextiles
from cfviz.errors import DatasetError

pytest.importorskip("conformal_clip_data", reason="conformal-clip-data is a declared dependency of cfviz")


def test_counts_labels_and_types():
    ds = ConformalTextiles(split="all", n_train=100)
    assert len(ds) == 2000 and not ds.has_masks
    frame = ds.to_frame()
    counts = frame.groupby(["split", "defect_type"]).size().to_dict()
    assert counts == {("train", "good"): 100, ("test", "good"): 900, ("test", "local"): 500, ("test", "global"): 500}
    assert (frame["label"] == (frame["defect_type"] != "good")).all()
    assert frame["mask_path"].isna().all() and set(frame["category"]) == {"textile"}
    assert len(set(frame["image_id"])) == 2000


def test_samples_have_no_masks():
    ds = ConformalTextiles(limit_per_type=2)
    for sample in ds:
        assert sample.mask is None
        assert sample.image.shape == (250, 250, 3) and sample.image.dtype == np.uint8
    assert [r.defect_type for r in ds.records] == ["good", "good", "local", "local", "global", "global"]


def test_split_is_deterministic_and_seeded():
    a = ConformalTextiles(split="train", n_train=20, seed=3)
    b = ConformalTextiles(split="train", n_train=20, seed=3)
    c = ConformalTextiles(split="train", n_train=20, seed=4)
    assert a.image_ids == b.image_ids and a.image_ids != c.image_ids
    test = ConformalTextiles(split="test", n_train=20, seed=3)
    assert not set(a.image_ids) & {i.replace("/test/", "/train/") for i in test.image_ids}
    assert a.info["seed"] == 3 and a.info["n_train"] == 20
    refs = open_dataset("conformal", split="train", n_train=20, seed=3).reference_samples("textile", k=4, seed=0)
    assert refs == a.reference_samples("textile", k=4, seed=0)


def test_limit_per_type_is_deterministic():
    a = ConformalTextiles(limit_per_type=7, seed=1)
    assert a.image_ids == ConformalTextiles(limit_per_type=7, seed=1).image_ids
    assert len(a) == 21


def test_bad_arguments():
    with pytest.raises(DatasetError, match="n_train"):
        ConformalTextiles(n_train=1000)
    with pytest.raises(DatasetError, match="available categories: textile"):
        ConformalTextiles(categories="leather")
    with pytest.raises(DatasetError, match="limit_per_type"):
        ConformalTextiles(limit_per_type=0)


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "conformal_clip_data", None)  # import now raises ImportError
    with pytest.raises(DatasetError, match="pip install 'conformal-clip-data"):
        ConformalTextiles()


def test_root_override(tmp_path, builders):
    for sub, n in (("nominal", 4), ("local", 2), ("global", 1)):
        for i in range(n):
            builders["rgb"](tmp_path / sub / f"t{i}.jpg", fmt="JPEG")
    ds = ConformalTextiles(tmp_path, split="all", n_train=1)
    assert len(ds) == 7 and len(ds.filter(split="train")) == 1
    (tmp_path / "global" / "t0.jpg").unlink()
    with pytest.raises(DatasetError, match="no images in .*global"):
        ConformalTextiles(tmp_path)
