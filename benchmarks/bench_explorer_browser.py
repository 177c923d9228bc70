"""Input-to-image latency of the attention explorer in a real browser (JupyterLab, headless chromium).

Builds a smoke-mode store (tiny models, two prompt words so that the token menu can change), serves
a copy of notebook 02 from JupyterLab on 127.0.0.1, runs it in headless Debian chromium and then
changes every control many times *inside the page*: the time is taken with ``performance.now()``
from just before the input event is dispatched (key press on a slider handle, ``change`` on a
menu, click on the check box) until every panel that control concerns has a new image, decoded
(``img.decode()`` resolved) and at the next animation frame. Each change is classed "new view" when
some panel it updates shows a state not shown before in this session (goal: <= 100 ms), else
"seen before". The table also gives the time until the last new ``src`` arrived (before decoding).

Run:  .venv/bin/python benchmarks/bench_explorer_browser.py   (needs `make browser`)
Writes benchmarks/results/explorer_browser.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))

import lab  # noqa: E402  (tests/browser/lab.py)
from _common import machine, now, write_results  # noqa: E402

GOAL_MS = 100.0


def _state(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    st = {name: lab.readout(page, name) for name in ("timestep", "opacity", "alpha_seg", "alpha_cls", "threshold")}
    st |= {name: lab.selected(page, name) for name in ("image", "layer", "token", "CLIP window")}
    st["gt"] = str(page.evaluate("() => [...document.querySelectorAll('.cfviz-explorer .widget-checkbox input')]"
                                 ".map(i => i.checked).join()"))
    return st


def _keys(st: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """What each panel shows (the kernel's render-cache keys, from the controls' values)."""
    img, op, gt = st["image"].split(" · ")[0], st["opacity"], st["gt"]
    return {"attention": (img, st["layer"], st["timestep"], st["token"], op, gt),
            "clip": (img, st["CLIP window"], op, gt), "fused": (img, st["alpha_seg"], op, gt),
            "prediction": (img, st["alpha_seg"], st["threshold"], op, gt), "metrics": (img, st["alpha_cls"]),
            "image": (img,), "gt": (img, gt)}


class Recorder:
    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.page = page
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        self.rows: dict[tuple[str, bool], list[dict[str, float]]] = {}
        self._mark(_state(page))

    def _mark(self, st: dict[str, str]) -> set[tuple[str, tuple[str, ...]]]:
        keys = {(k, v) for k, v in _keys(st).items()}
        fresh = keys - self.seen
        self.seen |= keys
        return fresh

    def act(self, control: str, kind: str, arg: object, targets: list[str]) -> None:
        t = lab.act(self.page, kind, control, arg, targets)
        fresh = self._mark(_state(self.page))
        new = any(panel in targets for panel, _ in fresh)
        self.rows.setdefault((control, new), []).append(t)


def main() -> None:
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cfviz-bench-browser-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        lab.explorer_notebook(work)
        t_store = time.perf_counter() - t0
        with lab.serve(work) as served, lab.browser(work / "profile") as page:
            t0 = time.perf_counter()
            lab.open_explorer(page, served)
            t_open = time.perf_counter() - t0
            load1 = os.getloadavg()
            rec = Recorder(page)
            heat = lab.HEAT
            layers = lab.options(page, "layer")
            tokens = lab.options(page, "token")
            direction = "ArrowRight"
            for layer in layers[1:] + layers[:1]:
                rec.act("layer", "select", layer, ["attention"])
                for _ in range(2):
                    rec.act("timestep", "slider", direction, ["attention"])
                direction = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
                other = next(t for t in tokens if t != lab.selected(page, "token"))
                rec.act("token", "select", other, ["attention"])
            scales = lab.options(page, "CLIP window")
            for _ in range(8):
                rec.act("opacity", "slider", "ArrowLeft", heat)
                other = next(s for s in scales if s != lab.selected(page, "CLIP window"))
                rec.act("CLIP window", "select", other, ["clip"])
                rec.act("ground truth", "checkbox", None, ["gt", *heat])
                rec.act("ground truth", "checkbox", None, ["gt", *heat])
            for _ in range(12):
                rec.act("alpha_seg", "slider", "ArrowRight", ["fused", "prediction"])
                lab.wait_text(page, ".cfviz-metrics", f"alpha_seg = {lab.readout(page, 'alpha_seg')}")
            for _ in range(8):
                rec.act("alpha_cls", "slider", "ArrowLeft", ["metrics"])
                lab.wait_text(page, ".cfviz-metrics", f"alpha_cls = {lab.readout(page, 'alpha_cls')}")
            for _ in range(12):
                rec.act("threshold", "slider", "ArrowRight", ["prediction"])
            for _ in range(2):
                for option in lab.options(page, "image"):
                    if option != lab.selected(page, "image"):
                        rec.act("image", "select", option, ["image", *heat])
            load2 = os.getloadavg()
            shot = Path(os.environ.get("CFVIZ_SCREENSHOT_DIR", tempfile.gettempdir())) / "explorer_browser.png"
            page.locator(".cfviz-explorer").first.screenshot(path=str(shot))
    order = ["timestep", "layer", "token", "CLIP window", "opacity", "ground truth", "alpha_seg", "alpha_cls",
             "threshold", "image"]
    lines = [
        "# Attention explorer in the browser: input-to-image latency",
        "",
        "Command: `.venv/bin/python benchmarks/bench_explorer_browser.py` (needs `make browser`)  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}  ",
        f"Load average (1, 5, 15 min): {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f} at the start; "
        f"{load1[0]:.2f}, {load1[1]:.2f}, {load1[2]:.2f} when the explorer was up; "
        f"{load2[0]:.2f}, {load2[1]:.2f}, {load2[2]:.2f} at the end (other work shared the 2 cores).",
        "",
        f"JupyterLab on 127.0.0.1, headless Debian chromium (Playwright), notebook 02 on a smoke-mode store "
        f"(tiny models, {len(layers) - 1} cross-attention layers, {len(tokens)} tokens, 256 px images; store built "
        f"in {t_store:.0f} s, notebook run and explorer shown in {t_open:.0f} s). Time = from just before the input "
        "event is dispatched in the page (performance.now()) until every panel the control updates shows its new "
        "image, decoded, at the next animation frame (\"src\": until the last new image URL arrived, before "
        "decoding). \"new view\": a panel shows a state not shown before in the session (the issue's "
        f"goal: <= {GOAL_MS:.0f} ms); \"seen\": served from the kernel's render cache.",
        "",
        "| control | panels updated | new views: n | best (ms) | median (ms) | max (ms) | median src (ms) "
        "| seen before: n | median (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    n_panels = {"timestep": 1, "layer": 1, "token": 1, "CLIP window": 1, "opacity": len(lab.HEAT),
                "ground truth": 1 + len(lab.HEAT), "alpha_seg": "2 (fused, predicted)",
                "alpha_cls": "0 (metrics line)", "threshold": "1 (predicted)", "image": 1 + len(lab.HEAT)}
    worst = 0.0
    for control in order:
        new = [r["shown_ms"] for r in rec.rows.get((control, True), [])]
        src = [r["src_ms"] for r in rec.rows.get((control, True), [])]
        seen = [r["shown_ms"] for r in rec.rows.get((control, False), [])]
        if new:
            worst = max(worst, statistics.median(new))
        cells = (f"{len(new)} | {min(new):.0f} | {statistics.median(new):.0f} | {max(new):.0f} | "
                 f"{statistics.median(src):.0f}" if new else "0 | - | - | - | -")
        cells += f" | {len(seen)} | {statistics.median(seen):.0f}" if seen else " | 0 | -"
        lines.append(f"| {control} | {n_panels[control]} | {cells} |")
    lines += [
        "",
        f"Worst median for a new view: {worst:.0f} ms ({'within' if worst <= GOAL_MS else 'over'} the "
        f"{GOAL_MS:.0f} ms goal, which is set for load <= 2: compare the load above). alpha_seg redraws the "
        "fused map and the predicted mask (which follows it), then the texts (the histograms only while their tab "
        "is open); alpha_cls changes only numbers (time until the metrics line shows them); threshold redraws the "
        "predicted mask. Before "
        "(matplotlib figure per view, commit a7b1f9a): 640-930 ms, 1.4-1.6 s for opacity, image and ground truth. "
        "A screenshot of the final state goes to `$CFVIZ_SCREENSHOT_DIR` (default: the temp folder) as "
        "`explorer_browser.png`.",
        "",
        f"Total benchmark time {time.perf_counter() - t_start:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    path = write_results("explorer_browser.md", text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
