"""The embedded texture data set: determinism, layout, visible defects, regeneration."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from cfviz.data import textures
from cfviz.data.mvtec import MVTecAD
from cfviz.data.textures import (DEFECT_KINDS, TEXTURE_CATEGORIES, TexturesDataset, apply_defect, ensure_textures,
                                 generate_textures)

SMALL = dict(image_size=64, n_train=2, n_test_good=1, n_per_defect=2)


def _file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The default set, generated once for this module (also checks it is quick)."""
    root = tmp_path_factory.mktemp("tex") / "textures"
    start = time.perf_counter()
    generate_textures(root, seed=0)
    return root, time.perf_counter() - start


def test_default_set_layout_and_counts(default_set):
    root, seconds = default_set
    assert seconds < 30  # a few seconds on a laptop; generous bound for a loaded CI machine
    ds = MVTecAD(root, split="all")  # it is plain MVTec layout
    assert ds.categories == TEXTURE_CATEGORIES
    for cat in TEXTURE_CATEGORIES:
        sub = ds.filter(category=cat)
        assert len(sub.filter(split="train")) == 10
        assert len(sub.filter(split="test", label=0)) == 6
        for kind in DEFECT_KINDS:
            assert len(sub.filter(defect_type=kind)) == 3
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["parameters"]["image_size"] == 256
    assert manifest["counts"]["brick"] == {"train/good": 10, "test/good": 6, "test/scratch": 3, "test/hole": 3,
                                           "test/stain": 3, "test/foreign": 3}
    assert "cfviz_version" in manifest
    assert sorted(manifest["files"]) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_every_anomalous_image_has_a_same_size_nonempty_mask(default_set):
    root, _ = default_set
    ds = MVTecAD(root)
    for sample in ds:
        assert sample.image.shape == (256, 256, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (256, 256)
        if sample.label:
            assert 0 < sample.mask.sum() < 0.5 * sample.mask.size
        else:
            assert sample.mask.sum() == 0
    assert ds.conversions["alpha"] == 0 and ds.conversions["grayscale"] == 0  # real RGB files


def test_images_are_colour_and_all_differ(default_set):
    root, _ = default_set
    ds = MVTecAD(root, split="all")
    hashes = set()
    for sample in ds:
        img = sample.image.astype(int)
        assert np.abs(img[..., 0] - img[..., 1]).mean() > 5  # not a gray image in three channels
        hashes.add(sample.image.tobytes())
    assert len(hashes) == len(ds)  # random crops/flips/rotations: no two images alike


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    a = _file_bytes(generate_textures(tmp_path / "a", seed=5, **SMALL))
    b = _file_bytes(generate_textures(tmp_path / "b", seed=5, **SMALL))
    c = _file_bytes(generate_textures(tmp_path / "c", seed=6, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == len([k for k in a if k.endswith(".png")])


def test_changing_one_count_keeps_other_images(tmp_path):
    a = _file_bytes(generate_textures(tmp_path / "a", seed=1, **SMALL))
    b = _file_bytes(generate_textures(tmp_path / "b", seed=1, **{**SMALL, "n_train": 3}))
    shared = [k for k in a if k.endswith(".png")]
    assert all(a[k] == b[k] for k in shared)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_change_the_pixels_inside_their_mask(kind):
    sources = textures.load_sources()
    for i in range(6):
        rng = np.random.default_rng([11, i])
        cat = TEXTURE_CATEGORIES[i % 3]
        clean = textures.colourise(textures.texture_crop(sources[cat], rng, image_size=128, crop_size=256), cat)
        other_cat = TEXTURE_CATEGORIES[(i + 1) % 3]
        other = textures.colourise(textures.texture_crop(sources[other_cat], rng, image_size=128, crop_size=256),
                                   other_cat)
        before = clean.copy()
        bad, mask = apply_defect(clean, kind, rng, foreign=other)
        np.testing.assert_array_equal(clean, before)  # the input is not modified
        assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1}
        inside = mask.astype(bool)
        diff = np.abs(bad.astype(int) - clean.astype(int)).max(axis=2)
        assert diff[inside].mean() >= 12
        assert (diff[inside] > 0).mean() > 0.6
        assert (diff[~inside] == 0).all()  # nothing changes outside the mask


def test_defect_sizes_vary(default_set):
    root, _ = default_set
    ds = MVTecAD(root)
    for kind in DEFECT_KINDS:
        areas = [int(ds.load(r).mask.sum()) for r in ds.records if r.defect_type == kind]
        assert len(set(areas)) == len(areas) and max(areas) > 1.5 * min(areas)


def test_ensure_generates_once_and_regenerates_on_change(tmp_path):
    root = tmp_path / "t"
    ensure_textures(root, seed=2, **SMALL)
    manifest = root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    files_before = _file_bytes(root)
    ensure_textures(root, seed=2, **SMALL)
    assert manifest.stat().st_mtime_ns == stamp  # up to date: nothing rewritten
    # other parameters: regenerated, and stale files of the old set removed
    ensure_textures(root, seed=2, **{**SMALL, "n_per_defect": 1, "defect_kinds": ("hole",)})
    assert not (root / "brick/test/scratch").exists()
    assert not (root / "brick/test/hole/001.png").exists()
    ds = MVTecAD(root)
    assert {r.defect_type for r in ds.records} == {"good", "hole"}
    # a deleted file triggers regeneration, giving the same bytes back
    ensure_textures(root, seed=2, **SMALL)
    (root / "grass/train/good/001.png").unlink()
    ensure_textures(root, seed=2, **SMALL)
    assert _file_bytes(root) == files_before


def test_manifest_missing_means_regenerate(tmp_path):
    root = generate_textures(tmp_path / "t", seed=0, **SMALL)
    (root / "manifest.json").unlink()
    ensure_textures(root, seed=0, **SMALL)
    assert (root / "manifest.json").is_file()


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CFVIZ_DATA_DIR", str(tmp_path / "d"))
    assert textures.default_textures_dir() == tmp_path / "d" / "textures"
    ds = TexturesDataset(categories="gravel", categories_generated=("gravel",), **SMALL)
    assert ds.root == tmp_path / "d" / "textures"
    assert ds.categories == ("gravel",) and len(ds) == 1 + 4 * 2
    assert ds.info["seed"] == 0 and ds.info["generator_parameters"]["image_size"] == 64


def test_default_root_without_env_is_the_checkout_data_folder(monkeypatch):
    monkeypatch.delenv("CFVIZ_DATA_DIR", raising=False)
    import cfviz
    from pathlib import Path

    checkout = Path(cfviz.__file__).resolve().parent.parent
    expected = checkout / "data" if (checkout / "pyproject.toml").is_file() else Path.cwd() / "data"
    assert textures.default_data_dir() == expected


def test_bad_parameters():
    with pytest.raises(ValueError, match="categories"):
        textures.texture_parameters(categories=("marble",))
    with pytest.raises(ValueError, match="defect_kinds"):
        textures.texture_parameters(defect_kinds=("crack",))
    with pytest.raises(ValueError, match="image_size"):
        textures.texture_parameters(image_size=8)
    with pytest.raises(ValueError, match="foreign"):
        apply_defect(np.zeros((32, 32, 3), np.uint8), "foreign", np.random.default_rng(0))
