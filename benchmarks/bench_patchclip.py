"""Seconds per image of each PatchCLIP form next to one plain image encoding and next to WinCLIP.

Full-size ``ViT-B-16-plus-240`` with seeded random weights (``cfviz.models.random_clip``), CPU,
one torch thread, batch of one image. Forms (issue 13; ``scoring.patchclip_language`` /
``patchclip_visual``, and ``extraction.clip_windows off`` for the cheap extraction):

* plain ``model.encode_image`` (one forward pass);
* PatchCLIP zero-shot, language map from patch tokens only (``scales=()``: one forward pass),
  from windows only (``use_patches=False``), or the mean of both (the default);
* PatchCLIP 1-shot (language and visual map from the same source: patches, windows, mean),
  references fitted once beforehand (not timed);
* WinCLIP zero-shot and WinCLIP+ 1-shot (scales 2 and 3, stride 1: 365 windows).

Text anchors are encoded once per class and cached before timing (every form needs them).
Times are per-thread CPU seconds (``time.thread_time``: with one torch thread the whole forward
runs on the calling thread, so time the scheduler gives to other processes is not counted) and
wall seconds; rounds are interleaved (the order reversed every other round) so that load drift
hits every form alike. Best and median over rounds, and the ratio of medians to the plain encoding.

Run:  .venv/bin/python benchmarks/bench_patchclip.py [--repeats 3]
Writes benchmarks/results/patchclip.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import load_average, machine, median, now, timed_thread, write_results  # noqa: E402

MODEL = "ViT-B-16-plus-240"
CLASS = "bottle"


def tasks(bundle, x, ref):
    """``(label, callable)`` of every form, models built and fitted beforehand."""
    from cfviz.clip import PatchCLIP, WinCLIP

    def pc(**kw):
        return PatchCLIP(bundle, class_name=CLASS, **kw)

    forms = {"patches": {"scales": ()}, "windows": {"use_patches": False}, "mean (default)": {}}
    zero = {f: pc(**kw) for f, kw in forms.items()}
    one = {f: pc(**kw).fit(ref) for f, kw in forms.items()}
    win0, win1 = WinCLIP(bundle, class_name=CLASS), WinCLIP(bundle, class_name=CLASS).fit(ref)
    out = [("plain encode_image", lambda: bundle.model.encode_image(x))]
    out += [(f"PatchCLIP 0-shot, language from {f}", (lambda m=m: m.predict(x, few_shot=False)))
            for f, m in zero.items()]
    out += [(f"PatchCLIP 1-shot, language + visual from {f}", (lambda m=m: m.predict(x, few_shot=True)))
            for f, m in one.items()]
    out += [("WinCLIP 0-shot", lambda: win0.predict(x, few_shot=False)),
            ("WinCLIP+ 1-shot", lambda: win1.predict(x, few_shot=True))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over every form")
    args = parser.parse_args()

    from cfviz.models import random_clip

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    load_start = load_average()
    bundle = random_clip(MODEL, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 240, 240, generator=g)
    ref = torch.randn(1, 3, 240, 240, generator=g)
    todo = tasks(bundle, x, ref)
    for _, fn in todo:  # warm-up (and the text anchors' cache)
        fn()
    cpu = {label: [] for label, _ in todo}
    wall = {label: [] for label, _ in todo}
    for r in range(args.repeats):
        for label, fn in (todo if r % 2 == 0 else todo[::-1]):
            w, c, _ = timed_thread(fn)
            cpu[label].append(c)
            wall[label].append(w)
        print(f"round {r + 1}: " + ", ".join(f"{lab} {cpu[lab][-1]:.2f}" for lab, _ in todo), flush=True)
    load_end = load_average()
    base = median(cpu[todo[0][0]])
    lines = [
        "# PatchCLIP forms: seconds per image next to one image encoding and WinCLIP",
        "",
        f"- Command: `.venv/bin/python benchmarks/bench_patchclip.py --repeats {args.repeats}`",
        f"- Date: {now()}",
        f"- Machine: {machine()}. 1-minute load average {load_start} at the start, {load_end} at the end "
        "(other jobs shared the 2 cores: compare the CPU-time ratios, which the load disturbs least).",
        f"- Model: `{MODEL}` with seeded random weights (`random_clip(seed=0)`), float32, CPU, one torch thread, "
        "one 240x240 image per call; 1-shot forms fitted on one reference beforehand. Random weights time like "
        "real ones; no detection quality is measured here.",
        f"- {args.repeats} interleaved rounds (order reversed every other round) after one warm-up call each.",
        "",
        "| form | CPU s/img best | CPU s/img median | x plain encode (median) | wall s/img median |",
        "|---|---|---|---|---|",
    ]
    for label, _ in todo:
        lines.append(f"| {label} | {min(cpu[label]):.2f} | {median(cpu[label]):.2f} | "
                     f"{median(cpu[label]) / base:.2f} | {median(wall[label]):.2f} |")
    windows = median(cpu["PatchCLIP 0-shot, language from windows"]) / base
    lines += [
        "",
        "Reading: the patch-token forms cost one forward pass (plus text scores and, in 1-shot, one "
        "nearest-neighbour search over the reference patches), so they run at the plain encoding's cost. "
        "Any form with windows adds one batch of short window sequences per scale (365 windows at scales 2 and 3): "
        f"{windows:.1f}x the plain encoding in all, the same as WinCLIP; the mean form costs what the windows form "
        "does (the patch map is a by-product of the same forward pass). In `cfviz evaluate` the patch forms are the "
        "default (`--patchclip-language patches --patchclip-visual patches`, issue 20) and `--clip-windows auto` "
        "computes windows only for a run that needs them (WinCLIP, a window form), so the default run extracts CLIP "
        "at the patch forms' cost (`tests/experiments/test_paper_defaults.py`). Wall times here are several times the CPU times because other "
        "jobs shared the 2 cores.",
        "",
    ]
    path = write_results("patchclip.md", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
