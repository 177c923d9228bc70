"""The pixel-metric pipeline's parts (issue 12, pixel metrics at the floor of their sort).

``PixelCurves.from_maps`` picks the normal scores chunk by chunk into one buffer in threads,
sorts it as one run (np.partition into value stretches, the stretches in threads) while another
thread labels the defect regions on their bounding boxes, and counts in threads. Each part must
give exactly what the plain computation gives.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from cfviz.metrics import PixelCurves, region_weights
from cfviz.metrics._sort import count_below, kept_values, sort_in_place
from cfviz.metrics.ranking import RankingStats, distinct_positives

from . import _reference as ref


def _whole_image_weights(masks: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Reference: label every image whole (what region_weights did before it cropped)."""
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    parts, n = [np.zeros(0)], 0
    for m in masks:
        labels, k = ndimage.label(m, structure=structure)
        ids = labels[m]
        parts.append(1.0 / np.bincount(ids, minlength=k + 1)[1:][ids - 1])
        n += k
    return np.concatenate(parts), n


@pytest.mark.parametrize("connectivity", [4, 8])
def test_bounding_box_labelling_equals_whole_image_labelling(connectivity):
    rng = np.random.default_rng(3)
    masks = ref.blob_masks(rng, 12, 19, 23, p_empty=0.3)
    masks[1] = False
    masks[1, 0, 0] = masks[1, -1, -1] = masks[1, 0, -1] = True  # corners: box = whole image
    masks[2] = True  # one region covering the image
    masks[3] = False
    masks[3, 5, 7] = True  # a single pixel: a 1x1 box
    masks[4] = np.eye(19, 23, dtype=bool)  # a diagonal: one region (8) or 19 (4)
    masks[5] = False
    masks[5, 18, 3:9] = True  # on the last row
    masks[6] = False
    masks[6, 0, 3:5] = True  # on the first row
    weights, n_regions = region_weights(masks, connectivity)
    expected, n_expected = _whole_image_weights(masks, connectivity)
    assert n_regions == n_expected
    np.testing.assert_array_equal(weights, expected)  # same values, same (C) order


@pytest.mark.parametrize("jobs", [1, 2, 3, 7])
def test_kept_values_and_parallel_sort_give_numpy_results(monkeypatch, jobs):
    import cfviz.metrics._sort as sort_mod

    monkeypatch.setattr(sort_mod, "_PARALLEL_MIN", 50)
    monkeypatch.setattr(sort_mod, "_CHUNK", 37)  # many extraction steps on a small array
    monkeypatch.setattr(sort_mod, "_BLOCK", 4)  # the blocked search, split over threads
    rng = np.random.default_rng(jobs)
    scores = np.round(rng.normal(size=1001), 1).astype(np.float32)  # many ties
    drop = rng.random(1001) < 0.3
    drop[:120] = True  # a leading stretch with nothing kept
    before = scores.copy(), drop.copy()
    queries = np.unique(np.concatenate((scores[drop], [-9.0, 9.0]))).astype(np.float32)
    expected_below = [(scores[~drop] < q).sum() for q in queries]
    expected_equal = [(scores[~drop] == q).sum() for q in queries]
    with ThreadPoolExecutor(jobs) as pool:
        for p in (None, pool):
            kept = kept_values(scores, drop, jobs, p)
            np.testing.assert_array_equal(kept, scores[~drop])  # same values, same order
            run = sort_in_place(kept, jobs, p)
            assert run is kept
            np.testing.assert_array_equal(run, np.sort(scores[~drop]))
            below, equal = count_below((run,), queries, p, jobs)
            np.testing.assert_array_equal(below, expected_below)
            np.testing.assert_array_equal(equal, expected_equal)
    np.testing.assert_array_equal(scores, before[0])
    np.testing.assert_array_equal(drop, before[1])


def test_kept_values_with_nothing_kept():
    kept = kept_values(np.arange(5.0), np.ones(5, bool), 2)
    assert kept.size == 0 and kept.dtype == np.float64
    assert sort_in_place(kept, 2).size == 0


def test_distinct_positives_sums_weights_per_value():
    values, counts, weights = distinct_positives(np.array([3, 1, 3, 3, 2]), np.array([0.5, 1.0, 0.25, 0.25, 2.0]))
    assert values.tolist() == [1, 2, 3] and counts.tolist() == [1, 1, 3] and weights.tolist() == [1.0, 2.0, 1.0]
    values, counts, weights = distinct_positives(np.array([2.0, 2.0]))
    assert values.tolist() == [2.0] and counts.tolist() == [2] and weights is None


def test_from_maps_equals_the_plain_split(monkeypatch):
    """Threaded pipeline == RankingStats.from_split on maps[~masks], maps[masks] (the old path)."""
    import cfviz.metrics._sort as sort_mod

    rng = np.random.default_rng(11)
    masks = ref.blob_masks(rng, 20, 24, 24, p_empty=0.3)
    maps = np.round(rng.normal(size=masks.shape) + masks, 2).astype(np.float32)
    weights, n_regions = region_weights(masks)
    plain = RankingStats.from_split(maps[~masks], maps[masks], weights, n_jobs=1)
    monkeypatch.setattr(sort_mod, "_PARALLEL_MIN", 500)
    monkeypatch.setattr(sort_mod, "_CHUNK", 100)
    monkeypatch.setattr(sort_mod, "_BLOCK", 4)
    for jobs in (1, 2, 4):
        curves = PixelCurves.from_maps(masks, maps, n_jobs=jobs)
        assert len(curves.stats.runs) == 1
        for name in ("values", "counts", "n_below", "n_equal", "weights"):
            np.testing.assert_array_equal(getattr(curves.stats, name), getattr(plain, name))
        np.testing.assert_array_equal(curves.stats.negatives, plain.negatives)
        assert curves.n_regions == n_regions


def test_non_contiguous_inputs_give_the_same_metrics():
    rng = np.random.default_rng(5)
    masks = ref.blob_masks(rng, 6, 16, 16, p_empty=0.2)
    maps = rng.normal(size=masks.shape) + masks
    expected = PixelCurves.from_maps(masks, maps).summary()
    flipped = PixelCurves.from_maps(masks[:, ::-1][:, ::-1], np.asfortranarray(maps)).summary()
    assert flipped == expected
