"""Notebook 09: MapDiff's language map from two denoiser families on the same image, in smoke mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfviz import notebooks as nbs

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "09_families.ipynb"


def test_parameters_cell_defaults_to_smoke_with_two_families() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    ns: dict = {}
    exec(tagged[0].source, ns)  # noqa: S102 - our own literal assignments
    assert ns["smoke"] is True and ns["device"] == "cpu"
    assert ns["diffusion_models"] == ["tiny", "tiny-sd3"]
    for key in ("clip_model", "data_root", "categories", "run_dir", "figures_dir"):
        assert key in ns
    # every code cell calls cfviz: no loops, no arithmetic on maps
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not any(line.lstrip().startswith(("for ", "def ", "while ")) for src in code for line in src.splitlines())


def test_family_runs_refuses_what_it_cannot_compare() -> None:
    from cfviz.analysis.family_maps import family_runs

    with pytest.raises(ValueError, match="at least two"):
        family_runs(["tiny"], progress=False)
    with pytest.raises(ValueError, match="tiny offline pipelines"):
        family_runs(["tiny", "stabilityai/stable-diffusion-3-medium-diffusers"], progress=False)


def test_notebook_runs_in_smoke_mode(tmp_path: Path) -> None:
    params = {"smoke": True, "run_dir": str(tmp_path / "run"), "figures_dir": str(tmp_path / "figures")}
    nb = nbs.run_notebook(NOTEBOOK, params, timeout=600)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells for o in cell.get("outputs", []))
    assert "random-weight" in text and "not which family localises anomalies better" in text
    assert "SD 1.x/2.x UNet (tiny)" in text and "SD3 MMDiT (tiny-sd3)" in text  # the table: one row per family
    for ext in ("png", "pdf"):
        f = tmp_path / "figures" / f"families_language_map.{ext}"
        assert f.is_file() and f.stat().st_size > 1000
    stores = sorted(p.name for p in (tmp_path / "run" / "families").iterdir())
    assert stores == ["smoke-tiny", "smoke-tiny-sd3"]
    from cfviz.capture.store import CaptureStore

    sd3 = CaptureStore(tmp_path / "run" / "families" / "smoke-tiny-sd3" / "store")
    assert sd3.config["models"]["family"] == "sd3"
    assert nbs.output_problems(NOTEBOOK) == [], "running the notebook wrote into the source"
