"""Seconds and peak memory per image by model dtype, channels_last and torch.compile, full-size architectures, CPU.

The extraction's model work per image, split in its two halves, each in a **fresh process per
setting** (so that ``ru_maxrss`` and the RSS figures belong to that setting alone, and so that a
process stays under ~6 GiB: the float32 SD2 pipeline alone holds 5.3 GB of weights):

* diffusion: the SD2-inpainting pipeline (UNet 866M, VAE 84M, OpenCLIP-H text encoder 340M)
  built from its config with seeded random weights (:func:`cfviz.models.random_inpaint_pipeline`),
  the speed options applied as ``load_models`` applies them (:func:`cfviz.models.speed.apply_speed_options`),
  then per image what ``extract`` runs: ``mapdiff_forward`` at the default timesteps under
  ``cfviz.capture`` (all ``attn2`` layers, the ``damage`` token, ``up_blocks.1`` features);
* CLIP: ``ViT-B-16-plus-240`` with random weights, per image ``clip_branch.embed`` (image,
  patches, 365 windows) and the zero-shot scores (text anchors built in the warm-up).

Random weights time like real ones (same shapes and kernels). Each process warms up (CLIP: one
image, which builds the text anchors; diffusion: one 64 px image, which creates the kernels'
state cheaply), then times ``--images`` images one by one with one torch thread: **thread CPU
seconds** (only this work, whatever else the machine runs) and wall seconds. Settings run
interleaved: round 1 in the listed order, round 2 reversed, and so on. Memory: the weights'
bytes; RSS after building above the process's RSS after imports; the peak RSS sampled during the
timed images above the RSS just before them (activations and workspace per image); ``ru_maxrss``
above the RSS after imports (includes building: weights are built in float32, then cast).

The first image's recorded maps of every setting are compared with float32's (max abs difference
of the attention probabilities, relative L2 difference of the features).

Run:  .venv/bin/python benchmarks/bench_dtype.py [--images 2] [--rounds 1] [--size 512] [--compile]
Writes benchmarks/results/dtype.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PeakRSS, load_average, machine, mb, now, timed_thread, write_results  # noqa: E402

#: name -> (dtype, channels_last, compile)
SETTINGS: dict[str, tuple[str, bool, str]] = {
    "float32": ("float32", False, "off"),
    "bfloat16": ("bfloat16", False, "off"),
    "float32 + channels_last": ("float32", True, "off"),
    "bfloat16 + channels_last": ("bfloat16", True, "off"),
    "float32 + compile (inductor)": ("float32", False, "inductor"),
    "bfloat16 + compile (inductor)": ("bfloat16", False, "inductor"),
}
GIB = 2**30


def _rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def _image(seed: int) -> Any:
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))  # MVTec's size


# ------------------------------------------------------------------------------------------ worker


def worker(part: str, setting: str, images: int, size: int, threads: int, out: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    import cfviz
    from cfviz.data.transforms import clip_batch, diffusion_batch
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward
    from cfviz.experiments import ExtractionConfig, clip_branch
    from cfviz.models import random_clip, random_inpaint_pipeline
    from cfviz.models.speed import apply_speed_options, check_compile

    dtype_name, channels_last, compile_ = SETTINGS[setting]
    dtype = getattr(torch, dtype_name)
    extraction = ExtractionConfig(diffusion_size=size)
    prompts = [build_prompt("grass", extraction.state, extraction.prompt_template)]
    rss0 = _rss()
    t0 = time.perf_counter()
    tiny = os.environ.get("CFVIZ_BENCH_TINY") == "1"  # --tiny: smoke test of this script
    if part == "clip":
        if tiny:
            from cfviz.models import tiny_clip

            bundle = tiny_clip(seed=0, dtype=dtype)
        else:
            bundle = random_clip("ViT-B-16-plus-240", seed=0, dtype=dtype)
        modules = [bundle.model]

        def one(seed: int, side: int) -> Any:
            batch = clip_batch([_image(seed)], bundle.image_size)
            emb = clip_branch.embed(bundle, batch, extraction)
            clip_branch.zero_shot_scores(bundle, emb, "grass", extraction)
            return {k: v.float() for k, v in emb.items()}
    else:
        check_compile(compile_, "cpu")
        if tiny:
            from cfviz.models import tiny_inpaint_pipeline

            pipe = tiny_inpaint_pipeline(seed=0, dtype=dtype)
        else:
            pipe = random_inpaint_pipeline(seed=0, dtype=dtype)
        apply_speed_options(pipe, channels_last=channels_last, compile=compile_)
        modules = [pipe.unet, pipe.vae, pipe.text_encoder]

        def one(seed: int, side: int) -> Any:
            images = diffusion_batch([_image(seed)], side)
            with torch.inference_mode(), cfviz.capture(pipe, attention=extraction.attention,
                                                       features=list(extraction.features), tokens=["damage"],
                                                       prompt=prompts, dtype=torch.float32) as cap:
                mapdiff_forward(pipe, images, prompts, timesteps=extraction.timesteps, seed=0)
            found = {f"attn/{n}/{t}": v for n, per in cap.cache.attention.items() for t, v in per.items()}
            found.update({f"feat/{n}/{t}": v for n, per in cap.cache.features.items() for t, v in per.items()})
            return found
    build_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    rss_loaded = _rss()
    w0, c0 = time.perf_counter(), time.thread_time()
    # warm-up: CLIP builds the text anchors; compile compiles (at the timed size: another shape would recompile)
    one(100, size if part == "clip" or compile_ != "off" else 64)
    warm = (time.perf_counter() - w0, time.thread_time() - c0)
    walls, cpus = [], []
    rss_before = _rss()
    with PeakRSS() as mem:
        for i in range(images):
            wall, cpu, maps = timed_thread(lambda i=i: one(i, size))
            walls.append(wall)
            cpus.append(cpu)
            if i == 0:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in maps.items()}, str(out))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"part": part, "setting": setting, "wall": walls, "cpu": cpus, "build_s": build_s, "warm": warm,
            "weights": weights, "loaded_above_start": rss_loaded - rss0, "peak_above_before": mem.peak - rss_before,
            "maxrss_above_start": maxrss - rss0, "load": load_average()}


# ------------------------------------------------------------------------------------------ parent


def wait_for_memory(need: float, limit_s: float = 900) -> float:
    """Wait until ``need`` bytes are available (others share the machine); return the available bytes."""
    import psutil

    deadline = time.monotonic() + limit_s
    while True:
        free = psutil.virtual_memory().available
        if free >= need or time.monotonic() > deadline:
            return free
        print(f"  waiting: {free / GIB:.1f} GiB available, {need / GIB:.1f} needed", flush=True)
        time.sleep(20)


def run_worker(part: str, setting: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    need = (6.5 if SETTINGS[setting][0] == "float32" else 4.0) * GIB if part == "diffusion" else 2.0 * GIB
    need = 1.0 * GIB if args.tiny else need
    free = wait_for_memory(need)
    if free < need:  # never push a shared machine into swapping or the OOM killer
        print(f"{part:9s} {setting}: skipped, {free / GIB:.1f} GiB available after waiting", flush=True)
        return {"part": part, "setting": setting, "error": f"skipped: only {free / GIB:.1f} GiB of memory available"}
    cmd = [sys.executable, __file__, "--worker", part, "--setting", setting, "--images", str(args.images),
           "--size", str(args.size), "--threads", str(args.threads), "--maps", str(out)]
    print(f"{part:9s} {setting} (load {load_average()}, {free / GIB:.1f} GiB available)", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"part": part, "setting": setting, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"          cpu s/image {[round(c, 2) for c in result['cpu']]}, "
          f"wall {[round(w, 1) for w in result['wall']]}, "
          f"peak per image {mb(result['peak_above_before'])}", flush=True)
    return result


def compare(a: Path, b: Path) -> tuple[float, float]:
    """(max |attention difference|, max relative L2 difference of a feature map) of two saved map sets."""
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    attn = [float((x[k] - y[k]).abs().max()) for k in x if k.startswith("attn/")]
    feat = [float((x[k] - y[k]).norm() / x[k].norm()) for k in x if k.startswith(("feat/", "clip_emb/"))]
    return max(attn, default=float("nan")), max(feat, default=float("nan"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2, help="timed images per process")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (the order reverses each round)")
    p.add_argument("--size", type=int, default=512, help="diffusion image side (the default extraction's 512)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--compile", action="store_true", help="also time compile=inductor (minutes of compilation)")
    p.add_argument("--settings", nargs="+", default=None, help="settings to run (default: all but compile)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument("--tiny", action="store_true", help="smoke test of this script: tiny models; writes nothing")
    p.add_argument("--worker", choices=("clip", "diffusion"), help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    p.add_argument("--maps", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.setting, args.images, args.size, args.threads, Path(args.maps))))
        return

    if args.tiny:
        os.environ["CFVIZ_BENCH_TINY"] = "1"
    settings = args.settings or [s for s in SETTINGS if args.compile or "compile" not in s]
    load_start, started = load_average(), now()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        maps: dict[tuple[str, str], Path] = {}
        for r in range(args.rounds):
            order = settings if r % 2 == 0 else settings[::-1]
            clip_done: set[str] = set()
            for setting in order:
                parts = ["diffusion"]
                if SETTINGS[setting][0] not in clip_done:  # CLIP: once per dtype and round (no channels_last
                    clip_done.add(SETTINGS[setting][0])  # or compile there)
                    parts.insert(0, "clip")
                for part in parts:
                    out = Path(tmp) / f"{part}-{setting.replace(' ', '_')}-{r}.safetensors"
                    res = run_worker(part, setting, args, out)
                    results.setdefault((part, setting), []).append(res)
                    if "error" not in res:
                        maps.setdefault((part, setting), out)
        diffs = {}
        for (part, setting), path in maps.items():
            # an option (channels_last, compile) against its dtype without it; a dtype against float32
            plain = SETTINGS[setting][0]
            ref = maps.get((part, plain)) if setting != plain else None
            ref = ref if ref is not None else maps.get((part, "float32"))
            if ref is not None and setting != "float32":
                diffs[(part, setting)] = compare(ref, path)
    write_report(args, settings, results, diffs, started, load_start)


def _stats(runs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    xs = [x for r in runs if "error" not in r for x in r[key]]
    return (min(xs), statistics.median(xs)) if xs else (float("nan"), float("nan"))


def write_report(args: argparse.Namespace, settings: list[str], results: dict, diffs: dict, started: str,
                 load_start: str) -> None:
    clip_by_dtype = {}
    for (part, setting), runs in results.items():
        if part == "clip":
            clip_by_dtype.setdefault(SETTINGS[setting][0], []).extend(runs)
    rows = []
    for setting in settings:
        runs = results.get(("diffusion", setting), [])
        ok = [r for r in runs if "error" not in r]
        if not ok:
            err = runs[0]["error"] if runs else "not run"
            rows.append(f"| {setting} | failed: {err} | | | | | | | |")
            continue
        d_best, d_med = _stats(ok, "cpu")
        w_best, w_med = _stats(ok, "wall")
        c_best, c_med = _stats(clip_by_dtype.get(SETTINGS[setting][0], []), "cpu")
        peak = max(r["peak_above_before"] for r in ok)
        loaded = max(r["loaded_above_start"] for r in ok)
        maxrss = max(r["maxrss_above_start"] for r in ok)
        attn, feat = diffs.get(("diffusion", setting), (float("nan"), float("nan")))
        same = "(reference)" if setting == "float32" else f"{attn:.1e} / {feat:.1e}"
        rows.append(f"| {setting} | **{d_best + c_best:.1f}** / {d_med + c_med:.1f} | {d_best:.1f} / {d_med:.1f} | "
                    f"{c_best:.1f} / {c_med:.1f} | {w_best:.0f} / {w_med:.0f} | {mb(ok[0]['weights'])} | "
                    f"{mb(loaded)} | **{mb(peak)}** | {mb(maxrss)} | {same} |")
    clip_rows = []
    for dtype, runs in clip_by_dtype.items():
        ok = [r for r in runs if "error" not in r]
        if ok:
            b, m = _stats(ok, "cpu")
            feat = next((diffs[k][1] for k in diffs if k[0] == "clip" and SETTINGS[k[1]][0] == dtype), float("nan"))
            clip_rows.append(f"| {dtype} | {b:.2f} / {m:.2f} | {mb(ok[0]['weights'])} | "
                             f"{mb(max(r['peak_above_before'] for r in ok))} | "
                             f"{'(reference)' if dtype == 'float32' else f'{feat:.1e}'} |")
    done = {s: [r for r in results.get(("diffusion", s), []) if "error" not in r] for s in settings}
    builds = ", ".join(f"{s}: {statistics.median([r['build_s'] for r in runs]):.0f} s"
                       for s, runs in done.items() if runs)
    warms = ", ".join(f"{s}: {statistics.median([r['warm'][1] for r in runs]):.0f} s"
                      for s, runs in done.items() if runs)
    loads = [r["load"] for runs in results.values() for r in runs if "load" in r]
    command = (f".venv/bin/python benchmarks/bench_dtype.py --images {args.images} --rounds {args.rounds} "
               f"--size {args.size} --threads {args.threads}" + (" --compile" if args.compile else "")
               + (f" --settings {' '.join(repr(s) for s in args.settings)}" if args.settings else ""))
    text = "\n".join([
        "# Seconds and peak memory per image by dtype, channels_last and compile: full-size architectures, CPU",
        "",
        f"Command: `{command}`  ",
        f"Date: {started} (finished {now()})  ",
        f"Machine: {machine()}; {args.threads} torch thread(s) per worker process  ",
        f"1-minute load average at the start: {load_start}; at the end of each worker: {', '.join(loads)} "
        "(2 cores shared with other agents: thread CPU seconds are the figures to compare; wall seconds are "
        "shown for completeness).",
        "",
        f"Per image: the SD2-inpainting pipeline's MapDiff pass at {args.size} px (VAE encode, text encoder, UNet x "
        "3 timesteps under cfviz.capture) plus the ViT-B-16-plus-240 CLIP pass (image, patches, 365 windows, "
        f"zero-shot scores), random weights, batch 1, {args.images} timed image(s) per process after a warm-up, "
        f"{args.rounds} interleaved round(s) (round 2 reversed). Fresh process per setting and part.",
        "",
        "| setting | **CPU s per image** (best / median), diffusion + CLIP | diffusion | CLIP (its dtype) | wall s, "
        "diffusion (best / median) | weights (diffusion) | RSS after build, above start | **peak RSS per image** "
        "above the loaded process | ru_maxrss above start (incl. building in float32) | vs its reference (an "
        "option: its dtype without it, when run; a dtype: float32): max abs attention diff / feature rel. L2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "CLIP alone:",
        "",
        "| dtype | CPU s per image (best / median) | weights | peak RSS per image above loaded | vs float32: "
        "embeddings rel. L2 |",
        "|---|---:|---:|---:|---:|",
        *clip_rows,
        "",
        f"Building the diffusion models (seconds, median): {builds}. Warm-up (thread CPU s; with compile, the "
        f"compilation): {warms}.",
        "",
    ])
    print(text)
    if args.tiny:
        return
    from _common import RESULTS

    previous = (RESULTS / "dtype.md").read_text() if (RESULTS / "dtype.md").exists() else ""
    older = previous.split(READING, 1)
    history = older[0].strip() + older[1].replace(HISTORY, "") if len(older) == 2 else previous.strip()
    history = history.strip().replace("\n# ", "\n### ").replace("\n## ", "\n### ")
    history = ("### " + history.lstrip("# ")) if history else ""
    path = write_results("dtype.md", text + READING + (f"\n{HISTORY}\n\n{history}\n" if history else ""))
    print(f"wrote {path}")


HISTORY = "## Earlier runs"
READING = """
Reading:

* float16 and bfloat16 are for GPUs (tensor cores; half the weights' memory and bandwidth); on a CPU
  they run too (this CPU has AVX512-BF16, so bfloat16 matmuls are native; float16 is not in this
  table: like bfloat16 it only proves the path here). float32 stays the CPU default.
* The peak RSS per image is what one more image in flight costs (activations, attention workspace, the
  capture records), on top of the weights; it is the figure to size batches with.
* channels_last and compile change the kernels, so the numbers change in the last bits (see the
  difference column); they are part of a store's identity (`ModelChoice.identity`).
"""


if __name__ == "__main__":
    main()
