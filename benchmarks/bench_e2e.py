"""End-to-end seconds per image of the extraction, by stage: model forwards vs everything else.

Runs the real extraction path (:func:`cfviz.evaluation.extraction.extract`, as the evaluation
runner calls it) on generated textures at MVTec-AD's size (1024 x 1024 PNG files), with the
full-size architectures (``ViT-B-16-plus-240`` and the SD2-inpainting pipeline: VAE, OpenCLIP-H
text encoder, UNet) built from their configs with seeded random weights: they time like real
weights (the same shapes and operations); no detection quality is measured.

Nothing of the pipeline is re-implemented here: the stages are timed from outside, by

* forward pre/post hooks on the UNet and the text encoder, and timers around ``pipe.vae.encode``
  and ``clip_branch.embed`` (the CLIP image and window passes): the **model forwards**;
* timers around ``dataset.load``, the two preprocessing functions, the zero-shot CLIP scoring
  (cached text anchors), ``store.add`` and the capture recorder's own work inside the UNet call
  (everything its hooks and wrappers do besides calling the layer's own processor);
* the rest of ``extract`` (planning, prompts, token specs, row selection, waiting for the data
  thread, Python) is the difference between the whole call and the timed stages.

Each stage is timed in wall seconds and in CPU seconds of the thread that ran it (with one torch
thread, the models run on the calling thread, so its CPU time counts only this work, not what
the other processes sharing the machine get). Stages that ran on another thread (a prefetch
thread) are listed but are not on the main thread's path; the non-model fraction is
``1 - model forwards / whole extract call`` on the main thread.

A first ``extract`` call on one reference image (not timed) builds the class's text anchors and
warms the allocator; then ``--images`` test images are extracted in batches of ``--batch-size``.

Run:  .venv/bin/python benchmarks/bench_e2e.py [--images 4] [--batch-size 2] [--threads 1] [--label TEXT]
Writes benchmarks/results/e2e.md (the new run first, earlier runs kept below it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, PeakRSS, load_average, machine, mb, now, write_results  # noqa: E402

TITLE = "# End-to-end seconds per image: extraction by stage, full-size architectures, CPU"
HISTORY = "## Earlier runs"

#: stage -> is it a model forward
MODEL_STAGES = {
    "CLIP image + window embeddings (clip_branch.embed)": True,
    "VAE encode (pipe.vae.encode)": True,
    "text encoder (pipe.text_encoder forward)": True,
    "UNet forwards, without the recorder's work": True,
    "data loading (dataset.load: PNG decode, mask)": False,
    "preprocessing (clip_batch 240 px bicubic, diffusion_batch 512 px bilinear)": False,
    "CLIP zero-shot scoring (PatchCLIP + WinCLIP, cached text anchors)": False,
    "capture recorder (hooks, key projection, softmax, token reduction, copies)": False,
    "store writes (store.add: safetensors + JSON)": False,
    "waiting for the prefetch thread (next batch not ready yet)": False,
}
UNET_GROSS = "_unet_gross"
RECORDER_IN_UNET = "_recorder_in_unet"


class StageClock:
    """Wall and thread-CPU seconds per (stage, thread); a stage re-entered on one thread counts once."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        # on a GPU the kernels run asynchronously: each clock read waits for them (``sync``), so a
        # stage is charged with its own kernels rather than the next stage's
        self.sync = sync or (lambda: None)
        self.wall: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self._local = threading.local()
        self.enabled = False

    def _depth(self) -> dict[str, int]:
        if not hasattr(self._local, "depth"):
            self._local.depth = defaultdict(int)
        return self._local.depth

    def add(self, stage: str, wall: float, cpu: float) -> None:
        if self.enabled:
            key = (stage, threading.current_thread().name)
            self.wall[key] += wall
            self.cpu[key] += cpu

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = self._depth()
            depth[stage] += 1
            self.sync()
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[stage] -= 1
                if depth[stage] == 0:
                    self.sync()
                    self.add(stage, time.perf_counter() - w, time.thread_time() - c)
        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def hook(self, module: Any, stage: str) -> list[Any]:
        """Forward pre/post hooks that time ``module``'s forward calls as ``stage``."""
        starts = threading.local()

        def pre(_m: Any, _a: Any) -> None:
            if not hasattr(starts, "stack"):
                starts.stack = []
            self.sync()
            starts.stack.append((time.perf_counter(), time.thread_time()))

        def post(_m: Any, _a: Any, _o: Any) -> None:
            w, c = starts.stack.pop()
            if not starts.stack:
                self.sync()
                self.add(stage, time.perf_counter() - w, time.thread_time() - c)
        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def patch(obj: Any, name: str, clock: StageClock, stage: str, undo: list[Callable[[], None]]) -> None:
    """Replace ``obj.name`` (a module's, class's or instance's) by a timed version; ``undo`` puts it back."""
    original = getattr(obj, name)
    own = name in vars(obj)  # a module or class attribute; an instance's method lives on its class
    setattr(obj, name, clock.wrap(stage, original))
    undo.append(lambda: setattr(obj, name, original) if own else delattr(obj, name))


