"""Every table people read is labelled with its unit (issue 21): ``summary.md``'s metric columns say
"(%)", under the same names as the notebooks' :func:`cfviz.notebooks.summary_table`."""

from __future__ import annotations

import pandas as pd

from cfviz.experiments import RunSpec
from cfviz.evaluation.runner import summarize, summary_markdown
from cfviz.notebooks import summary_table


def _frame() -> pd.DataFrame:
    rows = [{"dataset": "textures", "category": c, "method": "clipfusion", "shots": k, "seed": s, "metric": m,
             "value": 0.5 + 0.1 * s}
            for c in ("brick", "grass") for k in (0, 1) for s in ((0,) if k == 0 else (0, 1))
            for m in ("image_auroc", "pixel_auroc", "pixel_aupro")]
    return pd.DataFrame(rows)


def _tables(md: str) -> list[list[str]]:
    """The header row of each Markdown table."""
    return [[c.strip() for c in line.strip("|").split("|")] for line, nxt in zip(md.splitlines(), md.splitlines()[1:])
            if line.startswith("|") and nxt.startswith("|---")]


def test_every_summary_md_value_column_says_percent() -> None:
    frame = _frame()
    summary = summarize(frame)
    md = summary_markdown(frame, summary, RunSpec(dataset="textures", seeds=(0, 1)), random_weights=True)
    headers = _tables(md)
    assert len(headers) == 2  # the mean table and the per-category table
    keys = {"method", "shots", "category"}
    for header in headers:
        values = [h for h in header if h not in keys]
        assert values and all(h.endswith(" (%)") for h in values), header
    # the same names as the notebooks' table: one label per metric everywhere
    named = [c for c in summary_table(summary).columns if c.endswith(" (%)") and " std " not in c]
    assert [h for h in headers[0] if h not in keys] == named
    assert "| clipfusion | 1 | 55.0 ± 7.1 |" in md  # values stay in percent (mean ± std over seeds)
