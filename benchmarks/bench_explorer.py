"""Latency of the attention explorer's interactions (smoke-mode store, tiny models), CPU.

The kernel's share of what a researcher feels when moving a control of ``AttentionExplorer``: the
time from a widget value change to the new images in the view (drawn from arrays: colour table,
blend, JPEG). Cold = a view state not seen before; warm = a state seen before (served from the
render cache). The store is read once per image; no model runs. Prefetching is off here, so every
cold number includes all the work; the browser benchmark (bench_explorer_browser.py) measures
input to image in chromium with prefetching on.

Run:  .venv/bin/python benchmarks/bench_explorer.py
Writes benchmarks/results/explorer.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, median, now, timed, write_results  # noqa: E402


def main() -> None:
    from cfviz.notebooks import setup
    from cfviz.viz.explorer import AttentionExplorer

    run_dir = Path(tempfile.mkdtemp(prefix="cfviz-bench-explorer-"))  # its own store: never races a notebook run
    setup(smoke=True, run_dir=run_dir, figures_dir=run_dir / "figures", progress=False)  # fill the store
    t_setup, s = timed(lambda: setup(smoke=True, run_dir=run_dir, figures_dir=run_dir / "figures", progress=False))
    t_open, ex = timed(lambda: AttentionExplorer.from_session(s, prefetch=False))
    n_steps = len(ex.timestep.options)
    rows = []

    def move(control, value) -> float:  # type: ignore[no-untyped-def]
        dt, _ = timed(lambda: setattr(control, "value", value))
        return dt

    cold_t = [move(ex.timestep, i) for i in list(range(1, n_steps)) + [0]][:-1]
    warm_t = [move(ex.timestep, i) for i in range(n_steps)] * 1
    alphas = [round(a * 0.05, 2) for a in range(21)]
    cold_a = [move(ex.alpha, a) for a in alphas if a != ex.alpha.value]
    warm_a = [move(ex.alpha, a) for a in alphas]
    ex.alpha.value = s.spec.scoring.alpha_seg
    cold_c = [move(ex.alpha_cls, a) for a in alphas if a != ex.alpha_cls.value]
    lo, hi = ex.threshold.min, ex.threshold.max
    cold_thr = [move(ex.threshold, lo + (hi - lo) * k / 12) for k in range(1, 12)]
    layers = [v for _, v in ex.layer.options] if isinstance(ex.layer.options[0], tuple) else list(ex.layer.options)
    cold_l = [move(ex.layer, v) for v in layers[1:4]]
    cold_o = [move(ex.opacity, round(o * 0.05, 2)) for o in range(4, 12) if round(o * 0.05, 2) != ex.opacity.value]
    cold_g = []
    for o in (0.65, 0.7, 0.75):
        ex.opacity.value = o
        cold_g.append(move(ex.show_mask, not ex.show_mask.value))
    choices = [v for _, v in ex.image.options]
    images = [move(ex.image, v) for v in choices if v != ex.image.value]
    rows += [
        ("timestep slider, new state (attention view redrawn)", cold_t),
        ("timestep slider, state seen before (render cache)", warm_t),
        ("alpha_seg slider, new value (fused map, predicted mask, metrics)", cold_a),
        ("alpha_seg slider, value seen before", warm_a),
        ("alpha_cls slider, new value (image score, category AUROC)", cold_c),
        ("threshold slider, new value (predicted mask)", cold_thr),
        ("layer selector, new layer", cold_l),
        ("opacity slider, new value (7 heat-map panels)", cold_o),
        ("ground-truth toggle, new state (8 panels)", cold_g),
        ("image picker, new image (store read + every panel)", images),
    ]
    lines = [
        "# Attention explorer: interaction latency",
        "",
        "Command: `.venv/bin/python benchmarks/bench_explorer.py`  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}; 1-minute load average {load_average()}",
        "",
        f"Store: the notebooks' smoke store (tiny models, {len(s.store)} images, {n_steps} timesteps). "
        f"Opening the session {t_setup:.1f} s (store already filled), building the explorer "
        f"{t_open:.2f} s. Times are from a widget value change to the new images, in the kernel (no browser, prefetching off).",
        "",
        "| interaction | median (s) | max (s) | n |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {median(v):.3f} | {max(v):.3f} | {len(v)} |" for name, v in rows],
        "",
        "Reading: a new view is numpy on arrays plus a JPEG encode per changed panel (no matplotlib); any "
        "state seen before is served from the render cache. No interaction runs a model; only the image "
        "picker reads the store. Before (commit a7b1f9a, one matplotlib figure per view): 0.23-0.63 s.",
    ]
    path = write_results("explorer.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
