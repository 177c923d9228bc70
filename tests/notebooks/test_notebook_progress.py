"""Progress while notebooks run: the store build says what it does, `cfviz run-notebooks` streams a line
per notebook, per finished cell and per printed line (issue 11: ~50 s of silence in the first cell)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cfviz import notebooks as nbs


def test_setup_says_what_it_builds_and_when_it_is_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import cfviz.experiments.runner as runner

    seen: dict[str, object] = {}

    def evaluate(spec, out, *, store_dir, progress):  # type: ignore[no-untyped-def]
        seen["progress"] = progress
        if progress:
            print("[extraction bar]")
        return SimpleNamespace(store=[1, 2, 3], summary=None)

    monkeypatch.setattr(runner, "evaluate", evaluate)
    monkeypatch.setattr(runner, "open_run_dataset", lambda spec: SimpleNamespace(records=[]))
    monkeypatch.setattr(runner, "test_categories", lambda ds: ["brick"])
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    out = capsys.readouterr().out.splitlines()
    assert seen["progress"] is True  # the bars are on by default
    assert out[0].startswith("capture store ") and str(tmp_path / "run") in out[0] and "brick" in out[0]
    assert out[1] == "[extraction bar]"
    assert out[2].startswith("ready in ") and "3 images" in out[2]
    nbs.setup(smoke=True, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", progress=False)
    assert capsys.readouterr().out == "" and seen["progress"] is False


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
