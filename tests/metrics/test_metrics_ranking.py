"""Image-level ranking metrics: exact agreement with scikit-learn and a brute-force F1-max."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cfviz.metrics import RankingStats, auroc, average_precision, f1_max, image_metrics

from ._reference import f1_max as ref_f1_max

TOL = 1e-12


def _fixture(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[0], y[1] = True, False  # both classes present (positions are arbitrary anyway)
    if kind == "continuous":
        s = rng.normal(size=n) + y * rng.uniform(0, 2)
    elif kind == "heavy_ties":
        s = rng.integers(0, 3, size=n).astype(float) + y * rng.integers(0, 2)
    elif kind == "constant":
        s = np.full(n, 0.7)
    elif kind == "float32_wide":
        s = (rng.normal(size=n) * 1e4 + y * 5e3).astype(np.float32)
    elif kind == "integers":
        s = rng.integers(-5, 5, size=n) + 2 * y
    else:
        raise AssertionError(kind)
    return y.astype(int), s


KINDS = ["continuous", "heavy_ties", "constant", "float32_wide", "integers"]


@pytest.mark.parametrize("kind", KINDS)
def test_auroc_and_ap_equal_sklearn_on_random_fixtures(kind):
    for seed in range(60):
        y, s = _fixture(kind, seed)
        assert abs(auroc(y, s) - roc_auc_score(y, s)) <= TOL, (kind, seed)
        assert abs(average_precision(y, s) - average_precision_score(y, s)) <= TOL, (kind, seed)


@pytest.mark.parametrize("kind", KINDS)
def test_f1_max_equals_brute_force_over_every_threshold(kind):
    for seed in range(40):
        y, s = _fixture(kind, seed)
        f1, t = f1_max(y, s)
        ref, ref_t = ref_f1_max(y, s)
        assert abs(f1 - ref) <= TOL, (kind, seed)
        assert t == ref_t, (kind, seed)
        # the threshold reproduces the F1 it reports
        pred = np.asarray(s) >= t
        tp = np.sum(pred & (y == 1))
        assert abs(2 * tp / (pred.sum() + y.sum()) - f1) <= TOL


def test_tiny_sets_and_known_values():
    assert auroc([0, 1], [0.0, 1.0]) == 1.0
    assert auroc([0, 1], [1.0, 0.0]) == 0.0
    assert auroc([1, 0], [3.0, 3.0]) == 0.5
    assert average_precision([0, 1], [1.0, 0.0]) == 0.5
    assert f1_max([0, 1], [1.0, 0.0]) == (2 / 3, 0.0)
    assert f1_max([1], [0.2]) == (1.0, 0.2)  # no negatives: allowed for F1
    assert auroc([False, True, True], [0.5, 0.5, 0.6]) == 0.75


def test_raw_scores_are_never_squashed():
    # torchmetrics' sigmoid on out-of-range scores made huge scores tie; here order is all that counts
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([100.0, 200.0, 300.0, 250.0, 350.0, 400.0])
    assert auroc(y, s) == 8 / 9  # the correctly rounded value
    assert abs(auroc(y, s) - roc_auc_score(y, s)) <= TOL
    shifted = auroc(y, (s - 1e6) * 1e3)  # any strictly increasing transform keeps the value
    assert shifted == 8 / 9


def test_large_random_set_matches_sklearn():
    rng = np.random.default_rng(7)
    y = rng.random(200_000) < 0.03
    s = (rng.normal(size=y.size) + 1.5 * y).astype(np.float32).round(2)  # float32, many ties
    assert abs(auroc(y, s) - roc_auc_score(y, s)) <= TOL
    assert abs(average_precision(y, s) - average_precision_score(y, s)) <= TOL


def test_exact_integer_auroc_for_large_counts():
    # numerator kept in integers: the result is the correctly rounded rational U / (P N)
    y = np.r_[np.zeros(300_001, int), np.ones(7, int)]
    s = np.r_[np.arange(300_001), np.array([5, 5, 10, 299_999, 300_000, 300_001, 1e9])]
    wins = sum(np.sum(s[:300_001] < v) + 0.5 * np.sum(s[:300_001] == v) for v in s[300_001:])
    assert auroc(y, s) == wins / (7 * 300_001)


def test_image_metrics_dict():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.5, 0.45, 0.9, 0.2, 0.3]
    out = image_metrics(y, s)
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "image_f1_threshold", "n_images",
                        "n_anomalous_images"}
    assert out["image_auroc"] == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert out["image_ap"] == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert (out["image_f1_max"], out["image_f1_threshold"]) == ref_f1_max(np.array(y), np.array(s))
    assert out["n_images"] == 6 and out["n_anomalous_images"] == 3
    assert all(type(v) in (float, int) for v in out.values())  # plain Python numbers (JSON-ready)


def test_stats_are_shared_and_consistent():
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    s = np.array([0.3, 0.3, 0.1, 0.9, 0.2, 0.9, 0.0])
    st = RankingStats.from_scores(y, s)
    assert st.n_pos == 3 and st.n_neg == 4
    np.testing.assert_array_equal(st.negatives, [0.0, 0.1, 0.3, 0.9])
    np.testing.assert_array_equal(st.values, [0.2, 0.3, 0.9])
    np.testing.assert_array_equal(st.n_below, [2, 2, 3])
    np.testing.assert_array_equal(st.n_equal, [0, 1, 1])
    np.testing.assert_array_equal(st.tp_at(), [3, 2, 1])
    np.testing.assert_array_equal(st.fp_at(), [2, 2, 1])


def test_auroc_beyond_int64_counts_falls_back_to_float():
    from fractions import Fraction

    n_neg = 2**32  # a zero-stride run: no memory, but counts beyond the int64-exact product
    runs = (np.broadcast_to(np.float32(0.0), (n_neg,)),)
    st = RankingStats(runs, np.array([1.0]), np.array([2**31]), np.array([n_neg - 5]), np.array([3]))
    exact = Fraction(2 * (n_neg - 5) + 3, 2 * n_neg)
    assert st.auroc() == pytest.approx(float(exact), rel=1e-15)


def test_positive_weights_must_match_positives():
    from cfviz.metrics import MetricInputError

    with pytest.raises(MetricInputError, match="positive_weights has 1 values but there are 2 positives"):
        RankingStats.from_split(np.array([0.1]), np.array([0.2, 0.3]), np.array([1.0]))
