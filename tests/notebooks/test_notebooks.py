"""The notebooks: committed without outputs, one parameters cell each, and all run in smoke mode.

The smoke runs share one run folder (the first notebook fills the capture store with the tiny
offline models, the others only read it) and one figure folder, and check that each notebook
wrote its figures and said that its numbers come from random-weight models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfviz import notebooks as nbs

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
MINE = ["01_quickstart", "02_attention_explorer", "03_timestep_block_matching", "04_alpha_sensitivity",
        "05_qualitative_figures", "06_failure_cases", "08_design_choices"]
#: figures each notebook must write (stems; PNG and PDF)
FIGURES = {
    "01_quickstart": ["quickstart_brick_002"],
    "02_attention_explorer": ["explorer_attention", "explorer_fusion", "explorer_timestep_block_grid",
                              "explorer_view"],
    "03_timestep_block_matching": ["matching_timestep_block"],
    "04_alpha_sensitivity": ["alpha_sensitivity_k0", "alpha_sensitivity_k1", "alpha_sensitivity_shots"],
    "05_qualitative_figures": ["qualitative_brick"],
    "06_failure_cases": ["failures_brick", "failures_by_defect_type", "disagreement_brick"],
    "08_design_choices": ["design_choices", "methods_shared_vs_favourite"],
}
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_committed_notebooks_have_no_outputs(path: Path) -> None:
    problems = nbs.output_problems(path)
    assert not problems, f"{path.name}: {problems}; clear outputs before committing (Edit > Clear All Outputs)"


def test_output_check_catches_outputs(tmp_path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "execution_count": 3,
                     "outputs": [{"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {},
                                  "execution_count": 3}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    assert nbs.output_problems(tmp_path / "x.ipynb") == ["cell 0 has outputs", "cell 0 has execution_count 3"]


@pytest.mark.parametrize("name", MINE)
def test_one_parameters_cell_with_smoke_default(name: str) -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    ns: dict = {}
    exec(tagged[0].source, ns)  # noqa: S102 - our own literal assignments
    assert ns["smoke"] is True and ns["device"] == "cpu"
    for key in ("clip_model", "diffusion_model", "data_root", "categories", "shots", "figures_dir"):
        assert key in ns, f"{name}: parameter {key!r} missing"


def test_inject_parameters_replaces_previous_injection() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    nbs.inject_parameters(nb, {"smoke": True, "categories": ["grass"]})
    nbs.inject_parameters(nb, {"n_images": 1})
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n_images = 1" in injected[0].source
    idx = nb.cells.index(injected[0])
    assert "parameters" in nb.cells[idx - 1].metadata["tags"]
    with pytest.raises(TypeError, match="not a Python literal"):
        nbs.inject_parameters(nb, {"x": object()})


def test_find_notebooks_names_unknown() -> None:
    assert [p.stem for p in nbs.find_notebooks(NOTEBOOKS, ["03"])] == ["03_timestep_block_matching"]
    with pytest.raises(ValueError, match="no notebook matches"):
        nbs.find_notebooks(NOTEBOOKS, ["99_nope"])


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("notebooks")
    return {"run_dir": base / "run", "figures_dir": base / "figures"}


def _texts(nb) -> str:  # type: ignore[no-untyped-def]
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.parametrize("name", MINE)
def test_notebook_runs_in_smoke_mode(name: str, smoke_dirs: dict[str, Path]) -> None:
    params = {"smoke": True, "run_dir": str(smoke_dirs["run_dir"]), "figures_dir": str(smoke_dirs["figures_dir"])}
    if name == "01_quickstart":  # through the command line, as `make figures` does
        from cfviz.cli import main

        assert main(["run-notebooks", name, "--out", str(smoke_dirs["figures_dir"]),
                     "--run-dir", str(smoke_dirs["run_dir"]), "--smoke"]) == 0
        text = ""
    else:
        nb = nbs.run_notebook(NOTEBOOKS / f"{name}.ipynb", params, timeout=300)
        text = _texts(nb)
        assert "random-weight" in text, f"{name}: smoke-mode output does not say the models are random"
    for stem in FIGURES[name]:
        for ext in ("png", "pdf"):
            f = smoke_dirs["figures_dir"] / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f"{name} did not write {f.name}"
    assert nbs.output_problems(NOTEBOOKS / f"{name}.ipynb") == [], "running a notebook wrote into the source"
