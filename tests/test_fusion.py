"""Fusion: normalisation, alpha weighting, image-score rules, smoothing and upsampling."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.fusion import (ALPHA_CLASSIFICATION, ALPHA_SEGMENTATION, blend, fuse, fuse_components, image_scores,
                          normalize_maps, smooth, upsample)


def test_paper_defaults() -> None:
    assert (ALPHA_SEGMENTATION, ALPHA_CLASSIFICATION) == (0.25, 0.75)


def test_fuse_is_the_papers_weighted_sum() -> None:
    rng = np.random.default_rng(0)
    cl, cv, dl, dv = (rng.random((2, 4, 4)).astype(np.float32) for _ in range(4))
    fused = fuse({"language": cl, "visual": cv}, {"language": dl, "visual": dv}, 0.25)
    np.testing.assert_allclose(fused, 0.25 * (cl + cv) + 0.75 * (dl + dv), rtol=1e-6)
    zero_shot = fuse({"language": cl, "visual": None}, {"language": dl, "visual": None}, 0.75)
    np.testing.assert_allclose(zero_shot, 0.75 * cl + 0.25 * dl, rtol=1e-6)


@pytest.mark.parametrize("shots", [0, 1])
def test_one_home_for_fusion_gives_the_bytes_of_the_code_it_replaced(shots: int) -> None:
    """Issue 22: fuse_components and blend replaced the dicts built by hand in predict and the explorer."""
    rng = np.random.default_rng(shots)
    comps = {k: rng.random((3, 8, 8)).astype(np.float32) for k in ("clip_language", "diff_language", "winclip")}
    if shots:
        comps.update({k: rng.random((3, 8, 8)).astype(np.float32) for k in ("clip_visual", "diff_visual")})
    by_hand = smooth(fuse({"language": comps["clip_language"], "visual": comps.get("clip_visual")},
                          {"language": comps["diff_language"], "visual": comps.get("diff_visual")}, 0.25), 2.0)
    assert fuse_components(comps, 0.25, 2.0).tobytes() == by_hand.tobytes()
    s_clip, s_diff = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    assert blend(s_clip, s_diff, 0.75).tobytes() == (0.75 * s_clip + (1 - 0.75) * s_diff).tobytes()
    assert blend(0.8, 0.2, 0.25) == 0.25 * 0.8 + (1 - 0.25) * 0.2  # plain floats stay double


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_fuse_rejects_alpha_outside_unit_interval(alpha: float) -> None:
    m = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="alpha"):
        fuse({"language": m}, {"language": m}, alpha)


def test_fuse_rejects_mismatched_grids() -> None:
    with pytest.raises(ValueError, match="upsample"):
        fuse({"language": np.zeros((1, 2, 2))}, {"language": np.zeros((1, 4, 4))}, 0.5)
    with pytest.raises(ValueError, match="no map"):
        fuse({"language": None}, {"language": np.zeros((1, 2, 2))}, 0.5)


def test_normalisations() -> None:
    x = np.array([[[0.0, 2.0]], [[4.0, 10.0]]])
    np.testing.assert_allclose(normalize_maps(x, "dataset"), x / 10)
    np.testing.assert_allclose(normalize_maps(x, "image"), [[[0, 1]], [[0, 1]]])
    ref = np.array([1.0, 3.0])
    np.testing.assert_allclose(normalize_maps(x, "reference", reference=ref), (x - 2.0) / 1.0)
    assert normalize_maps(x, "none") is not None and np.array_equal(normalize_maps(x, "none"), x)
    constant = normalize_maps(np.ones((2, 3, 3)), "dataset")
    assert np.isfinite(constant).all()
    with pytest.raises(ValueError, match="reference"):
        normalize_maps(x, "reference")
    with pytest.raises(ValueError, match="normalization must be"):
        normalize_maps(x, "zscore")  # type: ignore[arg-type]


def test_image_score_rules() -> None:
    maps = np.zeros((2, 10, 10), np.float32)
    maps[0, 0, :5] = [5, 4, 3, 2, 1]
    assert image_scores(maps, "max").tolist() == [5.0, 0.0]
    assert image_scores(maps, "topk_mean", topk=0.02).tolist() == [4.5, 0.0]
    assert image_scores(maps, "mean")[0] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="topk"):
        image_scores(maps, "topk_mean", topk=0.0)
    with pytest.raises(ValueError, match="rule"):
        image_scores(maps, "median")  # type: ignore[arg-type]


def test_smoothing_spreads_a_peak_and_keeps_its_mass_and_sigma_zero_is_identity() -> None:
    m = np.zeros((1, 33, 33), np.float32)
    m[0, 16, 16] = 1.0
    s = smooth(m, 2.0)
    assert s[0, 16, 16] < 1.0 and s[0, 16, 18] > 0 and s.sum() == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(smooth(m, 0), m)


def test_upsample_keeps_constant_maps_and_orientation() -> None:
    m = np.zeros((1, 4, 4), np.float32)
    m[0, 0, 0] = 1.0
    up = upsample(m, 16)
    assert up.shape == (1, 16, 16) and up[0, 0, 0] == up.max() and up[0, -1, -1] == 0
    np.testing.assert_allclose(upsample(np.full((2, 3, 3), 0.5), (6, 9)), 0.5)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample(np.zeros((4, 4)), 8)
