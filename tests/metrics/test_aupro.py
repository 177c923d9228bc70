"""AUPRO and the PRO curve against a slow per-threshold reference; pixel metrics against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cfviz.metrics import PixelCurves, aupro, pixel_metrics, pro_curve, region_weights

from . import _reference as ref

TOL = 1e-12


def _maps(rng: np.random.Generator, masks: np.ndarray, kind: str) -> np.ndarray:
    noise = rng.normal(size=masks.shape)
    if kind == "continuous":
        return noise + 1.5 * masks
    if kind == "ties":  # few distinct values: ties inside regions, across classes, at the limit
        return np.round(0.6 * noise + masks, 0)
    if kind == "float32":
        return (noise * 3 + 2 * masks - 50).astype(np.float32)
    if kind == "integers":
        return rng.integers(0, 4, size=masks.shape) + 2 * masks
    raise AssertionError(kind)


def _fixture(seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(1, 5)), int(rng.integers(4, 12)), int(rng.integers(4, 12))
    masks = ref.blob_masks(rng, n, h, w)
    if not masks.any():
        masks[0, 1, 1] = True
    if masks.all():
        masks[0, 0, 0] = False
    return masks, _maps(rng, masks, kind)


@pytest.mark.parametrize("kind", ["continuous", "ties", "float32", "integers"])
def test_aupro_equals_slow_reference(kind):
    for seed in range(25):
        masks, maps = _fixture(seed, kind)
        curves = PixelCurves.from_maps(masks, maps)
        for limit in (0.3, 0.05, 0.5, 1.0):
            expected = ref.aupro(masks, maps, limit)
            assert abs(curves.aupro(limit) - expected) <= 1e-10, (kind, seed, limit)


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_pro_curve_equals_slow_reference(kind):
    for seed in range(15):
        masks, maps = _fixture(seed, kind)
        fpr, pro = pro_curve(masks, maps)
        ref_fpr, ref_pro = ref.pro_curve(masks, maps)
        assert fpr.shape == ref_fpr.shape
        np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=TOL)
        np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=1e-12)
        assert (fpr[0], pro[0]) == (0.0, 0.0) and fpr[-1] == 1.0 and pro[-1] == pytest.approx(1.0)
        # with the limit at 1 the area is the plain trapezoid of the whole curve
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 (make test-oldest) names it trapz
        assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(trapezoid(pro, fpr), abs=1e-12)


def test_pixel_auroc_ap_f1_equal_sklearn_and_brute_force():
    for seed in range(20):
        for kind in ("continuous", "ties"):
            masks, maps = _fixture(seed, kind)
            curves = PixelCurves.from_maps(masks, maps)
            y, s = masks.ravel(), maps.ravel()
            assert abs(curves.auroc() - roc_auc_score(y, s)) <= TOL
            assert abs(curves.average_precision() - average_precision_score(y, s)) <= TOL
            assert curves.f1_max() == pytest.approx(ref.f1_max(y, s), abs=TOL)


def test_limit_exactly_on_a_curve_point_and_ties_at_the_limit():
    # 10 normal pixels: FPR takes the values k/10, so 0.3 lies exactly on a point
    masks = np.zeros((2, 2, 5), bool)
    masks[0, 0, :2] = True
    maps = np.array([[[9, 3, 8, 7, 6], [5, 4, 3, 2, 1]],
                     [[7, 7, 0, 3, 3], [0, 0, 0, 0, 0]]], dtype=float)
    for limit in (0.3, 0.25, 0.35, 0.1, 0.7, 1.0, 1e-6):
        assert aupro(masks, maps, limit) == pytest.approx(ref.aupro(masks, maps, limit), abs=1e-12), limit


def test_perfect_inverted_and_constant_maps():
    rng = np.random.default_rng(3)
    masks = ref.blob_masks(rng, 6, 20, 20, p_empty=0.3)
    masks[0, 5:9, 5:9] = True
    assert aupro(masks, masks + 0.1 * rng.random(masks.shape)) == 1.0
    assert aupro(masks, -masks.astype(float)) == 0.0
    # a constant map: one threshold, the curve jumps from (0, 0) to (1, 1)
    assert aupro(masks, np.zeros(masks.shape), fpr_limit=0.3) == pytest.approx(0.15)
    assert aupro(masks, np.zeros(masks.shape), fpr_limit=1.0) == pytest.approx(0.5)


def test_every_region_counts_once_whatever_its_size():
    # one big region found, one 1-pixel region missed: PRO is 0.5 until the small one is found
    masks = np.zeros((2, 30, 30), bool)
    masks[0, :20, :20] = True  # 400 px
    masks[1, 29, 29] = True  # 1 px, in another image
    maps = np.zeros(masks.shape)
    maps[0, :20, :20] = 1.0
    maps[1, 29, 29] = -1.0  # below every normal pixel
    assert aupro(masks, maps) == pytest.approx(0.5, abs=1e-12)
    assert pixel_metrics(masks, maps)["n_regions"] == 2


def test_images_without_defect_only_add_normal_pixels():
    rng = np.random.default_rng(5)
    masks, maps = _fixture(11, "continuous")
    extra_masks = np.zeros((3, *masks.shape[1:]), bool)
    extra_maps = rng.normal(size=extra_masks.shape) + 2.0  # high-scoring normal images: FPR worsens
    all_masks = np.concatenate([masks, extra_masks])
    all_maps = np.concatenate([maps, extra_maps])
    got = aupro(all_masks, all_maps)
    assert got == pytest.approx(ref.aupro(all_masks, all_maps), abs=1e-10)
    assert got < aupro(masks, maps)


def test_many_regions_and_connectivity():
    masks = np.zeros((1, 9, 9), bool)
    masks[0, ::2, ::2] = True  # 25 isolated pixels (no two touch, even diagonally)
    masks[0, 1, 1] = True  # touches 4 of them diagonally only
    w8, n8 = region_weights(masks, connectivity=8)
    w4, n4 = region_weights(masks, connectivity=4)
    assert n4 == 26 and n8 == 22  # (1,1) links (0,0),(0,2),(2,0),(2,2) into one region under 8-conn
    assert w8.sum() == pytest.approx(n8) and w4.sum() == pytest.approx(n4)
    w8_u8, n8_u8 = region_weights(masks.astype(np.uint8))  # 0/1 integers work the same
    assert n8_u8 == n8 and np.array_equal(w8_u8, w8)
    rng = np.random.default_rng(0)
    maps = rng.normal(size=masks.shape) + masks
    for c in (4, 8):
        assert aupro(masks, maps, connectivity=c) == pytest.approx(ref.aupro(masks, maps, connectivity=c), abs=1e-10)


def test_checkerboard_mask_many_regions_matches_reference():
    masks = (np.indices((3, 12, 12)).sum(0) % 2 == 0) & (np.arange(3)[:, None, None] < 2)
    rng = np.random.default_rng(1)
    maps = np.round(rng.normal(size=masks.shape) + masks, 1)
    for c in (4, 8):
        assert aupro(masks, maps, connectivity=c) == pytest.approx(ref.aupro(masks, maps, connectivity=c), abs=1e-10)


def test_depends_only_on_score_order():
    masks, maps = _fixture(4, "continuous")
    base = pixel_metrics(masks, maps)
    moved = pixel_metrics(masks, np.exp(maps / 3) * 1e3 - 7)  # strictly increasing transform
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"):
        assert moved[key] == pytest.approx(base[key], abs=1e-12)


def test_pixel_metrics_inputs_lists_channels_uint8():
    masks, maps = _fixture(2, "ties")
    expected = pixel_metrics(masks, maps)
    assert pixel_metrics(list(masks.astype(np.uint8)), list(maps)) == expected
    assert pixel_metrics(masks[:, None], maps[:, None]) == expected
    assert pixel_metrics(masks.astype(np.float32), maps.astype(np.float64)) == expected
    assert set(expected) == {"pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_f1_threshold", "pixel_aupro",
                             "aupro_fpr_limit", "n_images", "n_pixels", "n_anomalous_pixels", "n_regions"}
    assert expected["n_pixels"] == masks.size and expected["n_anomalous_pixels"] == masks.sum()


def test_inputs_are_not_modified():
    masks, maps = _fixture(8, "continuous")
    maps_before, masks_before = maps.copy(), masks.copy()
    pixel_metrics(masks, maps)
    np.testing.assert_array_equal(maps, maps_before)
    np.testing.assert_array_equal(masks, masks_before)


def test_threaded_sort_gives_identical_results(monkeypatch):
    import cfviz.metrics._sort as sort_mod

    rng = np.random.default_rng(9)
    masks = ref.blob_masks(rng, 30, 32, 32, p_empty=0.4)
    maps = np.round(rng.normal(size=masks.shape) + masks, 2).astype(np.float32)
    one = PixelCurves.from_maps(masks, maps, n_jobs=1)
    monkeypatch.setattr(sort_mod, "_PARALLEL_MIN", 1000)  # force the threaded path on a small set
    many = PixelCurves.from_maps(masks, maps, n_jobs=3)
    np.testing.assert_array_equal(one.stats.negatives, many.stats.negatives)
    assert one.summary() == many.summary()
    y, s = masks.ravel(), maps.ravel()
    assert abs(many.auroc() - roc_auc_score(y, s)) <= TOL
