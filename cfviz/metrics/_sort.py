"""Exact sorting and counting helpers for large score arrays.

The normal pixels of a data set (about 110M at MVTec AD's size) are the one big sort of the
pixel metrics. NumPy's quicksort releases the GIL, so the array is sorted as ``n_jobs`` slices
in threads and kept as that many sorted *runs*: every count the metrics need ("how many normal
scores are below u") is a sum over the runs, so the runs never have to be merged (a merge
costs another full pass; :func:`merge_runs` does it only when a full curve is asked for).
Everything is exact: splitting the work changes no result.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# below this many values one thread is as fast (thread start-up dominates)
_PARALLEL_MIN = 2_000_000
# queries per block in the blocked search; the haystack window of a block stays cache-sized
_BLOCK = 512


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None`` or ``-1`` means every CPU this process may use; otherwise at least 1."""
    if n_jobs is None or (isinstance(n_jobs, (int, np.integer)) and n_jobs == -1):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        from cfviz.metrics._validate import MetricInputError

        raise MetricInputError(f"n_jobs must be a positive integer, -1 or None (all CPUs), got {n_jobs!r}")
    return int(n_jobs)


def sorted_runs(values: np.ndarray, n_jobs: int | None = None) -> tuple[np.ndarray, ...]:
    """Sort a 1-D array in place as consecutive slices (in threads); return the sorted slices.

    >>> sorted_runs(np.array([3.0, -1.0, 2.0, 0.5]), n_jobs=1)
    (array([-1. ,  0.5,  2. ,  3. ]),)
    """
    jobs = min(resolve_n_jobs(n_jobs), max(1, values.size // _PARALLEL_MIN))
    if jobs <= 1:
        values.sort()
        return (values,)
    parts = np.array_split(values, jobs)  # views into `values`
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(np.ndarray.sort, parts))
    return tuple(parts)


def merge_runs(runs: tuple[np.ndarray, ...]) -> np.ndarray:
    """One ascending array from sorted runs (NumPy's stable sort merges runs in linear time).

    >>> merge_runs((np.array([1, 4]), np.array([2, 3, 5])))
    array([1, 2, 3, 4, 5])
    """
    if len(runs) == 1:
        return runs[0]
    merged = np.concatenate(runs)
    merged.sort(kind="stable")
    return merged


def searchsorted_ascending(haystack: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted`` for *ascending* queries, as int64, searched block by block.

    Queries ``[i, i + _BLOCK)`` can only land between the positions of query ``i`` and of query
    ``i + _BLOCK``, so each block searches a small, cache-resident window instead of the whole
    (possibly 100M-long) haystack.

    >>> searchsorted_ascending(np.array([1, 2, 2, 5]), np.array([0, 2, 3, 9]), side="right")
    array([0, 3, 3, 4])
    """
    m = queries.size
    if m < 8 * _BLOCK or haystack.size < 64 * _BLOCK:
        return np.searchsorted(haystack, queries, side=side).astype(np.int64, copy=False)
    heads = np.arange(0, m, _BLOCK)
    edges = np.append(np.searchsorted(haystack, queries[heads], side=side), haystack.size)
    out = np.empty(m, dtype=np.int64)
    for b, start in enumerate(heads.tolist()):
        lo, hi = int(edges[b]), int(edges[b + 1])
        stop = start + _BLOCK
        out[start:stop] = np.searchsorted(haystack[lo:hi], queries[start:stop], side=side)
        out[start:stop] += lo
    return out


def count_below(runs: tuple[np.ndarray, ...] | np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ascending ``queries``: how many values of the sorted runs are ``< q`` and ``== q``.

    Ties are checked only for the queries whose value occurs in a run at all.

    >>> count_below(np.array([1, 2, 2, 5]), np.array([0, 2, 3, 5, 9]))
    (array([0, 1, 3, 3, 4]), array([0, 2, 0, 1, 0]))
    """
    if isinstance(runs, np.ndarray):
        runs = (runs,)
    below = np.zeros(queries.shape, dtype=np.int64)
    equal = np.zeros(queries.shape, dtype=np.int64)
    for run in runs:
        b = searchsorted_ascending(run, queries, "left")
        below += b
        inside = np.flatnonzero(b < run.size)
        hit = inside[run[b[inside]] == queries[inside]]
        if hit.size:
            equal[hit] += searchsorted_ascending(run, queries[hit], "right") - b[hit]
    return below, equal


def count_scalar(runs: tuple[np.ndarray, ...], value: object, side: str) -> int:
    """How many values of the runs are ``< value`` (side "left") or ``<= value`` ("right")."""
    return sum(int(np.searchsorted(run, value, side=side)) for run in runs)


def kth_largest(runs: tuple[np.ndarray, ...], k: int) -> object:
    """The ``k``-th largest value (1-based, ties counted) of the union of sorted runs.

    >>> int(kth_largest((np.array([1, 5, 7]), np.array([2, 5, 9])), 3))  # int(): same text on numpy 1 and 2
    5
    """
    total = sum(run.size for run in runs)
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}], got {k}")
    if len(runs) == 1:
        return runs[0][total - k]
    best = None
    for run in runs:
        # largest index i with count(>= run[i]) >= k; counts fall as i grows
        lo, hi = 0, run.size - 1
        if run.size == 0 or total - count_scalar(runs, run[lo], "left") < k:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if total - count_scalar(runs, run[mid], "left") >= k:
                lo = mid
            else:
                hi = mid - 1
        if best is None or run[lo] > best:
            best = run[lo]
    return best
