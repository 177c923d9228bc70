"""Exact sorting and counting helpers for large score arrays.

The normal pixels of a data set (about 110M at MVTec AD's size) are the one big sort of the
pixel metrics. NumPy's quicksort releases the GIL, so the array is sorted as ``n_jobs`` slices
in threads and kept as that many sorted *runs*: every count the metrics need ("how many normal
scores are below u") is a sum over the runs, so the runs never have to be merged (a merge
costs another full pass; :func:`merge_runs` does it only when a full curve is asked for).
The pixel metrics use :func:`kept_values`, which picks the values out of the full pixel array
in threads (chunk by chunk, without a full-size boolean temporary), and :func:`sort_in_place`,
which sorts them as *one* run (``np.partition`` into value stretches, then the stretches in
threads), so each count is one search. Everything is exact: splitting the work changes no result.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor

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


# pixels per extraction step: the boolean mask and the picked scores stay cache-sized
_CHUNK = 1 << 20


def _extract_into(out: np.ndarray, scores: np.ndarray, drop: np.ndarray) -> None:
    """Write ``scores[~drop]`` (1-D) into ``out`` in steps of ``_CHUNK`` (no full-size temporary)."""
    o = 0
    for lo in range(0, scores.size, _CHUNK):
        picked = scores[lo:lo + _CHUNK][~drop[lo:lo + _CHUNK]]
        out[o:o + picked.size] = picked
        o += picked.size
    if o != out.size:  # pragma: no cover - the plan counted these pixels
        raise AssertionError(f"extracted {o} values into a buffer of {out.size}")


def kept_values(scores: np.ndarray, drop: np.ndarray, n_jobs: int | None = None,
                pool: Executor | None = None) -> np.ndarray:
    """``scores[~drop]`` (1-D, equal sizes; neither modified) as a new array, picked in threads.

    The input is cut into up to ``n_jobs`` stretches of consecutive positions; each task of
    ``pool`` (or this thread when ``pool`` is ``None``) picks its stretch into its own slice of
    the result, so the order is that of ``scores[~drop]``.

    >>> kept_values(np.array([3.0, 9.0, -1.0, 2.0]), np.array([False, True, False, False]))
    array([ 3., -1.,  2.])
    """
    n = scores.size
    jobs = min(resolve_n_jobs(n_jobs), max(1, n // _PARALLEL_MIN))
    bounds = [n * j // jobs for j in range(jobs + 1)]
    kept = [(hi - lo) - int(np.count_nonzero(drop[lo:hi])) for lo, hi in zip(bounds[:-1], bounds[1:])]
    offsets = np.concatenate(([0], np.cumsum(kept))).astype(int).tolist()
    out = np.empty(offsets[-1], dtype=scores.dtype)
    tasks = [(out[offsets[j]:offsets[j + 1]], scores[bounds[j]:bounds[j + 1]], drop[bounds[j]:bounds[j + 1]])
             for j in range(jobs)]
    if pool is None or jobs == 1:
        for task in tasks:
            _extract_into(*task)
    else:
        for f in [pool.submit(_extract_into, *task) for task in tasks]:
            f.result()
    return out


def sort_in_place(values: np.ndarray, n_jobs: int | None = None, pool: Executor | None = None) -> np.ndarray:
    """Sort a 1-D array in place, in ``n_jobs`` threads of ``pool``; return it (one sorted run).

    ``np.partition`` first puts the values into ``n_jobs`` stretches, each holding only values
    no smaller than the stretch before it (a linear-time pass, ~6x cheaper than the sort); the
    stretches are then sorted in parallel (NumPy releases the GIL). The result is the one fully
    sorted array, so counts against it need one search per query, not one per run.

    >>> sort_in_place(np.array([3.0, -1.0, 2.0, 0.5]), n_jobs=1)
    array([-1. ,  0.5,  2. ,  3. ])
    """
    n = values.size
    jobs = min(resolve_n_jobs(n_jobs), max(1, n // _PARALLEL_MIN))
    if pool is None or jobs == 1:
        values.sort()
        return values
    cuts = [n * j // jobs for j in range(jobs + 1)]
    values.partition(cuts[1:-1])  # each cut lands in its sorted place, smaller values before it
    for f in [pool.submit(np.ndarray.sort, values[lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])]:
        f.result()
    return values


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


def _count_in_run(run: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    below = searchsorted_ascending(run, queries, "left")
    equal = np.zeros(queries.shape, dtype=np.int64)
    inside = np.flatnonzero(below < run.size)
    hit = inside[run[below[inside]] == queries[inside]]
    if hit.size:
        equal[hit] = searchsorted_ascending(run, queries[hit], "right") - below[hit]
    return below, equal


def count_below(runs: tuple[np.ndarray, ...] | np.ndarray, queries: np.ndarray,
                pool: Executor | None = None, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """For ascending ``queries``: how many values of the sorted runs are ``< q`` and ``== q``.

    Ties are checked only for the queries whose value occurs in a run at all. With ``pool``
    the work is shared by its threads (``searchsorted`` releases the GIL): one run per thread,
    or, for a single run, ``n_jobs`` stretches of the queries. The integer counts are the same.

    >>> count_below(np.array([1, 2, 2, 5]), np.array([0, 2, 3, 5, 9]))
    (array([0, 1, 3, 3, 4]), array([0, 2, 0, 1, 0]))
    """
    if isinstance(runs, np.ndarray):
        runs = (runs,)
    below = np.zeros(queries.shape, dtype=np.int64)
    equal = np.zeros(queries.shape, dtype=np.int64)
    if pool is not None and len(runs) == 1 and n_jobs > 1 and queries.size >= 8 * _BLOCK:
        # one run: each thread searches its stretch of the (ascending) queries
        cuts = [queries.size * j // n_jobs for j in range(n_jobs + 1)]
        spans = list(zip(cuts[:-1], cuts[1:]))
        found = pool.map(lambda span: _count_in_run(runs[0], queries[span[0]:span[1]]), spans)
        for (lo, hi), (b, e) in zip(spans, found):
            below[lo:hi] = b
            equal[lo:hi] = e
        return below, equal
    if pool is not None and len(runs) > 1:
        parts = list(pool.map(lambda run: _count_in_run(run, queries), runs))
    else:
        parts = [_count_in_run(run, queries) for run in runs]
    for b, e in parts:
        below += b
        equal += e
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
