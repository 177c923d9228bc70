"""Paper-ready tables: the main results and the timestep/block matching table as LaTeX and Markdown.

:func:`results_table` turns a run (folder, ``results.csv``, EvaluationResult or frame) into a
:class:`Table`: one row per method and shots, one column per metric, values in percent
(mean ± std over seeds when there are several), and a ``published`` row under each of our rows
whose setting has published numbers (:mod:`cfviz.analysis.published`; shown for MVTec-AD and
VisA). :func:`matching_export` does the same for :func:`cfviz.analysis.ablations.matching_table`
(paper Table 5: one row per query/reference pair). ``Table.latex()`` writes a booktabs tabular
(``\\toprule``/``\\midrule``/``\\bottomrule``; the LaTeX preamble needs ``\\usepackage{booktabs}``),
``Table.markdown()`` a pipe table; ``Table.save("table.tex")`` picks the format by suffix.

Example
-------
>>> import pandas as pd
>>> f = pd.DataFrame({"dataset": "mvtec", "category": "bottle", "method": "winclip", "shots": 0, "seed": 0,
...                   "metric": ["image_auroc", "pixel_auroc"], "value": [0.9, 0.8]})
>>> t = results_table(f, published=True)
>>> print(t.markdown())  # doctest: +ELLIPSIS
| Method | k | Source | I-AUROC (%) | P-AUROC (%) |
|---|---|---|---|---|
| WinCLIP | 0 | ours | 90.0 | 80.0 |
| WinCLIP | 0 | published | 99.2 | 89.5 |
<BLANKLINE>
Mean over categories: bottle. Published: WinCLIP (CVPR 2023), per-class table (mean over the same categories), grid: 240 px ...
<BLANKLINE>
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfviz.analysis.compare import ResultsError, load_results

#: Display names of methods and metrics in exported tables.
METHOD_NAMES: dict[str, str] = {"clipfusion": "CLIPFusion", "patchclip": "PatchCLIP", "mapdiff": "MapDiff",
                                "winclip": "WinCLIP", "aaclip": "AA-CLIP"}
METRIC_NAMES: dict[str, str] = {"image_auroc": "I-AUROC", "image_ap": "I-AP", "image_f1_max": "I-F1max",
                                "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP", "pixel_f1_max": "P-F1max",
                                "pixel_aupro": "P-AUPRO"}
#: Data sets that have published numbers (:mod:`cfviz.analysis.published`).
PUBLISHED_DATASETS: tuple[str, ...] = ("mvtec", "visa")
#: The note under every exported table of a random-weight run.
RANDOM_WEIGHTS_TABLE_NOTE = "Offline random-weight models: the numbers show the pipeline runs, not detection quality."

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--"}


def latex_escape(text: Any) -> str:
    r"""``text`` with LaTeX's special characters escaped (``±`` becomes ``$\pm$``).

    >>> latex_escape("pixel_f1_max (%)")
    'pixel\\_f1\\_max (\\%)'
    """
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _md_escape(text: Any) -> str:
    return str(text).replace("|", r"\|")


@dataclass(frozen=True)
class Table:
    """A small table of display strings: a header, rows, and notes printed under it.

    ``midrules`` lists row indices before which a rule is drawn (groups of rows, e.g. per method).
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()
    midrules: tuple[int, ...] = ()
    align: str = field(default="")  #: LaTeX column alignment, e.g. "llr"; default: text left, numbers right

    def __post_init__(self) -> None:
        bad = [i for i, r in enumerate(self.rows) if len(r) != len(self.header)]
        if bad:
            raise ValueError(f"rows {bad} do not have {len(self.header)} cells like the header")

    def _align(self) -> str:
        if self.align:
            return self.align

        def numeric(c: int) -> bool:
            cells = [r[c] for r in self.rows if r[c] not in ("", "–")]
            return bool(cells) and all(s[:1].isdigit() or s[:1] in "-+" for s in cells)
        return "".join("r" if numeric(c) else "l" for c in range(len(self.header)))

    def latex(self, *, caption: str | None = None, label: str | None = None) -> str:
        r"""A booktabs ``tabular`` (in a ``table`` float when ``caption`` or ``label`` is given).

        Cells are escaped (``_``, ``%``, ``&``, ...); notes follow as a footnote-sized paragraph.
        """
        body = [f"\\begin{{tabular}}{{{self._align()}}}", r"\toprule",
                " & ".join(latex_escape(h) for h in self.header) + r" \\", r"\midrule"]
        for i, row in enumerate(self.rows):
            if i in self.midrules and i > 0:
                body.append(r"\midrule")
            body.append(" & ".join(latex_escape(c) for c in row) + r" \\")
        body += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            body.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(n) for n in self.notes) + "}")
        if caption is None and label is None:
            return "\n".join(body) + "\n"
        head = [r"\begin{table}[t]", r"\centering"]
        if caption is not None:
            head.append(f"\\caption{{{latex_escape(caption)}}}")
        if label is not None:
            head.append(f"\\label{{{label}}}")
        return "\n".join([*head, *body, r"\end{table}"]) + "\n"

    def markdown(self) -> str:
        """A pipe table (GitHub / Jupyter Markdown), notes as a paragraph under it."""
        lines = ["| " + " | ".join(_md_escape(h) for h in self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", " ".join(self.notes)]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path, **latex_options: Any) -> Path:
        """Write the table to ``path``: LaTeX for ``.tex``, Markdown for ``.md``."""
        from cfviz.utils.io import atomic_write_text

        path = Path(path)
        if path.suffix == ".tex":
            text = self.latex(**latex_options)
        elif path.suffix == ".md":
            text = self.markdown()
        else:
            raise ResultsError(f"path {str(path)!r} must end in .tex (LaTeX) or .md (Markdown)")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        return path


def _cell(mean: float, std: float, n: int, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _metric_order(metrics: Sequence[str]) -> list[str]:
    from cfviz.evaluation.report import METRIC_ORDER

    present = set(metrics)
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def _published_means(dataset: str, categories: Sequence[str]) -> tuple[dict[tuple[str, int, str], float], dict]:
    """Published values per (method, shots, metric): the mean of the per-class numbers over
    ``categories`` when the paper lists every one of them, else the paper's own mean over all
    classes when the run covers all of them. Returns the values and their sources."""
    from cfviz.analysis.published import PUBLISHED

    rows = [r for r in PUBLISHED if r["dataset"] == dataset]
    values: dict[tuple[str, int, str], float] = {}
    sources: dict[tuple[str, int, str], str] = {}
    settings = {(r["method"], int(r["shots"]), r["metric"]) for r in rows}
    for key in settings:
        per = {r["category"]: r for r in rows if (r["method"], int(r["shots"]), r["metric"]) == key}
        listed = set(per) - {"mean"}
        if categories and set(categories) <= listed:
            values[key] = sum(per[c]["published"] for c in categories) / len(categories)
            sources[key] = per[categories[0]]["source"] + (" (mean over the same categories)"
                                                           if set(categories) != listed else "")
            sources[key] += f", grid: {per[categories[0]]['grid']}"
        elif "mean" in per and (not listed or set(categories) >= listed):
            values[key] = per["mean"]["published"]
            sources[key] = f"{per['mean']['source']}, grid: {per['mean']['grid']}"
    return values, sources


def results_table(source: Any, *, published: bool | None = None, metrics: Sequence[str] | None = None,
                  digits: int = 1) -> Table:
    """The main results table of a run: methods x metrics in percent, published numbers beside ours.

    Parameters
    ----------
    source:
        A run folder, ``results.csv``, EvaluationResult or tidy results frame.
    published:
        Add a "published" row under each setting with published numbers. ``None`` (default): when
        the data set is MVTec-AD or VisA and the run is not known to use random weights (published
        numbers beside a random-weight smoke run would mislead).
    metrics:
        Metric columns (default: every metric of the run, in the summary's order).
    digits:
        Decimals of the percentages.

    Published numbers are per-class means over exactly the run's categories when the paper lists
    them per class, else the paper's overall mean (only when the run covers every class).
    """
    from cfviz.evaluation.report import summarize

    frame = load_results(source, "source")
    if frame.empty:
        raise ResultsError("source holds no results; run `cfviz evaluate` first")
    datasets = sorted(set(frame["dataset"])) if "dataset" in frame.columns else []
    if len(datasets) > 1:
        raise ResultsError(f"source mixes data sets {datasets}; export one data set at a time "
                           "(frame[frame.dataset == 'mvtec'])")
    dataset = datasets[0] if datasets else None
    if published is None:
        published = dataset in PUBLISHED_DATASETS and frame.attrs.get("random_weights") is not True
    summary = summarize(frame)
    metrics = _metric_order(summary["metric"]) if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in set(summary["metric"])]
    if unknown:
        raise ResultsError(f"metrics {unknown} are not in the results; they hold {_metric_order(summary['metric'])}")
    categories = sorted(set(frame["category"]))
    pub, sources = _published_means(dataset, categories) if published and dataset else ({}, {})
    header = ("Method", "k", *(["Source"] if published else []), *(f"{METRIC_NAMES.get(m, m)} (%)" for m in metrics))
    rows: list[tuple[str, ...]] = []
    midrules: list[int] = []
    used_sources: list[str] = []
    previous = None
    for (method, shots), grp in summary.groupby(["method", "shots"], sort=True):
        if method != previous:  # one rule between methods, none between the k of one method
            midrules.append(len(rows))
            previous = method
        name = METHOD_NAMES.get(method, method)
        by_metric = {r.metric: r for r in grp.itertuples()}
        cells = [_cell(100 * by_metric[m].mean, 100 * by_metric[m].std, int(by_metric[m].n_seeds), digits)
                 if m in by_metric else "–" for m in metrics]
        rows.append((name, str(shots), *(["ours"] if published else []), *cells))
        keys = [(method, int(shots), m) for m in metrics]
        if any(k in pub for k in keys):
            rows.append((name, str(shots), "published", *(f"{pub[k]:.{digits}f}" if k in pub else "–" for k in keys)))
            used_sources += [sources[k] for k in keys if k in pub]
    n_seeds = int(summary["n_seeds"].max())
    notes = [f"Mean over categories: {', '.join(categories)}."
             + (f" Mean ± std over {n_seeds} seeds." if n_seeds > 1 else "")]
    if used_sources:
        notes.append("Published: " + "; ".join(dict.fromkeys(used_sources)) + ".")
    if frame.attrs.get("random_weights"):
        notes.append(RANDOM_WEIGHTS_TABLE_NOTE)
    return Table(header, tuple(rows), tuple(notes), tuple(midrules))


def matching_export(frame: Any, *, metrics: Sequence[str] | None = None, digits: int = 1,
                    random_weights: bool | None = None) -> Table:
    """The timestep or block matching table (paper Table 5) as a :class:`Table`.

    ``frame`` is :func:`cfviz.analysis.ablations.matching_table`'s result (one kind). One row per
    (query, reference) pair, matched pairs first (marked "yes"); values are the mean over categories
    (per seed, then mean ± std over seeds), in percent. The notes under the table (the LaTeX
    footnote) name what the pairs hold fixed (the block of timestep pairs, the timestep of block
    pairs: the frame's ``fixed`` column) and, for random-weight models (``random_weights``; default
    ``frame.attrs["random_weights"]``, set by ``matching_table``), say so as :func:`results_table`
    does. No published numbers exist for this table in :mod:`cfviz.analysis.published`
    (CLIPFusion's are not in the project's notes); none are shown.
    """
    need = ("category", "seed", "kind", "query", "reference", "matched", "metric", "value")
    missing = [c for c in need if c not in getattr(frame, "columns", ())]
    if missing:
        raise ResultsError(f"frame lacks the columns {missing}; pass the DataFrame matching_table() returns")
    if frame.empty:
        raise ResultsError("frame is empty: matching_table() found no pairs to score")
    kinds = sorted(set(frame["kind"]))
    if len(kinds) != 1:
        raise ResultsError(f"frame mixes kinds {kinds}; export the timestep and the block table separately")
    kind = kinds[0]
    metrics = _metric_order(frame["metric"]) if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in set(frame["metric"])]
    if unknown:
        raise ResultsError(f"metrics {unknown} are not in the frame; it holds {_metric_order(frame['metric'])}")
    keys = ["query", "reference", "matched", "metric"]
    per_seed = frame.groupby([*keys, "seed"], as_index=False)["value"].mean()
    agg = per_seed.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    what = "timestep" if kind == "timestep" else "block"
    header = (f"Query {what}", f"Reference {what}", "Matched", *(f"{METRIC_NAMES.get(m, m)} (%)" for m in metrics))
    pairs = agg[["query", "reference", "matched"]].drop_duplicates()
    pairs = pairs.assign(_m=~pairs["matched"]).sort_values(["_m", "query", "reference"], kind="stable")
    rows = []
    for p in pairs.itertuples():
        sub = agg[(agg["query"] == p.query) & (agg["reference"] == p.reference)]
        vals = {r.metric: r for r in sub.itertuples()}
        rows.append((str(p.query), str(p.reference), "yes" if p.matched else "",
                     *(_cell(100 * vals[m].mean, 100 * vals[m].std, int(vals[m].count), digits)
                       if m in vals else "–" for m in metrics)))
    n_matched = int(pairs["matched"].sum())
    categories = sorted(set(frame["category"]))
    shots = sorted(set(frame["shots"])) if "shots" in frame.columns else []
    fixed = sorted(set(frame["fixed"])) if "fixed" in frame.columns else []
    notes = [f"M_diff_V with query and reference {what}s"
             + (f", {' / '.join(fixed)} held fixed" if fixed else "")
             + f"; k = {', '.join(map(str, shots))}; mean over categories: {', '.join(categories)}."]
    if random_weights is None:
        random_weights = bool(frame.attrs.get("random_weights"))
    if random_weights:
        notes.append(RANDOM_WEIGHTS_TABLE_NOTE)
    if "bridged" in frame.columns and frame["bridged"].any():  # matching_table(width_bridge="average")
        bridged = frame[frame["bridged"].astype(bool)][["query", "reference"]].drop_duplicates()
        notes.append("Blocks of different widths, compared by averaging adjacent channels of the wider one (ours): "
                     + ", ".join(f"{q}/{r}" for q, r in zip(bridged["query"], bridged["reference"])) + ".")
    mid = (n_matched,) if 0 < n_matched < len(rows) else ()
    return Table(header, tuple(rows), tuple(notes), mid)
