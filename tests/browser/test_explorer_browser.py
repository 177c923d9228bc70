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
        # a 1280x800 laptop: controls, the fused panels and the metrics are seen together (JupyterLab's own
        # bars take ~100 px of the 800)
        box = page.evaluate("() => { const r = document.querySelector('.cfviz-explorer').getBoundingClientRect();"
                            " const w = Math.max(...[...document.querySelectorAll('.cfviz-explorer .widget-hbox')]"
                            ".map(e => e.scrollWidth)); return [w, r.height]; }")
        assert box[0] <= 1180 and box[1] <= 700, f"explorer {box[0]:.0f} x {box[1]:.0f} px"

        heat = lablib.HEAT
        before = lablib.readout(page, "timestep")
        lablib.act(page, "slider", "timestep", "ArrowRight", ["attention"])
        assert lablib.readout(page, "timestep") != before, "the timestep slider did not move"
        layers = lablib.options(page, "layer")
        assert layers[0] == "mean over layers" and "up1.attn0" in layers  # short names
        lablib.act(page, "select", "layer", "up1.attn0", ["attention"])
        tokens = lablib.options(page, "token")
        # smoke mode stores every prompt token (the words tab), the state words among them
        assert set(lablib.STATE.split()) <= set(tokens) and len(tokens) > 2, tokens
        lablib.act(page, "select", "token", tokens[0] if lablib.selected(page, "token") != tokens[0]
                   else tokens[1], ["attention"])
        scales = lablib.options(page, "CLIP window")
        assert len(scales) >= 2
        other = next(s for s in scales if s != lablib.selected(page, "CLIP window"))
        lablib.act(page, "select", "CLIP window", other, ["clip"])
        lablib.act(page, "slider", "opacity", "ArrowLeft", heat)
        _two_weights_and_the_threshold(page, lab)

        boxes = lablib.panel_boxes(page)
        lablib.act(page, "checkbox", "ground truth", None, ["gt", *heat])
        page.locator(".cfviz-explorer").first.screenshot(path=str(shots / "explorer_no_ground_truth.png"))
        assert lablib.panel_boxes(page) == boxes, "turning off the ground truth moved the panels"
        lablib.act(page, "checkbox", "ground truth", None, ["gt", *heat])

        _empty_filter_says_none(page)
        _zero_shot_from_the_k_menu(page, lab)
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
        # the words tab: one panel per stored prompt word (smoke mode stores every token), one colour scale
        page.locator(".cfviz-explorer .lm-TabBar-tab", has_text="words").first.click()
        n = len(lablib.options(page, "token"))
        page.wait_for_function("(n) => [...Array(n).keys()].every(k => { const e = document.querySelector("
                               "'.cfviz-explorer .cfviz-word-view-' + k); return e && e.naturalWidth > 0; })",
                               arg=n, timeout=30_000)
        page.locator(".cfviz-explorer").first.screenshot(path=str(shots / "explorer_words.png"))


