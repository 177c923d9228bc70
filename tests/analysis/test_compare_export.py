"""Two runs side by side (deltas) and paper-ready tables (LaTeX booktabs, Markdown) — issue 11, items 4, 5."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cfviz.analysis.compare import ResultsError, compare_results
from cfviz.analysis.export import matching_export, results_table
from cfviz.errors import CfvizError

METRICS = ("image_auroc", "pixel_auroc", "pixel_f1_max")


def _frame(values: dict[tuple[str, int, str, int], float], dataset: str = "mvtec") -> pd.DataFrame:
    """Tidy results: values[(method, shots, category, seed)] is the base; metrics get offsets."""
    rows = []
    for (method, shots, category, seed), v in values.items():
        for i, metric in enumerate(METRICS):
            rows.append({"dataset": dataset, "category": category, "method": method, "shots": shots,
                         "seed": seed, "metric": metric, "value": v - 0.1 * i})
    return pd.DataFrame(rows)


A = _frame({("clipfusion", 0, "bottle", 0): 0.90, ("clipfusion", 0, "cable", 0): 0.70,
            ("winclip", 0, "bottle", 0): 0.80, ("winclip", 0, "cable", 0): 0.60})
B = _frame({("clipfusion", 0, "bottle", 0): 0.95, ("clipfusion", 0, "cable", 0): 0.85,
            ("clipfusion", 0, "bottle", 1): 0.85, ("clipfusion", 0, "cable", 1): 0.75,
            ("winclip", 0, "bottle", 0): 0.80, ("winclip", 0, "cable", 0): 0.60,
            ("winclip", 0, "grid", 0): 0.10})  # a category A does not have


def _write_run(folder, frame, random_weights):
    folder.mkdir()
    frame.to_csv(folder / "results.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"random_weights": random_weights}))
    return folder


def test_deltas_are_b_minus_a_in_percent_on_common_categories(tmp_path):
    a = _write_run(tmp_path / "a", A, False)
    out = compare_results(a, B, labels=("before", "after"))
    assert out.attrs["categories"] == ["bottle", "cable"]  # grid (only in B) is left out of the means
    assert out.attrs["labels"] == ("before", "after")
    assert len(out) == 2 * len(METRICS)
    row = out[(out.method == "clipfusion") & (out.metric == "image_auroc")].iloc[0]
    assert row.a == pytest.approx(80.0)  # mean of 90, 70
    assert row.b == pytest.approx(85.0)  # seed 0: 90, seed 1: 80
    assert row.delta == pytest.approx(5.0)
    assert (row.n_seeds_a, row.n_seeds_b) == (1, 2)
    assert (out["delta"] - (out["b"] - out["a"])).abs().max() < 1e-9
    win = out[out.method == "winclip"]
    assert win["delta"].abs().max() < 1e-9  # grid's 10 % would have pulled B's WinCLIP mean down
    assert set(out["unit"]) == {"%"}
    assert out["metric"].tolist()[:3] == ["image_auroc", "pixel_auroc", "pixel_f1_max"]


def test_two_methods_of_one_run_and_per_category():
    out = compare_results(A[A.method == "winclip"], A[A.method == "clipfusion"], on=("shots",), by_category=True)
    assert set(out.columns) >= {"shots", "category", "metric", "a", "b", "delta"}
    assert "method" not in out.columns
    assert out["delta"].round(6).tolist() == [10.0] * len(out)


def test_compare_errors_name_the_problem(tmp_path):
    with pytest.raises(ResultsError, match="no results file"):
        compare_results(tmp_path, A)
    with pytest.raises(ResultsError, match="share no category"):
        compare_results(A, A.assign(category="zipper"))
    with pytest.raises(ResultsError, match="lacks the columns"):
        compare_results(A.drop(columns="seed"), A)
    assert issubclass(ResultsError, CfvizError)


def _rows(latex: str) -> list[str]:
    body = latex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    return [line for line in body.splitlines() if line.endswith(r"\\")]


def test_results_latex_booktabs_and_published_beside_ours(tmp_path):
    t = results_table(_write_run(tmp_path / "run", A, False))
    tex = t.latex(caption="Zero-shot results on MVTec-AD", label="tab:main")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}", r"\label{tab:main}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    rows = _rows(tex)
    # CLIPFusion (no published numbers) + WinCLIP ours + WinCLIP published
    assert len(rows) == 3
    assert rows[1].startswith("WinCLIP & 0 & ours & 70.0 & 60.0 & 50.0")
    # WinCLIP's per-class table, averaged over the run's categories bottle (99.2/89.5/58.1) and cable (86.5/77.0/19.7)
    assert rows[2].startswith("WinCLIP & 0 & published & 92.8 & 83.2 & 38.9")
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0]
    assert r"I-AUROC (\%)" in header and "%" not in header.replace(r"\%", "")
    md = t.markdown()
    assert len([line for line in md.splitlines() if line.startswith("|")]) == 2 + 3  # header, rule, 3 rows
    assert "| WinCLIP | 0 | published | 92.8 | 83.2 | 38.9 |" in md


def test_results_table_seeds_escapes_and_no_published_for_random_weights(tmp_path):
    frame = B[B.category != "grid"].assign(method=B["method"].where(B.method != "winclip", "my_method"))
    t = results_table(_write_run(tmp_path / "run", frame, True))
    assert "published" not in t.markdown()  # a random-weight run gets no paper numbers beside it
    assert "random-weight" in t.markdown()
    tex = t.latex()
    assert r"my\_method" in tex and "my_method" not in tex
    assert r"85.0 $\pm$ 7.1" in tex  # CLIPFusion image AUROC: seeds 90 and 80, sample std 7.07
    assert r"\begin{table}" not in tex  # a bare tabular unless a caption or label is asked for
    assert len(_rows(tex)) == 2


def test_matching_table_export(tmp_path):
    rows = []
    for q in (100, 400):
        for r in (100, 400):
            for cat, base in (("bottle", 0.9), ("cable", 0.7)):
                for metric in ("image_auroc", "pixel_auroc"):
                    rows.append({"category": cat, "shots": 1, "seed": 0, "kind": "timestep", "query": q,
                                 "reference": r, "matched": q == r, "metric": metric,
                                 "value": base - (0.0 if q == r else 0.2)})
    t = matching_export(pd.DataFrame(rows))
    tex = t.latex()
    lines = _rows(tex)
    assert len(lines) == 4
    assert lines[0] == r"100 & 100 & yes & 80.0 & 80.0 \\"
    assert lines[2] == r"100 & 400 &  & 60.0 & 60.0 \\"
    assert tex.count(r"\midrule") == 2  # header rule, then matched | unmatched
    assert "M\\_diff\\_V" in tex
    md = t.markdown()
    assert "| Query timestep | Reference timestep | Matched | I-AUROC (%) | P-AUROC (%) |" in md
    path = t.save(tmp_path / "matching.md")
    assert path.read_text() == md
    with pytest.raises(ResultsError, match="mixes kinds"):
        matching_export(pd.DataFrame(rows).assign(kind=["timestep", "block"] * (len(rows) // 2)))
    with pytest.raises(ResultsError, match=r"\.tex"):
        t.save(tmp_path / "table.txt")
