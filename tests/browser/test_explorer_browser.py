"""The attention explorer in a real browser: JupyterLab on localhost, headless Debian chromium.

Starts JupyterLab on 127.0.0.1 (a free port, a known token), opens a copy of
``02_attention_explorer`` whose parameters point at a smoke-mode store built here, runs every
cell, moves the timestep slider and checks that the displayed attention map changes. A
screenshot is saved (``CFVIZ_SCREENSHOT_DIR`` or the test's tmp folder). Nothing is downloaded:
chromium comes from Debian (``make browser``); without it the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "cfviz-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _lab_settings(folder: Path) -> Path:
    """User settings: render every cell (no windowing, so the explorer stays in the DOM), no news pop-up."""
    import json

    for rel, value in {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                       "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"}
                       }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(value))
    return folder


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run `make browser` to install it")
    pytest.importorskip("playwright.sync_api", reason="playwright (a dev dependency) is not installed")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium: str):
    """A notebook folder with the parametrised explorer notebook, served by JupyterLab."""
    import nbformat

    from cfviz.notebooks import inject_parameters, setup

    work = tmp_path_factory.mktemp("lab")
    run_dir, figures = work / "run", work / "figures"
    setup(smoke=True, run_dir=run_dir, figures_dir=figures)  # the store, so that the notebook only reads it
    nb = nbformat.read(ROOT / "notebooks" / "02_attention_explorer.ipynb", as_version=4)
    inject_parameters(nb, {"run_dir": str(run_dir), "figures_dir": str(figures)})
    nbformat.write(nb, str(work / "explorer.ipynb"))

    port = _free_port()
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


def _image_bytes(page, selector: str) -> bytes:
    return page.locator(selector).first.screenshot()


def test_timestep_slider_changes_the_displayed_map(lab, chromium, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("CFVIZ_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # a fresh profile folder (Playwright passes it as --user-data-dir)
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(f"{lab['url']}/lab/tree/explorer.ipynb?token={TOKEN}", timeout=120_000)
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
            view = ".cfviz-attention-view"
            try:
                page.wait_for_selector(view, state="attached", timeout=180_000)
                page.locator(view).first.scroll_into_view_if_needed()
                page.wait_for_function(f"() => document.querySelector('{view}').naturalWidth > 0", timeout=60_000)
            except Exception:
                page.screenshot(path=str(shots / "explorer_failed.png"), full_page=True)
                raise AssertionError(f"the explorer did not appear; screenshot in {shots}, JupyterLab log "
                                     f"{lab['log']}") from None
            time.sleep(1.0)
            before = _image_bytes(page, view)
            src_before = page.locator(view).first.get_attribute("src")
            page.screenshot(path=str(shots / "explorer_before.png"), full_page=True)

            handle = page.locator(".cfviz-explorer .widget-slider").filter(has_text="timestep").locator(
                ".noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
            page.wait_for_function(
                "([sel, old]) => { const el = document.querySelector(sel); return el && el.src !== old; }",
                arg=[view, src_before], timeout=60_000)
            time.sleep(0.5)
            after = _image_bytes(page, view)
            page.screenshot(path=str(shots / "explorer_after.png"), full_page=True)
            assert before != after, "the attention view looks the same after moving the timestep slider"
            label = page.locator(".cfviz-explorer .widget-slider").filter(has_text="timestep").locator(
                ".widget-readout").first.inner_text()
            assert label.strip() != "100", f"the timestep slider did not move (readout {label!r})"
        finally:
            browser.close()
