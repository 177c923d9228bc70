"""JupyterLab + headless Debian chromium for the explorer's browser test and its latency benchmark.

:func:`explorer_notebook` writes a copy of ``02_attention_explorer`` pointed at a smoke-mode store
built beforehand (two prompt words, so the token menu has two entries); :func:`serve` starts
JupyterLab on 127.0.0.1; :func:`open_explorer` runs every cell in chromium and waits for the
explorer; :func:`act` changes one control *inside the page* and returns how long, from the input
event to the new images decoded and in the next frame, the view took (``performance.now()`` in the page).
Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "cfviz-test-token"
#: The prompt's state words of the browser store (smoke mode stores every prompt token besides).
STATE = "crack damage"
#: Panels of the explorer (CSS classes of their <img> elements).
PANELS = {"attention": ".cfviz-attention-view", "clip": ".cfviz-clip-view", "image": ".cfviz-image-view",
          "gt": ".cfviz-gt-view", "fused": ".cfviz-fusion-view", "prediction": ".cfviz-prediction-view",
          "clip_language": ".cfviz-branch-view-clip-language", "clip_visual": ".cfviz-branch-view-clip-visual",
          "diff_language": ".cfviz-branch-view-diff-language", "diff_visual": ".cfviz-branch-view-diff-visual"}
HEAT = ["attention", "clip", "fused", "clip_language", "clip_visual", "diff_language", "diff_visual"]
#: Text parts of the explorer that a control may change without changing an image.
TEXTS = {"metrics": ".cfviz-metrics", "histograms": ".cfviz-histograms"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def explorer_notebook(work: Path) -> Path:
    """The store (built here, so that the notebook only reads it) and the parametrised notebook copy."""
    import nbformat

    from cfviz.notebooks import inject_parameters, setup

    run_dir, figures = work / "run", work / "figures"
    setup(smoke=True, run_dir=run_dir, figures_dir=figures, state=STATE, tokens="all")  # notebook 02's smoke store
    nb = nbformat.read(ROOT / "notebooks" / "02_attention_explorer.ipynb", as_version=4)
    inject_parameters(nb, {"run_dir": str(run_dir), "figures_dir": str(figures), "state": STATE})
    path = work / "explorer.ipynb"
    nbformat.write(nb, str(path))
    return path


def _lab_settings(folder: Path) -> Path:
    """User settings: render every cell (no windowing, so the explorer stays in the DOM), no news pop-up."""
    for rel, value in {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                       "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"}
                       }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(value))
    return folder


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve(work: Path) -> Iterator[dict[str, Any]]:
    """JupyterLab on 127.0.0.1 (a free port, a known token) serving ``work``; stopped on exit."""
    port = free_port()
    log = work / "jupyterlab.log"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / "jcfg"), "JUPYTER_DATA_DIR": str(work / "jdata"),
           "JUPYTER_RUNTIME_DIR": str(work / "jrt"), "IPYTHONDIR": str(work / "ipy"), "MPLBACKEND": "Agg",
           "JUPYTER_PLATFORM_DIRS": "1", "JUPYTERLAB_SETTINGS_DIR": str(_lab_settings(work / "lab-settings"))}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={TOKEN}", "--ServerApp.password=", f"--ServerApp.root_dir={work}",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate", "--ServerApp.open_browser=False",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", proc, log)
        yield {"url": f"http://127.0.0.1:{port}", "work": work, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser(profile: Path, chromium: str = CHROMIUM, width: int = 1500, height: int = 1100,
            scale: float = 1.0) -> Iterator[Any]:
    """A Playwright page in headless chromium (a fresh profile folder; ``scale`` = device pixel ratio)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height}, device_scale_factor=scale)
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def open_explorer(page: Any, lab: dict[str, Any], notebook: str = "explorer.ipynb", shots: Path | None = None) -> None:
    """Open the notebook, run all cells, wait until every explorer panel shows an image."""
    page.goto(f"{lab['url']}/lab/tree/{notebook}?token={TOKEN}", timeout=120_000)
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    # the kernel must be connected before "Run All Cells" does anything
    page.wait_for_function("() => /\\|\\s*Idle/.test(document.body.innerText)", timeout=120_000)
    for _attempt in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:  # a prompt turns into [*] or [n] once the cells are queued
            page.wait_for_function("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))", timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - retry the menu once more
            continue
    try:
        page.wait_for_selector(".cfviz-explorer", state="attached", timeout=240_000)
        page.locator(".cfviz-explorer").first.scroll_into_view_if_needed()
        page.wait_for_function(
            "(sels) => sels.every(s => { const e = document.querySelector('.cfviz-explorer ' + s);"
            " return e && e.naturalWidth > 0; })", arg=list(PANELS.values()), timeout=120_000)
        # the last cells (static copies) have run: the kernel is idle again
        page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')]"
                               ".some(e => /\\[\\*\\]/.test(e.innerText))", timeout=240_000)
    except Exception:
        if shots is not None:
            page.screenshot(path=str(shots / "explorer_failed.png"), full_page=True)
        raise AssertionError(f"the explorer did not appear; JupyterLab log {lab['log']}") from None
    time.sleep(1.0)