def _results(lab, shots: int | None = None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The run's results.csv rows of a setting (clipfusion, k = ``shots`` (default the largest), seed 0)."""
    import pandas as pd

    (csv,) = Path(lab["work"], "run").glob("*/results.csv")
    table = pd.read_csv(csv)
    k = table.shots.max() if shots is None else shots
    rows = table[(table.method == "clipfusion") & (table.shots == k) & (table.seed == 0)]
    return dict(zip(rows.metric, rows.value))


def _zero_shot_from_the_k_menu(page, lab) -> None:  # type: ignore[no-untyped-def]
    """k = 0 in the menu: the visual maps go, and the category image AUROC is results.csv's zero-shot row."""
    assert lablib.options(page, "k") == ["0", "1"]
    lablib.act(page, "select", "k", "0", ["fused", "clip_visual", "diff_visual"], timeout_ms=60_000)
    lablib.wait_text(page, ".cfviz-on-screen", "k = 0")
    run = _results(lab, shots=0)
    assert lablib.metric(page, "category_image_auroc")[0] == pytest.approx(run["image_auroc"], abs=1e-12)
    lablib.act(page, "select", "k", "1", ["fused", "clip_visual", "diff_visual"], timeout_ms=60_000)
    lablib.wait_text(page, ".cfviz-on-screen", "k = 1")
    assert lablib.metric(page, "category_image_auroc")[0] == pytest.approx(_results(lab)["image_auroc"], abs=1e-12)


def _two_weights_and_the_threshold(page, lab) -> None:  # type: ignore[no-untyped-def]
    """alpha_seg moves the fused map and the predicted mask, alpha_cls only the image numbers; at the
    run's weights the category image AUROC on screen is results.csv's."""
    run = _results(lab)
    assert lablib.readout(page, "alpha_seg") == "0.25" and lablib.readout(page, "alpha_cls") == "0.75"
    auroc, text = lablib.metric(page, "category_image_auroc")
    assert auroc == pytest.approx(run["image_auroc"], abs=1e-12) and text == f"{100 * run['image_auroc']:.1f} %"
    score = lablib.metric(page, "score")
    lablib.act(page, "slider", "alpha_seg", "ArrowRight", ["fused", "prediction"])
    assert lablib.readout(page, "alpha_seg") == "0.30"
    lablib.wait_text(page, ".cfviz-metrics", "alpha_seg = 0.30")
    assert lablib.metric(page, "category_image_auroc")[0] == auroc and lablib.metric(page, "score") == score
    title = page.evaluate("() => document.querySelector('.cfviz-explorer .cfviz-prediction-view')"
                          ".parentElement.innerText")
    assert "alpha_seg = 0.30" in title, title
    lablib.act(page, "slider", "alpha_cls", "ArrowLeft", ["metrics"])
    assert lablib.readout(page, "alpha_cls") == "0.70"
    lablib.wait_text(page, ".cfviz-metrics", "alpha_cls = 0.70")
    line = page.evaluate("() => document.querySelector('.cfviz-explorer .cfviz-metrics').innerText")
    assert "alpha_cls = 0.70" in line and f"{100 * run['image_auroc']:.1f} %" in line  # the run's number, named
    lablib.act(page, "slider", "alpha_cls", "ArrowRight", ["metrics"])
    lablib.wait_text(page, ".cfviz-metrics", "alpha_cls = 0.75")
    lablib.act(page, "slider", "alpha_seg", "ArrowLeft", ["fused", "prediction"])
    lablib.wait_text(page, ".cfviz-metrics", "alpha_seg = 0.25")
    assert lablib.metric(page, "category_image_auroc")[0] == pytest.approx(run["image_auroc"], abs=1e-12)
    lablib.act(page, "slider", "threshold", "ArrowRight", ["prediction"])
    lablib.act(page, "slider", "threshold", "ArrowLeft", ["prediction"])


def _empty_filter_says_none(page) -> None:  # type: ignore[no-untyped-def]
    """A subset without images ("false negatives" in this run) says so and shows nothing else."""
    page.evaluate("""() => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-dropdown')]
        .find(w => w.textContent.includes('show')); const s = w.querySelector('select');
        s.selectedIndex = [...s.options].findIndex(o => o.textContent.replace(/\u00a0/g, ' ') === 'false negatives');
        s.dispatchEvent(new Event('change', {bubbles: true})); }""")
    page.wait_for_selector(".cfviz-explorer .cfviz-none", timeout=20_000)
    assert "none in this run" in page.locator(".cfviz-explorer .cfviz-none").inner_text()
    assert lablib.options(page, "image") == ["none in this run"]
    assert not any(lablib.visible(page, sel) for sel in lablib.PANELS.values()), "panels still on screen"
    assert not lablib.visible(page, ".cfviz-metrics")
    page.evaluate("""() => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-dropdown')]
        .find(w => w.textContent.includes('show')); const s = w.querySelector('select');
        s.selectedIndex = 0; s.dispatchEvent(new Event('change', {bubbles: true})); }""")
    page.wait_for_function("() => !document.querySelector('.cfviz-explorer .cfviz-none')", timeout=20_000)
    assert lablib.visible(page, lablib.PANELS["fused"])
