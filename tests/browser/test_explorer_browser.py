"""The attention explorer in a real browser: JupyterLab on localhost, headless Debian chromium.

Starts JupyterLab on 127.0.0.1 (a free port, a known token), opens a copy of
``02_attention_explorer`` whose parameters point at a smoke-mode store built here (two prompt
words, so the token menu can change), runs every cell, then drives EVERY control in the page
(timestep, layer, token, CLIP window, opacity, ground truth, alpha, image, the failure browser's
show/sort menus) and checks that exactly the panels it concerns show a new image, that toggling
the ground truth moves nothing, and that no control label is cut short. Screenshots go to
``CFVIZ_SCREENSHOT_DIR`` (or the test's tmp folder). Nothing is downloaded: chromium comes from
Debian (``make browser``); without it the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402  (tests/browser/lab.py, shared with benchmarks/bench_explorer_browser.py)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(lablib.CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run `make browser` to install it")
    pytest.importorskip("playwright.sync_api", reason="playwright (a dev dependency) is not installed")
    return lablib.CHROMIUM if Path(lablib.CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium: str):
    """A notebook folder with the parametrised explorer notebook, served by JupyterLab."""
    work = tmp_path_factory.mktemp("lab")
    lablib.explorer_notebook(work)
    with lablib.serve(work) as served:
        yield served


def test_every_control_changes_the_view(lab, chromium, tmp_path) -> None:
    shots = Path(os.environ.get("CFVIZ_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with lablib.browser(tmp_path / "chromium-profile", chromium) as page:
        lablib.open_explorer(page, lab, shots=shots)
        page.locator(".cfviz-explorer").first.screenshot(path=str(shots / "explorer_before.png"))
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert not any("Traceback" in t for t in errors.all_inner_texts()), "a notebook cell failed"
        assert lablib.truncated_labels(page) == []

        heat = lablib.HEAT
        before = lablib.readout(page, "timestep")
        lablib.act(page, "slider", "timestep", "ArrowRight", ["attention"])
        assert lablib.readout(page, "timestep") != before, "the timestep slider did not move"
        layers = lablib.options(page, "layer")
        assert layers[0] == "mean over layers" and "up1.attn0" in layers  # short names
        lablib.act(page, "select", "layer", "up1.attn0", ["attention"])
        tokens = lablib.options(page, "token")
        assert tokens == lablib.STATE.split(), tokens
        lablib.act(page, "select", "token", tokens[0] if lablib.selected(page, "token") != tokens[0]
                   else tokens[1], ["attention"])
        scales = lablib.options(page, "CLIP window")
        assert len(scales) >= 2
        other = next(s for s in scales if s != lablib.selected(page, "CLIP window"))
        lablib.act(page, "select", "CLIP window", other, ["clip"])
        lablib.act(page, "slider", "opacity", "ArrowLeft", heat)
        lablib.act(page, "slider", "alpha", "ArrowRight", ["fused"])

        boxes = lablib.panel_boxes(page)
        lablib.act(page, "checkbox", "ground truth", None, ["gt", *heat])
        page.locator(".cfviz-explorer").first.screenshot(path=str(shots / "explorer_no_ground_truth.png"))
        assert lablib.panel_boxes(page) == boxes, "turning off the ground truth moved the panels"
        lablib.act(page, "checkbox", "ground truth", None, ["gt", *heat])

        images = lablib.options(page, "image")
        other = next(o for o in images if o != lablib.selected(page, "image"))
        lablib.act(page, "select", "image", other, ["image", *heat])
        # the failure browser: a filter that hides the current image moves to one it lists
        current = lablib.selected(page, "image")
        show = "normal" if "good" not in current else "anomalous"
        lablib.act(page, "select", "show", show, ["image"])
        assert all(("good" in o) == (show == "normal") for o in lablib.options(page, "image"))
        order = lablib.options(page, "image")
        page.evaluate("""() => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-dropdown')]
            .find(w => w.textContent.includes('sort')); const s = w.querySelector('select');
            s.selectedIndex = [...s.options].findIndex(o => o.textContent.replace(/\u00a0/g, ' ') === 'score, low to high');
            s.dispatchEvent(new Event('change', {bubbles: true})); }""")
        page.wait_for_function("(old) => { const w = [...document.querySelectorAll('.cfviz-explorer "
                               ".widget-dropdown')].find(w => w.textContent.includes('image'));"
                               " return [...w.querySelector('select').options].map(o => o.textContent).join('|')"
                               " !== old.join('|'); }", arg=order, timeout=20_000)
        page.locator(".cfviz-explorer").first.screenshot(path=str(shots / "explorer_after.png"))