#: In-page: change one control and time input -> all ``targets`` images replaced, decoded and painted.
_ACT_JS = r"""
async ([kind, label, arg, targets, timeout]) => {
  const root = document.querySelector('.cfviz-explorer');
  const find = (cls) => [...root.querySelectorAll(cls)].find(
      w => [...w.querySelectorAll('.widget-label, label')].some(l => l.textContent.trim() === label));
  const imgs = targets.map(s => root.querySelector(s));
  if (imgs.some(i => !i)) throw new Error('missing panel among ' + targets);
  // an image changes its src; a text part (metrics, histograms) its HTML
  const now = (el) => el.tagName === 'IMG' ? el.getAttribute('src') : el.innerHTML;
  const old = imgs.map(now);
  const changed = new Set();
  const done = new Promise((resolve, reject) => {
    const obs = new MutationObserver(() => {
      imgs.forEach((im, k) => { if (now(im) !== old[k]) changed.add(k); });
      if (changed.size === imgs.length) { obs.disconnect(); resolve(performance.now()); }
    });
    imgs.forEach(im => obs.observe(im, im.tagName === 'IMG' ? {attributes: true, attributeFilter: ['src']}
                                       : {childList: true, subtree: true, characterData: true}));
    setTimeout(() => { obs.disconnect(); reject(new Error(`${label}: after ${timeout} ms only ` +
        `${[...changed].map(k => targets[k])} of ${targets} changed`)); }, timeout);
  });
  let t0;
  if (kind === 'slider') {
    const h = find('.widget-slider').querySelector('.noUi-handle');
    t0 = performance.now();
    h.dispatchEvent(new KeyboardEvent('keydown', {key: arg, bubbles: true, cancelable: true}));
  } else if (kind === 'select') {
    const sel = find('.widget-dropdown').querySelector('select');
    const idx = [...sel.options].findIndex(o => o.textContent.replace(/\u00a0/g, ' ') === arg);
    if (idx < 0) throw new Error(`${label}: no option ${arg}`);
    t0 = performance.now();
    sel.selectedIndex = idx;
    sel.dispatchEvent(new Event('change', {bubbles: true}));
  } else if (kind === 'checkbox') {
    const box = find('.widget-checkbox').querySelector('input');
    t0 = performance.now();
    box.click();
  } else { throw new Error('unknown control kind ' + kind); }
  const t1 = await done;
  await Promise.all(imgs.map(i => i.tagName === 'IMG' ? i.decode().catch(() => null) : null));
  await new Promise(r => requestAnimationFrame(r));  // the frame that paints them
  return {src_ms: t1 - t0, shown_ms: performance.now() - t0};
}
"""


def act(page: Any, kind: str, label: str, arg: Any, targets: list[str], timeout_ms: int = 20_000) -> dict[str, float]:
    """Change the control labelled ``label`` (``kind``: slider key press, select option text, checkbox
    click) and wait until every panel in ``targets`` (names of :data:`PANELS` or :data:`TEXTS`) shows a new
    image (or text)."""
    return page.evaluate(_ACT_JS, [kind, label, arg, [{**PANELS, **TEXTS}[t] for t in targets], timeout_ms])


def metric(page: Any, key: str) -> tuple[float, str]:
    """The value and the text of the number ``key`` in the explorer's metrics line."""
    return tuple(page.evaluate("""(key) => { const e = document.querySelector(
        `.cfviz-explorer .cfviz-metric[data-metric="${key}"]`); return [parseFloat(e.dataset.value), e.textContent]; }""",
        key))


def visible(page: Any, selector: str) -> bool:
    """Whether the first element matching ``selector`` inside the explorer is rendered (not display: none)."""
    return page.evaluate("""(sel) => { const e = document.querySelector('.cfviz-explorer ' + sel);
        return !!e && e.getClientRects().length > 0; }""", selector)


def explorer_height(page: Any) -> float:
    """The explorer's rendered height in CSS pixels."""
    return page.evaluate("() => document.querySelector('.cfviz-explorer').getBoundingClientRect().height")


def options(page: Any, label: str) -> list[str]:
    """The option texts of the dropdown labelled ``label``."""
    return page.evaluate("""(label) => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-dropdown')]
        .find(w => [...w.querySelectorAll('.widget-label, label')].some(l => l.textContent.trim() === label));
        return [...w.querySelector('select').options].map(o => o.textContent.replace(/\u00a0/g, ' ')); }""", label)


def selected(page: Any, label: str) -> str:
    return page.evaluate("""(label) => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-dropdown')]
        .find(w => [...w.querySelectorAll('.widget-label, label')].some(l => l.textContent.trim() === label));
        const s = w.querySelector('select'); return s.options[s.selectedIndex].textContent.replace(/\u00a0/g, ' '); }""", label)


def readout(page: Any, label: str) -> str:
    """The value shown next to the slider labelled ``label``."""
    return page.evaluate("""(label) => { const w = [...document.querySelectorAll('.cfviz-explorer .widget-slider')]
        .find(w => [...w.querySelectorAll('.widget-label, label')].some(l => l.textContent.trim() === label));
        const r = w.querySelector('.widget-readout'); return r.value !== undefined && r.tagName === 'INPUT'
        ? r.value : r.textContent; }""", label)


def panel_boxes(page: Any) -> dict[str, list[float]]:
    """Page positions ``[x, y, w, h]`` of every panel (the layout must not move when a control changes)."""
    return page.evaluate("""(panels) => Object.fromEntries(Object.entries(panels).map(([k, s]) => {
        const r = document.querySelector('.cfviz-explorer ' + s).getBoundingClientRect();
        return [k, [r.x, r.y, r.width, r.height]]; }))""", PANELS)


def truncated_labels(page: Any) -> list[str]:
    """Control labels and option texts the page cuts short (their text is wider than their box)."""
    return page.evaluate("""() => [...document.querySelectorAll('.cfviz-explorer .widget-label')]
        .filter(e => e.textContent.trim() && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim())""")


def wait_text(page: Any, selector: str, text: str, timeout_ms: int = 20_000) -> None:
    """Wait until the explorer's element ``selector`` shows ``text`` (widget messages arrive in order, but
    a control's text parts may arrive after its images)."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector('.cfviz-explorer ' + sel);"
                           " return !!e && e.innerText.includes(text); }", arg=[selector, text], timeout=timeout_ms)
