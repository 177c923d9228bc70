"""A full MVTec-AD-size scoring pass from a capture store: before and after the per-category cache.

The store holds one entry per test image of MVTec-AD's 15 categories (1,725 images, each
category's real test count) plus the k-shot references, with the real names, shapes and dtypes
of the default settings (``ExtractionConfig()``: SD2-inpainting at 512 px, 3 timesteps, every
``attn2`` layer, ``up_blocks.1`` features; ``ViT-B-16-plus-240`` embeddings and zero-shot maps).
The shapes come from one real extraction with seeded random full-size models (the template);
every entry is that template with random values (attention uniform in [0, 1), features and
embeddings normal, in their stored dtypes), written with ``CaptureStore.add``. Scoring time does
not depend on the values.

Each pass is the runner's scoring (``cfviz.evaluation.runner._score``: maps, fusion and image and
pixel metrics at the default 256 px grid) for ``clipfusion`` at 0 and 1 shot (seed 0), and for
the issue's full study (shots 0, 1, 2, 4; seeds 0, 1, 2), once without the cache (the code before
it: every setting re-reads the entries and recomputes M_diff_L) and once with it. Masks are
random rectangles on the anomalous images.

``--fraction f`` keeps the first ``ceil(f * n)`` test images of every category (and projects the
times to 1,725 images linearly). The store goes to a temporary folder (``--tmp``, default /tmp)
and is deleted at the end (it is ~16 GB at full size).

Run:  .venv/bin/python benchmarks/bench_scoring.py [--fraction 1.0] [--study small|grid|both] [--tmp /tmp]
Writes benchmarks/results/scoring.md.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import machine, now, write_results  # noqa: E402

#: MVTec-AD test images per category (1,725 in all) and the share of anomalous ones (~70 %).
MVTEC_TEST = {"bottle": 83, "cable": 150, "capsule": 132, "carpet": 117, "grid": 78, "hazelnut": 110,
              "leather": 124, "metal_nut": 115, "pill": 167, "screw": 160, "tile": 117, "toothbrush": 42,
              "transistor": 100, "wood": 79, "zipper": 151}
TRAIN_PER_CATEGORY = 8  # normal training images the k-shot draws pick from (only drawn ones are stored)
#: the two studies timed: the issue's "0-shot and 1-shot", and its full grid (shots 0/1/2/4, 3 seeds)
STUDIES = {"clipfusion, shots 0 1, seed 0": ((0, 1), (0,)),
           "clipfusion, shots 0 1 2 4, seeds 0 1 2": ((0, 1, 2, 4), (0, 1, 2))}


class BenchDataset:
    """Records and random masks of an MVTec-shaped data set (no pixels: scoring reads the store)."""

    name = "mvtec-shaped"
    has_masks = True

    def __init__(self, counts: dict[str, int], eval_size: int, seed: int = 0) -> None:
        self.categories = sorted(counts)
        self.records = []
        rng = np.random.default_rng(seed)
        self._masks: dict[str, np.ndarray] = {}
        for c in self.categories:
            n = counts[c]
            n_good = min(n - 1, max(1, round(0.3 * n)))  # both classes in every category
            for i in range(n):
                label = int(i >= n_good)
                rid = f"{c}/test/{'defect' if label else 'good'}/{i:03d}"
                self.records.append(SimpleNamespace(image_id=rid, category=c, split="test", label=label,
                                                    defect_type="defect" if label else "good"))
                mask = np.zeros((eval_size, eval_size), np.uint8)
                if label:
                    y, x = rng.integers(0, eval_size - 40, size=2)
                    h, w = rng.integers(8, 40, size=2)
                    mask[y:y + h, x:x + w] = 1
                self._masks[rid] = mask
            for i in range(TRAIN_PER_CATEGORY):
                self.records.append(SimpleNamespace(image_id=f"{c}/train/good/{i:03d}", category=c, split="train",
                                                    label=0, defect_type="good"))

    def load(self, rec: SimpleNamespace) -> SimpleNamespace:
        return SimpleNamespace(mask=self._masks.get(rec.image_id))


def template_entry(folder: Path) -> object:
    """One real entry of the default settings (seeded random full-size models, one texture image)."""
    from cfviz.capture.store import CaptureStore
    from cfviz.data.textures import TexturesDataset
    from cfviz.experiments import ExtractionConfig, ModelChoice
    from cfviz.evaluation.extraction import extract
    from cfviz.evaluation.models import load_models

    store = CaptureStore(folder)
    if "template" not in store:
        data = TexturesDataset(categories="grass")
        record = next(r for r in data.records if r.label == 1)
        record = SimpleNamespace(**{**vars(record), "image_id": "template"}) if hasattr(record, "__dict__") else record
        models = load_models(ModelChoice(clip="random", diffusion="random"))
        extract(data, [record], models, ExtractionConfig(), store, batch_size=1, progress=False)
    return store["template"]


def fill(store: object, template: object, ids: list[tuple[str, dict]], seed: int = 0) -> float:
    """Write ``ids`` as copies of ``template`` with random values; return the seconds taken."""
    gen = torch.Generator().manual_seed(seed)
    tensors = template.load()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for image_id, metadata in ids:
        cache = template.cache()  # type: ignore[attr-defined]
        for name, per_step in cache.attention.items():
            for step, t in per_step.items():
                per_step[step] = torch.rand(t.shape, generator=gen).to(t.dtype)
        for name, per_step in cache.features.items():
            for step, t in per_step.items():
                per_step[step] = torch.randn(t.shape, generator=gen).to(t.dtype)
        arrays = {n: (torch.rand(t.shape, generator=gen) if n.startswith(("clip/", "winclip/"))
                      else torch.randn(t.shape, generator=gen)).to(t.dtype)
                  for n, t in tensors.items() if not n.startswith(("attn/", "feat/"))}
        store.add(image_id, cache, arrays=arrays, metadata=metadata)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def _plan(spec: object, dataset: object) -> SimpleNamespace:
    """The parts of a :class:`~cfviz.evaluation.plan.RunPlan` that scoring reads, for this synthetic store."""
    from cfviz.data.samples import sample_references

    settings = tuple((m, k, s) for m in spec.methods for k in spec.shots for s in (spec.seeds if k else spec.seeds[:1]))
    return SimpleNamespace(spec=spec, dataset=dataset, categories=tuple(dataset.categories), settings=settings,
                           references_of=lambda c, k, s: [r.image_id for r in sample_references(dataset, c, k, s)]
                           if k else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each category's test images")
    parser.add_argument("--tmp", default="/tmp", help="folder for the temporary store (~16 GB at full size)")
    parser.add_argument("--template", default=None, help="keep the template store here (reused by later runs)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved passes of each kind (best counts)")
    parser.add_argument("--study", choices=("small", "grid", "both"), default="both",
                        help="small: shots 0 1, seed 0; grid: shots 0 1 2 4, seeds 0 1 2")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write scoring.md")
    args = parser.parse_args()

    from cfviz.capture.store import CaptureStore
    from cfviz.data.samples import sample_references
    from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig
    from cfviz.evaluation.runner import _score

    torch.set_grad_enabled(False)
    counts = {c: max(2, math.ceil(args.fraction * n)) for c, n in MVTEC_TEST.items()}
    n_images = sum(counts.values())
    work = Path(tempfile.mkdtemp(prefix="cfviz-bench-scoring-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        template = template_entry(Path(args.template) if args.template else work / "template")
        t_template = time.perf_counter() - t0
        dataset = BenchDataset(counts, ScoringConfig().eval_size)
        studies = {name: v for i, (name, v) in enumerate(STUDIES.items())
                   if args.study == "both" or args.study == ("small", "grid")[i]}
        refs = {r.image_id for c in dataset.categories for shots, seeds in studies.values() for k in shots if k
                for seed in seeds for r in sample_references(dataset, c, k, seed)}
        ids = [(r.image_id, {"label": r.label, "category": r.category, "split": r.split})
               for r in dataset.records if r.split == "test" or r.image_id in refs]
        store = CaptureStore(work / "store", {"bench": "scoring"})
        t_write = fill(store, template, ids)
        entry_bytes = template.path.stat().st_size  # type: ignore[attr-defined]
        results = {}
        for study, (shots, seeds) in studies.items():
            spec = RunSpec(dataset="mvtec", methods=("clipfusion",), shots=shots, seeds=seeds,
                           extraction=ExtractionConfig(), scoring=ScoringConfig())
            wall: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            frames = {}
            for _ in range(args.repeats):  # interleaved, best of each: robust to other load on the machine
                for cache in (False, True):
                    store.refresh()
                    w0, c0 = time.perf_counter(), time.process_time()
                    frames[cache] = _score(store, _plan(spec, dataset), False, cache=cache)
                    wall[cache].append(time.perf_counter() - w0)
                    cpu[cache].append(time.process_time() - c0)
            assert frames[False] == frames[True], "the cache changed the results"
            n_settings = sum(len(seeds) if k else 1 for k in shots)  # 0-shot has no draw to repeat
            results[study] = (min(wall[False]), min(wall[True]), min(cpu[False]), min(cpu[True]), n_settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    scale = 1725 / n_images
    lines = [
        "# Scoring an MVTec-AD-size store, before and after the per-category cache",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_scoring.py --fraction {args.fraction:g} --study {args.study} "
        f"--repeats {args.repeats}`  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}",
        "",
        f"Store: {n_images} test images ({args.fraction:g} of each MVTec-AD category's test set; 1,725 at 1.0) "
        f"plus {len(refs)} k-shot references, entries of the default settings' real shapes "
        f"({entry_bytes:,} bytes each; {entry_bytes * len(ids) / 1e9:.1f} GB), random values. "
        (f"Template extraction {t_template:.0f} s; " if t_template > 1 else "Template reused (--template); ")
        + f"writing the store {t_write:.0f} s.",
        "",
        "One pass = the runner's scoring (`_score`) over the 15 categories: maps, fusion, image metrics and "
        "pixel metrics (AUROC, AP, F1-max, AUPRO) on the 256 px grid, for every setting of the study.",
        "",
        f"Best of {args.repeats} interleaved passes each; wall seconds, and CPU seconds of this process (all its "
        "threads: what the pass costs, whatever else runs on the machine).",
        "",
        "| study | settings per category | before: no cache, wall (CPU) s | after: BranchCache, wall (CPU) s | "
        "speed-up (wall, CPU) | projected to 1,725 images, before / after (wall) |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {study} | {n} | {bw:.1f} ({bc:.1f}) | {aw:.1f} ({ac:.1f}) | {bw / aw:.2f}x, {bc / ac:.2f}x | "
          f"{bw * scale / 60:.1f} min / {aw * scale / 60:.1f} min |"
          for study, (bw, aw, bc, ac, n) in results.items()],
        "",
        "Before: every (shots, seed) re-reads the category's entries and recomputes M_diff_L, the CLIP "
        "language maps and the query features; after: once per category (query features and embeddings "
        "once for every reference draw). The metric rows are identical before and after (checked). "
        f"This store is {entry_bytes * len(ids) / 1e9:.1f} GB; the full one is ~16 GB, more than this machine's "
        "free memory (page cache), so at full size the uncached re-reads come from disk and a linear "
        "projection understates the before column.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_results("scoring.md", text)


if __name__ == "__main__":
    main()
