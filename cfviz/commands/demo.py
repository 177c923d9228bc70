"""``cfviz demo``: the main job of ``make demo``.

It generates the embedded texture data set when missing, runs zero-shot and 1-shot CLIPFusion,
its two branches and the WinCLIP baseline with the offline tiny models (or the models given),
and writes under ``figures/``:

* ``demo_results.csv`` and ``demo_summary.md`` — the tidy results and the Markdown table;
* ``demo_metrics.png/.pdf`` — image and pixel AUROC per method and shots (mean over categories);
* ``demo_qualitative.png/.pdf`` — one anomalous image per defect type (:data:`PICK_RULE`):
  image, ground truth, ``M_clip``, ``M_diff``, the fused map and WinCLIP+, from the run's own
  predictions (nothing is predicted again for the figure).

The capture store lands in ``runs/demo/store``: a second run reuses it and runs no model.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

DEMO_METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip")


def describe(spec: Any, dataset: Any) -> str:
    """A few lines saying what the demo runs on."""
    tests = [r for r in dataset.records if r.split == "test"]
    n_bad = sum(r.label for r in tests)
    m = spec.models
    clip = {"tiny": "tiny offline CLIP (random weights)", "random": f"{m.clip_arch} (random weights)"}.get(
        m.clip, f"{m.clip_arch} / {m.clip_pretrained}")
    diff = {"tiny": "tiny offline inpainting pipeline (random weights)",
            "random": "SD2-inpainting architecture (random weights)"}.get(m.diffusion, m.diffusion)
    return "\n".join([
        f"data:    {spec.dataset} at {dataset.root} — categories {', '.join(dataset.categories)}; "
        f"{len(tests)} test images ({n_bad} anomalous)",
        f"models:  CLIP = {clip}; diffusion = {diff}; device {m.device}",
        f"methods: {', '.join(spec.methods)}; shots {list(spec.shots)}; seeds {list(spec.seeds)}",
    ])


#: How :func:`qualitative_rows` picks its images (the figure's subtitle says it too).
PICK_RULE = ("one anomalous image per defect type (categories in turn): the one with the highest "
             "CLIPFusion image score, a best case")


def pick_examples(preds: dict[str, Any]) -> list[tuple[str, int]]:
    """``(category, index)`` of one anomalous test image per defect type (:data:`PICK_RULE`).

    Defect types in sorted order; the i-th comes from the i-th category in turn when that category
    has it (else the first that has it), and within it the image with the highest image score.

    >>> import numpy as np
    >>> from types import SimpleNamespace as P
    >>> preds = {"brick": P(labels=np.array([0, 1, 1]), scores=np.array([.9, .2, .4]),
    ...                     defect_types=["good", "hole", "hole"]),
    ...          "grass": P(labels=np.array([1, 1]), scores=np.array([.3, .1]), defect_types=["cut", "hole"])}
    >>> pick_examples(preds)  # cut: grass (the first category lacks it); hole: grass's turn, its only hole
    [('grass', 0), ('grass', 1)]
    """
    cats = list(preds)
    kinds = sorted({t for p in preds.values() for t, y in zip(p.defect_types, p.labels) if y == 1})
    picks = []
    for i, kind in enumerate(kinds):
        having = [c for c in cats if any(t == kind and y == 1
                                         for t, y in zip(preds[c].defect_types, preds[c].labels))]
        turn = cats[i % len(cats)]
        cat = turn if turn in having else having[0]
        p = preds[cat]
        idx = [j for j, (t, y) in enumerate(zip(p.defect_types, p.labels)) if t == kind and y == 1]
        picks.append((cat, max(idx, key=lambda j: float(p.scores[j]))))  # ties: the first
    return picks


def qualitative_rows(result: Any, dataset: Any, shots: int) -> list[dict[str, Any]]:
    """Rows for :func:`cfviz.viz.qualitative_grid`, picked by :func:`pick_examples`.

    The maps are the run's own predictions (``evaluate(keep=...)``: seed 0, ``shots``), predicted
    again from the store only when the result did not keep them.
    """
    from cfviz.analysis.failures import branch_maps
    from cfviz.evaluation.plan import test_categories
    from cfviz.evaluation.scoring import predict

    def run_predictions(category: str, method: str) -> Any:
        kept = result.predictions.get((category, method, shots, 0))
        return kept if kept is not None else predict(result.store, dataset, category, method, shots=shots, seed=0,
                                                     scoring=result.spec.scoring, extraction=result.spec.extraction)

    fused = {c: run_predictions(c, "clipfusion") for c in test_categories(dataset)}
    rows = []
    for category, idx in pick_examples(fused):
        p = fused[category]
        win = run_predictions(category, "winclip")
        sample = dataset.load(next(r for r in dataset.records if r.image_id == p.image_ids[idx]))
        clip, diff = branch_maps(p)
        rows.append({
            "image": sample.image, "mask": sample.mask, "M_clip": clip[idx], "M_diff": diff[idx],
            "fused": p.maps[idx], "WinCLIP" + ("+" if shots else ""): win.maps[idx],
            "label": f"{category}, {sample.defect_type}\nimage score {float(p.scores[idx]):.2f}",
        })
    return rows


def write_figures(result: Any, dataset: Any, out: Path, note: str | None) -> list[Path]:
    """The metrics bar chart and the qualitative grid of a demo run."""
    import matplotlib.pyplot as plt

    import cfviz.viz as viz

    paths: list[Path] = []
    frame = result.frame.copy()
    frame["value"] = 100 * frame["value"]
    metrics = [(m, n) for m, n in (("image_auroc", "image AUROC (%)"), ("pixel_auroc", "pixel AUROC (%)"))
               if (frame["metric"] == m).any()]
    if metrics:
        with viz.style_context():
            fig = viz.new_figure(3.2 * len(metrics), 2.6)
            axes = fig.subplots(1, len(metrics), squeeze=False)[0]
            for ax, (metric, name) in zip(axes, metrics):
                viz.metric_bars(frame[frame["metric"] == metric], x="method", hue="shots", errorbar=None,
                                ylabel=name, ylim=(0, 105), title=f"{name}, mean over categories", ax=ax)
            viz.add_note(fig, note)
        paths += viz.save_figure(fig, "demo_metrics", out)
        plt.close(fig)
    shots = max(result.spec.shots)
    rows = qualitative_rows(result, dataset, shots)
    columns = ("image", "ground truth", "M_clip", "M_diff", "fused", "WinCLIP" + ("+" if shots else ""))
    picked = f"Rows: {PICK_RULE}."
    fig = viz.qualitative_grid(rows, columns=columns, title=f"CLIPFusion, {shots}-shot",
                               note=f"{picked} {note}" if note else picked)
    paths += viz.save_figure(fig, "demo_qualitative", out)
    plt.close(fig)
    return paths


#: RunSpec setting path -> the demo's flag (configuration errors name the flag).
FLAGS: dict[str, str] = {
    "root": "--root", "categories": "--categories", "out_dir": "--out", "store_dir": "--store",
    "batch_size": "--batch-size", "models.clip": "--clip", "models.clip_arch": "--clip-arch",
    "models.clip_pretrained": "--clip-pretrained", "models.diffusion": "--diffusion", "models.revision": "--revision",
    "models.device": "--device", "models.dtype": "--dtype", "models.seed": "--model-seed",
    "extraction.clip_size": "--clip-size",
}

EXAMPLES = """\
examples:
  cfviz demo                                  # offline tiny models: ~75 s of CPU time, ~20 s once stored
  cfviz demo --categories brick grass --figures /tmp/demo-figures
  cfviz demo --clip pretrained --diffusion stabilityai/stable-diffusion-2-inpainting --device cuda
