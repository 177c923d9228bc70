"""Progress while notebooks run: the store build says what it does, `cfviz run-notebooks` streams a line
per notebook, per finished cell and per printed line (issue 11: ~50 s of silence in the first cell)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import numpy as np

from cfviz import notebooks as nbs

ROOT = Path(__file__).resolve().parents[2]


def test_setup_says_what_it_builds_and_when_it_is_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import cfviz.evaluation.runner as runner

    seen: dict[str, object] = {}

    def evaluate(spec, out, *, store_dir, progress):  # type: ignore[no-untyped-def]
        seen["progress"] = progress
        if progress:
            print("[extraction bar]")
        return SimpleNamespace(store=[1, 2, 3], summary=None)

    monkeypatch.setattr(runner, "evaluate", evaluate)
    monkeypatch.setattr("cfviz.evaluation.plan.plan_run", _plan)
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", shots=[0])
    out = capsys.readouterr().out.splitlines()
    assert seen["progress"] is True  # the bars are on by default
    assert out[0].startswith("capture store ") and str(tmp_path / "run") in out[0] and "brick" in out[0]
    assert "running the models for the 2 of 2 images it lacks" in out[0]  # no store yet
    assert out[1] == "[extraction bar]"
    assert out[2].startswith("ready in ") and "3 images" in out[2]
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", progress=False, shots=[0])
    assert capsys.readouterr().out == "" and seen["progress"] is False


def _plan(spec, out, store_dir) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    recs = [SimpleNamespace(image_id=f"brick/test/{t}/000", split="test", category="brick") for t in ("good", "hole")]
    return SimpleNamespace(records=recs, categories=("brick",), store_dir=Path(store_dir),
                           dataset=SimpleNamespace(records=recs, categories=["brick"]))


def test_setup_says_no_model_runs_when_the_store_holds_every_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 21: the first line said "running the models ..." although the store was full."""
    import cfviz.evaluation.runner as runner
    from cfviz.capture.store import CaptureStore, ClipScores

    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: SimpleNamespace(store=[1, 2], summary=None))
    monkeypatch.setattr("cfviz.evaluation.plan.plan_run", _plan)
    store = CaptureStore(tmp_path / "run" / "smoke" / "store", config={"model": "x"})
    store.add("brick/test/good/000", clip=ClipScores(image=0.1, patch=np.zeros((2, 2), np.float32)))
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", shots=[0])
    assert "running the models for the 1 of 2 images it lacks" in capsys.readouterr().out.splitlines()[0]
    store.add("brick/test/hole/000", clip=ClipScores(image=0.9, patch=np.zeros((2, 2), np.float32)))
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", shots=[0])
    first = capsys.readouterr().out.splitlines()[0]
    assert "running the models" not in first and "all 2 images stored, no model runs; scoring brick" in first


def test_an_executed_notebook_keeps_the_final_state_of_a_bar(tmp_path: Path) -> None:
    """Issue 21: tqdm's widget left "models: 0%" in executed notebooks; the saved line is the last state."""
    pytest.importorskip("ipykernel")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# Parameters\nx = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                                          "from cfviz.utils.progress import progress_bar\n"
                                          "bar = progress_bar(total=3, desc='models', unit='img')\n"
                                          "for _ in range(3):\n    bar.update(1)\nbar.close()")]
    nbformat.write(nb, str(tmp_path / "01_bar.ipynb"))
    done = nbs.run_notebook(tmp_path / "01_bar.ipynb", timeout=120)
    texts = [o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in done.cells[-1].outputs]
    assert len(texts) == 1 and "3/3" in texts[0] and "100%" in texts[0], texts
    assert " 0%" not in texts[0]


def test_run_notebooks_streams_cells_and_printed_lines(tmp_path: Path) -> None:
    pytest.importorskip("ipykernel")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# Parameters\nx = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("print('building the store ...')\nprint('ready', x)")]
    nbformat.write(nb, str(tmp_path / "01_tiny.ipynb"))
    lines: list[str] = []
    times = nbs.run_notebooks(tmp_path, parameters={"x": 5}, log=lines.append, timeout=120)
    assert list(times) == ["01_tiny"]
    assert lines[0] == "running 01_tiny.ipynb ..."
    body = [ln.strip() for ln in lines[1:]]
    assert "| building the store ..." in body and "| ready 5" in body
    done = [ln for ln in body if ln.startswith("cell ")]
    assert [d.split(" done")[0] for d in done] == ["cell 1/3", "cell 2/3", "cell 3/3"]  # injected cell counts
    assert body.index("| ready 5") < body.index(done[-1])  # printed while the cell ran, before it finished
    assert done[-1].endswith("print('building the store ...')")
    assert lines[-1].startswith("  done in ")
