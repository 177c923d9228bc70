"""Two result sets side by side: a tidy table of per-metric deltas.

A result set is a run folder (``results.csv``, as :func:`cfviz.experiments.evaluate` writes it), the
``results.csv`` file itself, an :class:`~cfviz.evaluation.runner.EvaluationResult`, or its tidy
``frame``. :func:`compare_results` averages each side the way ``result.summary`` does (mean over
categories per seed, then over seeds), on the categories both sides share, and returns one row
per (method, shots, metric) with ``a``, ``b`` and ``delta = b - a``, all in percent.

Example
-------
>>> import pandas as pd
>>> a = pd.DataFrame({"dataset": "x", "category": ["c", "d"], "method": "winclip", "shots": 0, "seed": 0,
...                   "metric": "image_auroc", "value": [0.80, 0.90]})
>>> b = a.assign(value=[0.85, 0.99])
>>> compare_results(a, b)[["method", "shots", "metric", "a", "b", "delta"]].round(1).to_dict("records")
[{'method': 'winclip', 'shots': 0, 'metric': 'image_auroc', 'a': 85.0, 'b': 92.0, 'delta': 7.0}]

Comparing two methods (or k = 0 and k = 1) of one run: pass its frame filtered twice and join on
what the two sides share, e.g. ``compare_results(f[f.method == "winclip"], f[f.method == "clipfusion"],
on=("shots",))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cfviz.errors import CfvizError

#: Columns every result set needs (``results.csv``'s own columns; ``dataset`` is optional).
RESULT_COLUMNS: tuple[str, ...] = ("category", "method", "shots", "seed", "metric", "value")


class ResultsError(CfvizError, ValueError):
    """A result set to compare or export cannot be read (missing file, wrong columns, nothing in common)."""


def load_results(source: Any, name: str = "results") -> Any:
    """The tidy results frame of ``source`` (run folder, ``results.csv``, EvaluationResult or DataFrame).

    Values stay fractions in [0, 1], as in ``results.csv``. ``frame.attrs["random_weights"]`` is
    set when it is known (from the result object or the run folder's ``run.json``).

    Raises
    ------
    ResultsError
        The folder has no ``results.csv``, or the table lacks the columns of :data:`RESULT_COLUMNS`.
    """
    import json

    import pandas as pd

    random_weights = None
    if hasattr(source, "frame") and hasattr(source, "summary"):  # EvaluationResult
        frame = source.frame.copy()
        random_weights = getattr(source, "random_weights", None)
    elif isinstance(source, pd.DataFrame):
        frame = source.copy()
        random_weights = source.attrs.get("random_weights")
    elif isinstance(source, (str, Path)):
        path = Path(source)
        csv = path / "results.csv" if path.is_dir() else path
        if not csv.is_file():
            raise ResultsError(f"{name}: no results file at {csv}; pass a run folder written by `cfviz evaluate` "
                               "(it holds results.csv), the results.csv file, or an EvaluationResult")
        frame = pd.read_csv(csv)
        run_json = csv.parent / "run.json"
        if run_json.is_file():
            random_weights = json.loads(run_json.read_text()).get("random_weights")
    else:
        raise ResultsError(f"{name} must be a run folder, a results.csv path, an EvaluationResult or a DataFrame, "
                           f"got {type(source).__name__}")
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{name} lacks the columns {missing}; a results table has {list(RESULT_COLUMNS)} "
                           "(one row per category, method, shots, seed and metric)")
    frame.attrs["random_weights"] = random_weights
    return frame


def _means(frame: Any, keys: list[str]) -> Any:
    """Mean over categories per seed, then mean over seeds (``result.summary``'s order), in percent."""
    per_seed = frame.groupby([*keys, "seed"], as_index=False)["value"].mean()
    out = per_seed.groupby(keys)["value"].agg(["mean", "count"]).reset_index()
    out["mean"] = 100 * out["mean"]
    return out.rename(columns={"count": "n_seeds"})


def compare_results(a: Any, b: Any, *, on: Sequence[str] = ("method", "shots"), by_category: bool = False,
                    labels: tuple[str, str] = ("a", "b")) -> Any:
    """Per-metric deltas of two result sets: ``a``, ``b`` and ``delta = b - a``, in percent.

    Parameters
    ----------
    a, b:
        Run folders, ``results.csv`` files, EvaluationResults or tidy frames.
    on:
        Columns that pair rows of ``a`` with rows of ``b`` (besides ``metric``): by default the
        same method and shots. Use ``("shots",)`` to compare two methods, ``("method",)`` for two k.
    by_category:
        One row per category too (mean over seeds) instead of the mean over categories.
    labels:
        Names of the two sides, kept in ``frame.attrs["labels"]`` (for captions and exports).

    Only categories present in both sets are averaged (a mean over different categories is not a
    comparison); ``frame.attrs["categories"]`` lists them. A (key, metric) present on one side only
    keeps its value with ``delta`` NaN.

    Raises
    ------
    ResultsError
        The sets share no category, or ``on`` names a column a set does not have.
    """
    import pandas as pd

    fa, fb = load_results(a, "a"), load_results(b, "b")
    on = list(on)
    for name, frame in (("a", fa), ("b", fb)):
        bad = [c for c in on if c not in frame.columns]
        if bad:
            raise ResultsError(f"on names columns {bad} that result set {name} lacks; use some of "
                               f"{[c for c in frame.columns if c not in ('value', 'seed', 'metric')]}")
    common = sorted(set(fa["category"]) & set(fb["category"]))
    if not common:
        raise ResultsError(f"the result sets share no category (a: {sorted(set(fa['category']))}, "
                           f"b: {sorted(set(fb['category']))}); compare runs over the same categories")
    fa, fb = fa[fa["category"].isin(common)], fb[fb["category"].isin(common)]
    keys = [*on, *(["category"] if by_category else []), "metric"]
    ma = _means(fa, keys).rename(columns={"mean": "a", "n_seeds": "n_seeds_a"})
    mb = _means(fb, keys).rename(columns={"mean": "b", "n_seeds": "n_seeds_b"})
    out = pd.merge(ma, mb, on=keys, how="outer")
    out["delta"] = out["b"] - out["a"]
    out["unit"] = "%"
    from cfviz.evaluation.report import METRIC_ORDER

    rank = {m: i for i, m in enumerate(METRIC_ORDER)}
    out["_order"] = out["metric"].map(lambda m: rank.get(m, len(rank)))
    out = out.sort_values([*keys[:-1], "_order", "metric"]).drop(columns="_order").reset_index(drop=True)
    out = out[[*keys, "a", "b", "delta", "n_seeds_a", "n_seeds_b", "unit"]]
    out.attrs.update(labels=tuple(labels), categories=common, on=tuple(on))
    return out