"""


def run(args: argparse.Namespace) -> int:
    from cfviz.commands.evaluate import spec_from_args
    from cfviz.evaluation.plan import plan_run
    from cfviz.evaluation.preflight import check_writable_folder
    from cfviz.evaluation.report import RANDOM_WEIGHTS_NOTE
    from cfviz.evaluation.runner import evaluate

    spec = spec_from_args(args)
    figures = Path(args.figures)
    check_writable_folder(figures, "figures")
    dataset = plan_run(spec, args.out, args.store).dataset  # checks everything; generates the textures on first use
    print("cfviz demo")
    print(describe(spec, dataset))
    if spec.models.random_weights:
        print(f"note:    {RANDOM_WEIGHTS_NOTE}")
    keep = [(m, max(spec.shots), 0) for m in ("clipfusion", "winclip")]  # the qualitative figure's maps
    result = evaluate(spec, args.out, store_dir=args.store, progress=not args.no_progress, keep=keep)
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.out_dir / "results.csv", figures / "demo_results.csv")
    shutil.copyfile(result.out_dir / "summary.md", figures / "demo_summary.md")
    note = RANDOM_WEIGHTS_NOTE if result.random_weights else None
    print(f"drawing the figures into {figures} (from the run's own predictions) ...", flush=True)
    paths = write_figures(result, dataset, figures, note)
    print()
    print((figures / "demo_summary.md").read_text())
    print(f"store {result.store.path}: {result.extraction}")
    print("wrote: " + ", ".join(str(p) for p in [figures / "demo_results.csv", figures / "demo_summary.md", *paths]))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options: where the textures, tables and figures go, and which models run."""
    from cfviz.commands.evaluate import add_model_arguments

    data = p.add_argument_group("data (the embedded texture set)")
    data.add_argument("--root", help="texture folder (default: data/textures, generated if missing)")
    data.add_argument("--categories", nargs="+", help="only these texture categories (default: all)")
    run = p.add_argument_group("run")
    run.add_argument("--out", default="runs/demo", help="folder for the run's tables")
    run.add_argument("--store", help="capture store folder; a second demo reuses it (default: OUT/store)")
    run.add_argument("--figures", default="figures", help="folder for the table and figures")
    run.add_argument("--batch-size", type=int, default=4, help="images per model call")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_arguments(p)


def add_parser(sub: Any) -> None:
    from cfviz.commands.evaluate import _defer

    p = sub.add_parser("demo", help="run the pipeline on the embedded textures; writes figures/",
                       description="Generate the embedded texture data set when missing, run zero-shot and "
                                   "1-shot CLIPFusion, PatchCLIP, MapDiff and WinCLIP with the offline tiny "
                                   "models, and write a results table and figures. The methods, shots and "
                                   "settings are fixed; use `cfviz evaluate` to choose them. Measured "
                                   "(benchmarks/results/demo.md, 2 cores): the first run takes about 75 s of "
                                   "CPU time (the models run on 57 images; 5 min wall on a machine busy with "
                                   "other work), a rerun about 20 s (the store holds every image).",
                       epilog=EXAMPLES)
    _defer(p, add_arguments)
    p.set_defaults(func=run, cli_flags={**FLAGS, "figures": "--figures"}, dataset="textures",
                   methods=list(DEMO_METHODS), shots=[0, 1], seeds=[0], shard=None)
