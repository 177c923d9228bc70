"""Exact ranking metrics on raw scores: AUROC, average precision and F1-max from one sort.

Every metric here is a function of how the positive (anomalous) scores interleave with the
negative (normal) ones. :class:`RankingStats` computes that interleaving once: the negatives
sorted, and for each *distinct* positive score ``u`` the number of positives equal to ``u``
and the number of negatives below and equal to ``u``. Each metric is then a few vectorised
sums over the distinct positive scores, exact (integer counts, no binning) and with ties
treated as scikit-learn treats them:

* AUROC = P(s_pos > s_neg) + 0.5 P(s_pos == s_neg), the Mann-Whitney statistic, which equals
  the trapezoidal area under the ROC curve that ``sklearn.metrics.roc_auc_score`` computes;
* AP = sum over distinct thresholds t of (R(t) - R(t_prev)) * Prec(t) (step-wise, no
  interpolation), as ``sklearn.metrics.average_precision_score``; recall only moves at
  thresholds that hold positives, so only those are visited;
* F1-max = max over distinct thresholds t of 2 TP / (TP + FP + P). For a fixed TP, F1 falls as
  FP grows, so the maximum over *all* distinct thresholds is reached at a positive score.

A threshold ``t`` predicts "anomalous" for every score ``>= t``. Scores are never squashed
(no sigmoid, no min-max): any real range works.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cfviz.metrics._sort import count_below, merge_runs, sorted_runs
from cfviz.metrics._validate import MetricInputError, as_binary, as_scores, check_1d_pair, check_classes


@dataclass(frozen=True, eq=False)
class RankingStats:
    """How positive scores interleave with negative ones, computed once and shared by metrics.

    Attributes
    ----------
    runs:
        The negative scores as one or more ascending runs (one per sorting thread); their
        union is every negative. :attr:`negatives` merges them on first use.
    values:
        ``(m,)`` the distinct positive scores, ascending.
    counts:
        ``(m,)`` int64, positives equal to each value.
    n_below, n_equal:
        ``(m,)`` int64, negatives strictly below / equal to each value.
    weights:
        ``(m,)`` float64 or ``None``: summed per-positive weights at each value (AUPRO uses
        ``1 / |region|``).

    Example
    -------
    >>> st = RankingStats.from_scores([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> st.values, st.counts, st.n_below
    (array([0.35, 0.8 ]), array([1, 1]), array([1, 2]))
    >>> st.auroc()
    0.75
    """

    runs: tuple[np.ndarray, ...]
    values: np.ndarray
    counts: np.ndarray
    n_below: np.ndarray
    n_equal: np.ndarray
    weights: np.ndarray | None = None

    @classmethod
    def from_scores(cls, labels: Any, scores: Any, *, label_name: str = "labels",
                    score_name: str = "scores") -> RankingStats:
        """Validate 1-D binary ``labels`` and real ``scores`` and build the statistics."""
        y = as_binary(labels, label_name)
        s = as_scores(scores, score_name)
        check_1d_pair(y, s, label_name, score_name)
        return cls.from_split(s[~y], s[y])

    @classmethod
    def from_split(cls, negatives: np.ndarray, positives: np.ndarray, positive_weights: np.ndarray | None = None,
                   *, negatives_sorted: bool = False, n_jobs: int | None = None) -> RankingStats:
        """Build from the negative and the positive scores (1-D, finite, same dtype).

        ``negatives`` is sorted in place unless ``negatives_sorted`` (pass a copy you own).
        ``positive_weights`` (one per positive) are summed per distinct positive value.
        ``n_jobs`` threads sort the negatives (``None``: all CPUs); results do not depend on it.
        """
        runs = (negatives,) if negatives_sorted else sorted_runs(negatives, n_jobs)
        values, counts, weights = distinct_positives(positives, positive_weights)
        n_below, n_equal = count_below(runs, values)
        return cls(runs, values, counts, n_below, n_equal, weights)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        """Number of positives."""
        return int(self.counts.sum())

    @property
    def n_neg(self) -> int:
        """Number of negatives."""
        return sum(int(run.size) for run in self.runs)

    @cached_property
    def negatives(self) -> np.ndarray:
        """``(N,)`` every negative score, ascending (the runs merged, once)."""
        return merge_runs(self.runs)

    def _require(self, metric: str, label_name: str = "labels") -> tuple[int, int]:
        n_pos, n_neg = self.n_pos, self.n_neg
        check_classes(n_pos, n_neg, label_name, metric)
        return n_pos, n_neg

    # -- counts at the distinct positive values --------------------------------------------------
    def tp_at(self) -> np.ndarray:
        """True positives at threshold ``values[j]`` (positives ``>= values[j]``), int64."""
        return np.cumsum(self.counts[::-1])[::-1]

    def fp_at(self) -> np.ndarray:
        """False positives at threshold ``values[j]`` (negatives ``>= values[j]``), int64."""
        return self.n_neg - self.n_below

    # -- metrics -----------------------------------------------------------------------------------
    def auroc(self, label_name: str = "labels") -> float:
        """Area under the ROC curve (ties count one half)."""
        n_pos, n_neg = self._require("AUROC", label_name)
        if 2 * n_pos * n_neg < 2**62:
            # integer numerator: exact, and Python's int / int is correctly rounded
            twice_wins = int(np.dot(self.counts, 2 * self.n_below + self.n_equal))
            return twice_wins / (2 * n_pos * n_neg)
        ranks = 2.0 * self.n_below + self.n_equal  # beyond int64: float64 (relative error ~1e-16)
        return float(np.dot(self.counts / n_pos, ranks / (2.0 * n_neg)))

    def average_precision(self, label_name: str = "labels") -> float:
        """Step-wise average precision (no interpolation)."""
        n_pos, _ = self._require("average precision", label_name)
        tp = self.tp_at()
        precision = tp / (tp + self.fp_at())
        return float(np.dot(self.counts, precision) / n_pos)

    def f1_max(self, label_name: str = "labels") -> tuple[float, float]:
        """Best F1 over every threshold and that threshold (the largest one if several tie)."""
        n_pos = self.n_pos
        if n_pos == 0:
            check_classes(0, self.n_neg, label_name, "F1-max")
        tp = self.tp_at()
        f1 = 2 * tp / (tp + self.fp_at() + n_pos)
        best = f1.size - 1 - int(np.argmax(f1[::-1]))  # last maximum = largest threshold
        return float(f1[best]), float(self.values[best])


def distinct_positives(positives: np.ndarray, positive_weights: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The distinct positive scores (ascending), how often each occurs, and their summed weights.

    ``positive_weights`` (one per positive, or ``None``) are summed per distinct value in the
    order of a quicksort of ``positives`` (so the float sums are reproducible).

    >>> distinct_positives(np.array([0.5, 0.2, 0.5]), np.array([1.0, 2.0, 3.0]))
    (array([0.2, 0.5]), array([1, 2]), array([2., 4.]))
    """
    if positive_weights is None:
        pos = np.sort(positives)
        w_sorted = None
    else:
        if len(positive_weights) != positives.size:
            raise MetricInputError(f"positive_weights has {len(positive_weights)} values but there are "
                                   f"{positives.size} positives; give one weight per positive")
        order = np.argsort(positives)
        pos = positives[order]
        w_sorted = np.asarray(positive_weights, dtype=np.float64)[order]
    if pos.size:
        starts = np.flatnonzero(np.concatenate(([True], pos[1:] != pos[:-1])))
    else:
        starts = np.zeros(0, dtype=np.intp)
    values = pos[starts]
    counts = np.diff(np.append(starts, pos.size)).astype(np.int64)
    weights = None
    if w_sorted is not None:
        weights = np.add.reduceat(w_sorted, starts) if pos.size else np.zeros(0)
    return values, counts, weights


def auroc(y: Any, s: Any) -> float:
    """Area under the ROC curve of scores ``s`` for binary labels ``y`` (1 = anomalous).

    Equal to ``sklearn.metrics.roc_auc_score(y, s)``, ties included, computed from one sort.

    Parameters
    ----------
    y:
        ``(n,)`` bool or 0/1 labels; both classes must be present.
    s:
        ``(n,)`` finite real scores, higher = more anomalous, any range.

    Example
    -------
    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auroc([0, 1, 0, 1], [5, 5, 1, 9])  # a tie between classes counts one half
    0.875
    """
    return RankingStats.from_scores(y, s, label_name="y", score_name="s").auroc("y")


def average_precision(y: Any, s: Any) -> float:
    """Average precision: sum over thresholds of (recall gain) x precision, no interpolation.

    Equal to ``sklearn.metrics.average_precision_score(y, s)``.

    Example
    -------
    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    return RankingStats.from_scores(y, s, label_name="y", score_name="s").average_precision("y")


def f1_max(y: Any, s: Any) -> tuple[float, float]:
    """Largest F1 score over every distinct threshold, and that threshold.

    A sample is predicted anomalous when its score is ``>= threshold``. When several thresholds
    reach the same F1, the largest is returned. Needs at least one positive; negatives may be
    absent (then F1-max is 1).

    Example
    -------
    >>> f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.8, 0.35)
    """
    return RankingStats.from_scores(y, s, label_name="y", score_name="s").f1_max("y")
