"""Module-level promises: light import, runnable docstring examples, the sorting helpers."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest

from cfviz.metrics._sort import count_below, kth_largest, merge_runs, searchsorted_ascending, sorted_runs

MODULES = ["cfviz.metrics", "cfviz.metrics.ranking", "cfviz.metrics.aupro", "cfviz.metrics.pixel",
           "cfviz.metrics.summary", "cfviz.metrics._sort"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_import_is_light():
    code = ("import sys, cfviz.metrics; "
            "print(sorted(m for m in ('scipy', 'sklearn', 'torch', 'matplotlib', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_threaded_sorted_runs_merge_to_numpy_sort(monkeypatch, dtype):
    import cfviz.metrics._sort as sort_mod

    monkeypatch.setattr(sort_mod, "_PARALLEL_MIN", 100)
    rng = np.random.default_rng(0)
    values = (rng.normal(size=5003) * 100).astype(dtype)
    expected = np.sort(values)
    for jobs in (1, 2, 3, 7):
        runs = sorted_runs(values.copy(), n_jobs=jobs)
        assert len(runs) == jobs and sum(r.size for r in runs) == values.size
        assert all(np.all(r[1:] >= r[:-1]) for r in runs)
        np.testing.assert_array_equal(merge_runs(runs), expected)


def test_counts_and_selection_over_runs_match_brute_force(monkeypatch):
    import cfviz.metrics._sort as sort_mod

    monkeypatch.setattr(sort_mod, "_BLOCK", 4)  # exercise the blocked search on small arrays
    rng = np.random.default_rng(1)
    for trial in range(20):
        values = rng.integers(0, 40, size=int(rng.integers(1, 400)))
        runs = tuple(np.sort(part) for part in np.array_split(values, int(rng.integers(1, 4))))
        queries = np.unique(rng.integers(-2, 43, size=int(rng.integers(1, 80))))
        below, equal = count_below(runs, queries)
        np.testing.assert_array_equal(below, [(values < q).sum() for q in queries])
        np.testing.assert_array_equal(equal, [(values == q).sum() for q in queries])
        for side in ("left", "right"):
            hay = np.sort(values)
            np.testing.assert_array_equal(searchsorted_ascending(hay, queries, side),
                                          np.searchsorted(hay, queries, side))
        desc = np.sort(values)[::-1]
        for k in {1, values.size, int(rng.integers(1, values.size + 1))}:
            assert kth_largest(runs, k) == desc[k - 1]
    with pytest.raises(ValueError):
        kth_largest((np.array([1.0]),), 2)
    b, e = count_below(np.array([], dtype=float), np.array([1.0]))
    assert b.tolist() == [0] and e.tolist() == [0]