def patch_recorder(clock: StageClock, undo: list[Callable[[], None]]) -> None:
    """Time the capture recorder's own work: its wrapper minus the original processor, and its hooks."""
    from cfviz.capture.processors import RecordingProcessor
    from cfviz.capture.session import CaptureSession

    original_call = RecordingProcessor._call

    def _call(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner
        spent = [0.0, 0.0]

        def timed_inner(*a: Any, **k: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                spent[0] += time.perf_counter() - w
                spent[1] += time.thread_time() - c
        self.inner = timed_inner
        w, c = time.perf_counter(), time.thread_time()
        try:
            return original_call(self, *args, **kwargs)
        finally:
            self.inner = inner
            clock.add(RECORDER_IN_UNET, time.perf_counter() - w - spent[0], time.thread_time() - c - spent[1])

    RecordingProcessor._call = _call
    undo.append(lambda: setattr(RecordingProcessor, "_call", original_call))
    for name in ("record_feature", "on_unet_start"):  # inside the UNet call (the pre-hook runs after ours)
        patch(CaptureSession, name, clock, RECORDER_IN_UNET, undo)
    patch(CaptureSession, "on_unet_end", clock, "capture recorder (hooks, key projection, softmax, token "
          "reduction, copies)", undo)


def git_state() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cfviz"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + (" + uncommitted changes under cfviz/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="test images extracted (timed)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per model call")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the generated PNG images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: thread CPU time is this work's)")
    parser.add_argument("--label", default="", help="what this run measures (kept with its section)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="dtype of every model (ModelChoice.dtype; float16 for a GPU)")
    parser.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda, cuda:N)")
    parser.add_argument("--tiny", action="store_true", help="smoke test of this script: tiny models, 64 px; "
                        "prints the table, writes nothing")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from cfviz.capture.store import CaptureStore
    from cfviz.data.textures import TexturesDataset, generate_textures
    from cfviz.experiments import ExtractionConfig, clip_branch
    from cfviz.evaluation.config import ModelChoice
    from cfviz.evaluation.extraction import extract
    from cfviz.evaluation.models import load_models

    n_good = (args.images + 1) // 2
    n_defect = max(1, args.images - n_good)
    with tempfile.TemporaryDirectory() as tmp:
        params = dict(image_size=args.image_size, n_train=1, n_test_good=n_good, n_per_defect=n_defect,
                      categories=["grass"], defect_kinds=["hole"])
        root = generate_textures(Path(tmp) / "textures", seed=0, **params)
        data = TexturesDataset(root, categories="grass", split="all", seed=0, categories_generated=["grass"],
                               **{k: v for k, v in params.items() if k != "categories"})
        tests = [r for r in data.records if r.split == "test"][: args.images]
        reference = [r for r in data.records if r.split == "train"]

        t0 = time.perf_counter()
        kind = "tiny" if args.tiny else "random"
        models = load_models(ModelChoice(clip=kind, diffusion=kind, dtype=args.dtype, device=args.device))
        t_build = time.perf_counter() - t0
        # the default run's extraction, resolved as `cfviz evaluate` resolves it (issue 20: CLIP windows
        # auto, i.e. off for the default CLIPFusion run; stores of earlier code always had them)
        try:
            from cfviz.evaluation.config import RunSpec, resolve_clip_windows

            extraction = resolve_clip_windows(RunSpec()).extraction
        except ImportError:  # code from before the setting was auto
            extraction = ExtractionConfig()
        if args.tiny:
            extraction = replace(extraction, diffusion_size=64)

        clock = StageClock(sync=torch.cuda.synchronize if str(args.device).startswith("cuda") else None)
        undo: list[Callable[[], None]] = []
        handles = clock.hook(models.pipe.unet, UNET_GROSS) + clock.hook(models.pipe.text_encoder,
                                                                         "text encoder (pipe.text_encoder forward)")
        stages = list(MODEL_STAGES)
        patch(clip_branch, "embed", clock, stages[0], undo)
        patch(models.pipe.vae, "encode", clock, stages[1], undo)
        patch(data, "load", clock, stages[4], undo)
        import cfviz.data.transforms as transforms

        patch(transforms, "clip_batch", clock, stages[5], undo)
        patch(transforms, "diffusion_batch", clock, stages[5], undo)
        patch(clip_branch, "zero_shot_scores", clock, stages[6], undo)
        patch_recorder(clock, undo)
        try:  # absent before the prefetch thread existed
            from cfviz.data.prefetch import Prefetcher

            patch(Prefetcher, "_get", clock, stages[9], undo)
        except ImportError:
            pass

        store = CaptureStore(Path(tmp) / "store", config={"bench": "e2e"})
        patch(store, "add", clock, stages[8], undo)
        t0 = time.perf_counter()
        extract(data, reference, models, extraction, store, batch_size=1, progress=False)  # warm-up, anchors
        t_warm = time.perf_counter() - t0

        load_before = load_average()
        clock.enabled = True
        main = threading.current_thread().name
        with PeakRSS() as mem:
            w0, c0 = time.perf_counter(), time.thread_time()
            report = extract(data, tests, models, extraction, store, batch_size=args.batch_size, progress=False)
            total_wall, total_cpu = time.perf_counter() - w0, time.thread_time() - c0
        clock.enabled = False
        load_after = load_average()
        bytes_per_image = sum(store[r.image_id].path.stat().st_size for r in tests) / len(tests)
        for h in handles:
            h.remove()
        for u in reversed(undo):
            u()
    assert report.new == len(tests), report

    n = len(tests)
    wall, cpu = dict(clock.wall), dict(clock.cpu)
    unet = stages[3]
    unet_threads = {t for s, t in wall if s in (UNET_GROSS, RECORDER_IN_UNET)}
    for table in (wall, cpu):  # the recorder runs inside the UNet call: move its share out of the UNet row
        for thread in unet_threads:
            gross = table.pop((UNET_GROSS, thread), 0.0)
            rec = table.pop((RECORDER_IN_UNET, thread), 0.0)
            table[(unet, thread)] = table.get((unet, thread), 0.0) + gross - rec
            rec_key = (stages[7], thread)
            table[rec_key] = table.get(rec_key, 0.0) + rec
    keys = sorted(wall, key=lambda k: (k[1] != main, stages.index(k[0]) if k[0] in stages else 99))
    model_wall = sum(v for (s, t), v in wall.items() if t == main and MODEL_STAGES.get(s))
    model_cpu = sum(v for (s, t), v in cpu.items() if t == main and MODEL_STAGES.get(s))
    timed_wall = sum(v for (s, t), v in wall.items() if t == main)
    timed_cpu = sum(v for (s, t), v in cpu.items() if t == main)
    other_wall, other_cpu = total_wall - timed_wall, total_cpu - timed_cpu
    frac_wall, frac_cpu = 1 - model_wall / total_wall, 1 - model_cpu / total_cpu

    def row(stage: str, thread: str, w: float, c: float) -> str:
        kind = "model" if MODEL_STAGES.get(stage) else "not a model"
        where = "main" if thread == main else f"{thread} (off the main path)"
        pct = (f"{100 * w / total_wall:.2f} % | {100 * c / total_cpu:.2f} %" if thread == main else "- | -")
        return f"| {stage} | {kind} | {where} | {w / n:.3f} | {c / n:.3f} | {pct} |"

    section = [
        f"## {now()}: {args.label or 'extraction by stage'}",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_e2e.py --images {args.images} --batch-size {args.batch_size} "
        f"--image-size {args.image_size} --threads {args.threads}"
        f"{f' --dtype {args.dtype}' if args.dtype != 'float32' else ''}"
        f"{f' --device {args.device}' if args.device != 'cpu' else ''}{' --label ...' if args.label else ''}`  ",
        f"Code: {git_state()}  ",
        f"Machine: {machine()}  ",
        f"1-minute load average before / after the timed extraction: {load_before} / {load_after} (2 cores "
        "shared with other work; thread CPU time leaves out the time other processes get, wall time does not).",
        "",
        f"{n} test images ({args.image_size} x {args.image_size} PNG, generated grass textures) in batches of "
        f"{args.batch_size}, through `cfviz.evaluation.extraction.extract` with the default ExtractionConfig "
        f"(timesteps {list(extraction.timesteps)}, all cross-attention layers, token {list(extraction.state_tokens)}, "
        f"features {list(extraction.features)}, CLIP windows "
        f"{'off (the default run: no method needs them)' if getattr(extraction, 'clip_windows', None) is False else list(extraction.scales)}), "
        f"{args.dtype} on {args.device}. One-off costs "
        f"(not timed below): building the random models {t_build:.1f} s; a first extract call on one reference "
        f"image (text anchors of the class, allocator warm-up) {t_warm:.1f} s.",
        "",
        "| stage | kind | thread | wall s per image | thread CPU s per image | % of the extract call (wall) | "
        "% (thread CPU) |",
        "|---|---|---|---:|---:|---:|---:|",
        *[row(s, t, wall[(s, t)], cpu.get((s, t), 0.0)) for s, t in keys],
        f"| rest of extract (planning, prompts, token specs, row selection, waiting for data, Python) | not a model "
        f"| main | {other_wall / n:.3f} | {other_cpu / n:.3f} | {100 * other_wall / total_wall:.2f} % | "
        f"{100 * other_cpu / total_cpu:.2f} % |",
        f"| **whole extract call** | | main | **{total_wall / n:.2f}** | **{total_cpu / n:.2f}** | 100 % | 100 % |",
        "",
        f"**Everything that is not a model forward: {100 * frac_wall:.2f} % of the wall time per image, "
        f"{100 * frac_cpu:.2f} % of the main thread's CPU time** (goal <= 3 %).  ",
        f"Store entry per image: {bytes_per_image:,.0f} bytes. Peak RSS above the start of the timed call: "
        f"{mb(mem.extra)}.",
    ]
    print("\n".join(section))
    if args.tiny:
        return
    previous = (RESULTS / "e2e.md").read_text() if (RESULTS / "e2e.md").exists() else ""
    if previous.startswith(TITLE):  # this script's format: keep every earlier section
        body = previous[len(TITLE):].strip()
        latest, _, older = body.partition(HISTORY)
        latest = "#" + latest.strip()  # its "## date" heading becomes a "### date" one under HISTORY
        history = latest + ("\n\n" + older.strip() if older.strip() else "")
    else:  # the first version of this file (one table, stages timed one by one): kept as it was
        lines = previous.strip().splitlines()
        history = "\n".join(["### " + lines[0].lstrip("# ")] + lines[1:]) if lines else ""
        history = history.replace("\n## ", "\n### ")
    text = "\n".join([TITLE, "", *section, "", HISTORY, "", history]) + "\n"
    path = write_results("e2e.md", text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
