"""Table 7 on any machine: every method's latency per image at batch size 1, side by side.

The CLIPFusion paper (Lee et al., TMLR 2025, Table 7) reports inference latency per method on one
A100 at batch size 1. This script puts the methods that cfviz implements side by side on *this*
machine, on the same decoded image, at batch 1, from the decoded picture to the final map on the
evaluation grid and the image score:

* ``WinCLIP`` (zero-shot) and ``WinCLIP+ 1-shot``: :class:`cfviz.clip.winclip.WinCLIP` (image,
  patch and the 2x2 / 3x3 window passes);
* ``PatchCLIP`` in its window-free form (``--patchclip-language patches``: one image pass, patch
  tokens and CLS) and in the form that averages the patch map with WinCLIP's window maps
  (``mean``: the same window passes as WinCLIP);
* ``MapDiff`` (zero-shot M_diff_L): VAE encode, text encoder and one UNet call per timestep
  (100, 261, 400) under :func:`cfviz.capture`, then the language map;
* ``CLIPFusion`` 0-shot (PatchCLIP + MapDiff, fused) and 1-shot (adds M_clip_V and M_diff_V from
  one normal reference, whose embeddings and UNet features are computed once, before timing: a
  one-off per category, reported below the table), once with each PatchCLIP form;
* ``AA-CLIP`` (:class:`cfviz.clip.aaclip.AAClip` on ViT-L-14-336 at 518 px, the released size).

Every model is a full-size architecture (``ViT-B-16-plus-240``, the SD2-inpainting UNet, VAE and
OpenCLIP-H text encoder, ``ViT-L-14-336`` with AA-CLIP's adapters) built from its config with
seeded **random weights**: they cost what real weights cost (same shapes and operations); no
detection quality is measured. Text anchors of the class are built in the warm-up (cached, as a
run caches them per class).

Method: one untimed warm-up call per method (reported), then ``--repeats`` rounds; each round
runs every method once in a rotated order (interleaved, so drift and other work on the machine
spread over all methods alike). Per method: median, best and worst of the wall seconds and of
the calling thread's CPU seconds (``--threads 1`` makes the thread's CPU time this work's own:
time the scheduler gives to other processes is not in it), the stage split of the median round,
the ratio to WinCLIP (median of the per-round ratios of thread CPU time, and of wall time), and
the peak memory above the start of the call (resident set on the CPU, ``max_memory_allocated``
on CUDA; after the warm-up the allocator reuses memory, so a small method can show 0). On CUDA every
stage boundary synchronises the device.

Run:  .venv/bin/python benchmarks/bench_latency.py [--repeats 3] [--threads 1] [--dtype float32|bfloat16]
      .venv/bin/python benchmarks/bench_latency.py --device cuda --dtype float16   # the GPU table
      .venv/bin/python benchmarks/bench_latency.py --tiny                          # smoke test, writes nothing
Writes benchmarks/results/latency.md (the new section first, earlier sections kept below).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, PeakRSS, load_average, machine, mb, now, write_results  # noqa: E402
from bench_e2e import git_state  # noqa: E402

TITLE = "# Latency per image at batch size 1, every method side by side (Table 7 on any machine)"
HISTORY = "## Earlier runs"
CATEGORY = "carpet"
EVAL_SIZE = 256  # the evaluation grid of ScoringConfig.eval_size


class Stages:
    """Wall and thread-CPU seconds per stage of the current call; a clock read syncs CUDA first."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._open: list[str] = []

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.sync()
        w, c = time.perf_counter(), time.thread_time()
        self._open.append(name)
        try:
            yield
        finally:
            self._open.pop()
            self.sync()
            dw, dc = time.perf_counter() - w, time.thread_time() - c
            self.wall[name] += dw
            self.cpu[name] += dc
            if self._open:  # a stage inside another: the outer one keeps only its own rest
                self.wall[self._open[-1]] -= dw
                self.cpu[self._open[-1]] -= dc

    def hook(self, module: Any, name: str) -> list[Any]:
        """Time ``module``'s forward calls as stage ``name`` (inside whatever stage is open)."""
        ctx: list[Any] = []

        def pre(_m: Any, _a: Any) -> None:
            cm = self(name)
            cm.__enter__()
            ctx.append(cm)

        def post(_m: Any, _a: Any, _o: Any) -> None:
            ctx.pop().__exit__(None, None, None)
        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def wrap(self, obj: Any, attr: str, name: str) -> Callable[[], None]:
        """Time calls of ``obj.attr`` as stage ``name``; returns the undo."""
        original = getattr(obj, attr)
        own = attr in vars(obj)  # an instance's method lives on its class

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return original(*args, **kwargs)
        setattr(obj, attr, timed)
        return lambda: setattr(obj, attr, original) if own else delattr(obj, attr)


class Methods:
    """Each method as ``fn(image) -> (map on the evaluation grid, image score)``, from library parts."""

    def __init__(self, models: Any, aaclip: Any, reference: Any, stages: Stages, eval_size: int, tiny: bool) -> None:
        import torch

        from cfviz.clip.patchclip import PatchCLIP
        from cfviz.clip.winclip import WinCLIP
        from cfviz.evaluation.config import ExtractionConfig, ScoringConfig

        self.models, self.aaclip, self.stage, self.size = models, aaclip, stages, eval_size
        self.extraction = ExtractionConfig(diffusion_size=64) if tiny else ExtractionConfig()
        self.scoring = ScoringConfig()
        self.min_resolution = 1 if tiny else self.scoring.language_min_resolution  # tiny latents are 8 x 8
        self.device = torch.device(models.choice.device)
        bundle, name = models.clip, CATEGORY
        self.winclip = WinCLIP(bundle, class_name=name, scales=self.extraction.scales)
        self.patch_only = PatchCLIP(bundle, class_name=name, scales=())  # --patchclip-language patches
        self.patch_windows = PatchCLIP(bundle, class_name=name, scales=self.extraction.scales)  # "mean" form
        self.one_off: dict[str, float] = {}
        t0 = time.perf_counter()
        ref = self.clip_input(reference)
        self.winclip_shot = WinCLIP(bundle, class_name=name, scales=self.extraction.scales).fit(ref)
        self.patch_only_shot = PatchCLIP(bundle, class_name=name, scales=()).fit(ref)
        self.patch_windows_shot = PatchCLIP(bundle, class_name=name, scales=self.extraction.scales).fit(ref)
        self.one_off["CLIP reference embeddings (both PatchCLIP forms and WinCLIP+)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache = self.diffusion(reference, features=True)
        self.ref_features = cache.features[self.visual_block][self.visual_step(cache)].float()
        self.one_off["reference UNet features (one MapDiff forward)"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ parts
    @property
    def visual_block(self) -> str:
        return self.scoring.visual_block

    def visual_step(self, cache: Any) -> int:
        ts = sorted(self.extraction.timesteps)
        middle = ts[len(ts) // 2]  # 261 by default (DIFT's timestep)
        return next(s.step for s in cache.steps if round(float(s.timestep)) == middle)

    def clip_input(self, image: Any) -> Any:
        import torch

        from cfviz.data.transforms import clip_batch

        with self.stage("preprocess"):
            return clip_batch([image], int(self.models.clip.image_size)).to(self.device, getattr(torch, self.models.clip.dtype))

    def clip(self, model: Any, image: Any, few_shot: bool) -> tuple[Any, Any, Any]:
        x = self.clip_input(image)
        with self.stage("CLIP encode"):
            emb = model.encode(x)
        with self.stage("CLIP scores"):
            res = model.predict_embeddings(emb, few_shot=few_shot)
        visual = getattr(res, "visual_map", None)
        return getattr(res, "language_map", None), visual, res

    def diffusion(self, image: Any, features: bool) -> Any:
        from cfviz.capture import capture
        from cfviz.capture.families import prompt_tokenizer
        from cfviz.data.transforms import diffusion_batch
        from cfviz.diffusion.forward import build_prompt, mapdiff_forward
        from cfviz.evaluation.extraction import object_name
        from cfviz.evaluation.prompt_tokens import token_specs

        ex = self.extraction
        pipe = self.models.pipe
        with self.stage("preprocess"):
            x = diffusion_batch([image], ex.diffusion_size).to(self.device)
        prompts = [build_prompt(object_name(CATEGORY), ex.state, ex.prompt_template)]
        words = ex.tokens_for(CATEGORY)
        with self.stage("noise + conditioning"):
            with capture(pipe, attention=ex.attention, features=[self.visual_block] if features else None,
                         tokens=token_specs(prompt_tokenizer(pipe), prompts, words, ex.tokens),
                         prompt=prompts) as cap:
                mapdiff_forward(pipe, x, prompts, timesteps=ex.timesteps, seed=ex.noise_seed, mask=ex.mask,
                                noise=ex.noise, image_ids=["query"], draws=ex.noise_draws, capture=cap)
        return cap.cache

    def diffusion_maps(self, image: Any, few_shot: bool) -> tuple[Any, Any]:
        from cfviz.diffusion.mapdiff import language_map, visual_map

        cache = self.diffusion(image, features=few_shot)
        with self.stage("diffusion maps"):
            lang = language_map(cache, min_resolution=self.min_resolution)
            vis = None
            if few_shot:
                query = cache.features[self.visual_block][self.visual_step(cache)].float()
                vis = visual_map(query, self.ref_features)
        return lang, vis

    def finish(self, maps: dict[str, Any], score: Any = None, alpha: float | None = None) -> tuple[Any, float]:
        """Upsample to the evaluation grid, per-image min-max, fuse, smooth, score (batch 1: no set)."""
        import numpy as np

        from cfviz.fusion import fuse, image_scores, normalize_maps, smooth, upsample

        with self.stage("fusion + score"):
            grid = {k: None if v is None else normalize_maps(upsample(v.float().cpu(), self.size), "image")
                    for k, v in maps.items()}
            if alpha is None:
                m = smooth(sum(v for v in grid.values() if v is not None), self.scoring.sigma)
            else:
                m = smooth(fuse({"language": grid["clip_L"], "visual": grid.get("clip_V")},
                                {"language": grid["diff_L"], "visual": grid.get("diff_V")}, alpha),
                           self.scoring.sigma)
            s = float(np.asarray(score.float().cpu()).reshape(-1)[0]) if score is not None else \
                float(image_scores(m, "max")[0])
        return m, s

    # ------------------------------------------------------------------ methods
    def winclip_zero(self, image: Any) -> Any:
        _, _, res = self.clip(self.winclip, image, few_shot=False)
        return self.finish({"map": res.anomaly_map}, res.image_score)

    def winclip_one(self, image: Any) -> Any:
        _, _, res = self.clip(self.winclip_shot, image, few_shot=True)
        return self.finish({"map": res.anomaly_map}, res.image_score)

    def patchclip(self, image: Any, windows: bool) -> Any:
        lang, _, res = self.clip(self.patch_windows if windows else self.patch_only, image, few_shot=False)
        return self.finish({"map": lang}, res.image_score)

    def mapdiff(self, image: Any) -> Any:
        lang, _ = self.diffusion_maps(image, few_shot=False)
        return self.finish({"map": lang})

    def clipfusion(self, image: Any, shots: int, windows: bool) -> Any:
        import numpy as np

        from cfviz.fusion import ALPHA_CLASSIFICATION, ALPHA_SEGMENTATION

        if shots:
            model = self.patch_windows_shot if windows else self.patch_only_shot
        else:
            model = self.patch_windows if windows else self.patch_only
        clip_l, clip_v, res = self.clip(model, image, few_shot=bool(shots))
        diff_l, diff_v = self.diffusion_maps(image, few_shot=bool(shots))
        m, _ = self.finish({"clip_L": clip_l, "clip_V": clip_v, "diff_L": diff_l, "diff_V": diff_v},
                           alpha=ALPHA_SEGMENTATION)
        a = ALPHA_CLASSIFICATION  # eq. 9 on one image: CLIP score and the diffusion map's max
        return m, a * float(np.asarray(res.image_score.float().cpu()).reshape(-1)[0]) + (1 - a) * float(m.max())

    def aaclip_run(self, image: Any) -> Any:
        import torch

        from cfviz.data.transforms import clip_transform

        model = self.aaclip
        with self.stage("preprocess"):
            x = clip_transform(image, model.image_size, mean=model.bundle.mean, std=model.bundle.std)[None]
            x = x.to(self.device, getattr(torch, model.bundle.dtype))
        with self.stage("AA-CLIP"):
            res = model.predict(x, CATEGORY)
        return self.finish({"map": res.anomaly_map}, res.image_score)

    def table(self) -> dict[str, tuple[str, Callable[[Any], Any]]]:
        """Row name -> (settings said in the table, callable)."""
        ts = ", ".join(str(t) for t in self.extraction.timesteps)
        diff = f"SD2-inpainting UNet at timesteps {ts}, all attn2 layers captured"
        rows = {
            "WinCLIP (0-shot)": ("image + patch tokens + 2x2/3x3 window passes", self.winclip_zero),
            "WinCLIP+ (1-shot)": ("as WinCLIP, + reference memory banks", self.winclip_one),
            "PatchCLIP, patch tokens (0-shot)": ("`--patchclip-language patches --clip-windows off`: one image pass",
                                                 lambda im: self.patchclip(im, windows=False)),
            "PatchCLIP, patches + windows (0-shot)": ("`--patchclip-language mean`: WinCLIP's window passes too",
                                                      lambda im: self.patchclip(im, windows=True)),
            "MapDiff (0-shot, M_diff_L)": (diff, self.mapdiff),
            "CLIPFusion 0-shot, patch tokens": (f"PatchCLIP patches + MapDiff ({diff})",
                                                lambda im: self.clipfusion(im, 0, windows=False)),
            "CLIPFusion 1-shot, patch tokens": (f"+ M_clip_V, M_diff_V of {self.visual_block} at the middle timestep",
                                                lambda im: self.clipfusion(im, 1, windows=False)),
            "CLIPFusion 0-shot, patches + windows": ("PatchCLIP mean form + MapDiff",
                                                     lambda im: self.clipfusion(im, 0, windows=True)),
            "CLIPFusion 1-shot, patches + windows": ("PatchCLIP mean form + MapDiff, + visual maps",
                                                     lambda im: self.clipfusion(im, 1, windows=True)),
        }
        if self.aaclip is not None:
            rows["AA-CLIP (0-shot)"] = (f"ViT-L-14-336 at {self.aaclip.image_size} px + adapters (random init)",
                                        self.aaclip_run)
        return rows


ANOMALIB = "anomalib WinCLIP (external reference)"
ANOMALIB_ENV = Path(__file__).resolve().parent.parent / "build" / "venv-anomalib" / "bin" / "python"


class AnomalibRow:
    """anomalib's WinCLIP on cfviz's CLIP weights and CLIP input, one process per round (_anomalib_winclip.py).

    The process loads the model (not timed), runs one untimed warm-up call, then one timed call: so
    each round of the table has one anomalib call too, interleaved with cfviz's methods.
    """

    def __init__(self, python: str, models: Any, image: Any, folder: Path, args: argparse.Namespace) -> None:
        from safetensors.torch import save_file

        from cfviz.data.transforms import clip_batch

        self.python, self.args = python, args
        self.weights, self.input = folder / "clip.safetensors", folder / "input.safetensors"
        state = {k: v.detach().float().contiguous() for k, v in models.clip.model.state_dict().items()}
        save_file(state, str(self.weights))
        save_file({"image": clip_batch([image], int(models.clip.image_size)).float().contiguous()}, str(self.input))
        self.version = ""
        self.warm: list[float] = []

    def __call__(self) -> tuple[float, float]:
        import json
        import subprocess

        script = Path(__file__).resolve().parent / "_anomalib_winclip.py"
        out = subprocess.run([self.python, str(script), str(self.weights), str(self.input), "--calls", "1",
                              "--threads", str(self.args.threads), "--dtype", self.args.dtype],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        self.version = res["anomalib"]
        self.warm.append(res["warm_up"])
        return res["wall"][0], res["cpu"][0]


def anomalib_python(args: argparse.Namespace) -> tuple[str | None, str]:
    """The interpreter of an ``anomalib[clip]`` environment, or ``None`` and why the row is absent."""
    if args.tiny:
        return None, "anomalib's WinCLIP: not run in --tiny mode (it is a full-size ViT-B-16-plus-240)."
    if str(args.device).startswith("cuda"):
        return None, "anomalib's WinCLIP: timed on the CPU only by this script."
    python = args.anomalib_python or (str(ANOMALIB_ENV) if ANOMALIB_ENV.exists() else None)
    if python is None:
        return None, ("anomalib's WinCLIP: not timed: no `anomalib[clip]` environment. Make one with "
                      "`python3 -m venv build/venv-anomalib && build/venv-anomalib/bin/pip install torch==2.14.1 "
                      "torchvision==0.29.1 'anomalib[clip]'` (it pins its own open_clip, so not in cfviz's venv) "
                      "or pass --anomalib-python.")
    return python, ""


def summarise(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each runs every method once)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: thread CPU time is this work's)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the decoded test image (MVTec: 1024)")
    parser.add_argument("--no-aaclip", action="store_true", help="leave out the AA-CLIP row (ViT-L-14-336)")
    parser.add_argument("--anomalib-python", default=None, help="python of an anomalib[clip] environment "
                        "(default: build/venv-anomalib/bin/python when it exists) for the external WinCLIP row")
    parser.add_argument("--label", default="", help="what this run measures (kept with its section)")
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny models; prints, writes nothing")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from cfviz.clip.aaclip.model import AAClip
    from cfviz.evaluation.config import ModelChoice
    from cfviz.evaluation.models import load_models
    from cfviz.models import random_clip, tiny_clip

    cuda = str(args.device).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rng = np.random.default_rng(0)
    size = 64 if args.tiny else args.image_size
    image = (rng.random((size, size, 3)) * 255).astype(np.uint8)  # a decoded picture
    reference = (rng.random((size, size, 3)) * 255).astype(np.uint8)

    t0 = time.perf_counter()
    kind = "tiny" if args.tiny else "random"
    models = load_models(ModelChoice(clip=kind, diffusion=kind, dtype=args.dtype, device=args.device))
    aaclip = None
    if not args.no_aaclip:
        dtype = getattr(torch, args.dtype)
        bundle = (tiny_clip(seed=0, device=args.device, dtype=dtype, like="ViT-L-14-336") if args.tiny else
                  random_clip("ViT-L-14-336", seed=0, device=args.device, dtype=dtype))
        aaclip = AAClip(bundle, seed=0)
    t_build = time.perf_counter() - t0

    stages = Stages(sync)
    handles = (stages.hook(models.pipe.text_encoder, "text encoder") + stages.hook(models.pipe.unet, "UNet (+ recorder)"))
    undo = [stages.wrap(models.pipe.vae, "encode", "VAE encode")]
    t0 = time.perf_counter()
    methods = Methods(models, aaclip, reference, stages, EVAL_SIZE, args.tiny)
    t_refs = time.perf_counter() - t0
    rows = methods.table()
    names = list(rows)
    external, absent = anomalib_python(args)
    scratch = tempfile.TemporaryDirectory()
    anomalib = AnomalibRow(external, models, image, Path(scratch.name), args) if external else None

    warm: dict[str, float] = {}
    for name in names:  # warm-up: text anchors per class, allocator, kernels
        w = time.perf_counter()
        rows[name][1](image)
        sync()
        warm[name] = time.perf_counter() - w

    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    split: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = defaultdict(list)
    peak: dict[str, int] = defaultdict(int)
    load_before = load_average()
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotated each round
        for name in order:
            stages.reset()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            with PeakRSS() as mem:
                sync()
                w, c = time.perf_counter(), time.thread_time()
                rows[name][1](image)
                sync()
                dw, dc = time.perf_counter() - w, time.thread_time() - c
            wall[name].append(dw)
            cpu[name].append(dc)
            split[name].append((dict(stages.wall), dict(stages.cpu)))
            used = torch.cuda.max_memory_allocated() - base if cuda else mem.extra
            peak[name] = max(peak[name], used)
        if anomalib is not None:
            dw, dc = anomalib()
            wall[ANOMALIB].append(dw)
            cpu[ANOMALIB].append(dc)
        print(f"round {r + 1}/{args.repeats} done", flush=True)
    load_after = load_average()
    scratch.cleanup()
    for h in handles:
        h.remove()
    for u in undo:
        u()

    ref = "WinCLIP (0-shot)"
    clock = "wall" if cuda else "thread CPU"
    main_t = wall if cuda else cpu

    def ratio(name: str, table: dict[str, list[float]]) -> float:
        return statistics.median(a / b for a, b in zip(table[name], table[ref]))

    stage_names: list[str] = []
    for name in names:
        for s in split[name][0][0]:
            if s not in stage_names:
                stage_names.append(s)

    def median_round(name: str) -> dict[str, float]:
        i = int(np.argsort(main_t[name])[len(main_t[name]) // 2])
        w, c = split[name][i]
        use = dict(w if cuda else c)
        use["other"] = max(0.0, main_t[name][i] - sum(use.values()))
        return use

    rounds = {name: median_round(name) for name in names}
    shown = [s for s in stage_names + ["other"] if any(rounds[n].get(s, 0.0) >= 0.005 for n in names)]

    dev = f"{args.device} ({torch.cuda.get_device_name(args.device)})" if cuda else "cpu"
    section = [
        f"## {now()}: {args.label or f'{args.dtype} on {args.device}, {args.threads} thread(s)'}",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_latency.py --repeats {args.repeats} --threads {args.threads}"
        f"{f' --dtype {args.dtype}' if args.dtype != 'float32' else ''}"
        f"{f' --device {args.device}' if args.device != 'cpu' else ''}"
        f"{f' --image-size {args.image_size}' if args.image_size != 1024 else ''}"
        f"{' --no-aaclip' if args.no_aaclip else ''}`  ",
        f"Code: {git_state()}  ",
        f"Machine: {machine()}; device {dev}, {args.dtype}, torch threads {args.threads}  ",
        f"1-minute load average before / after the timed rounds: {load_before} / {load_after}"
        + ("" if cuda else " (2 cores shared with other work: thread CPU time leaves out what other processes "
                           "get, wall time does not)."),
        "",
        f"Batch size 1; one decoded {size} x {size} RGB image; maps end on the {EVAL_SIZE} x {EVAL_SIZE} evaluation "
        f"grid with the image score. **Random weights** (full-size architectures built from their configs): "
        "timings are those of the real models, detection quality is not measured. "
        f"{args.repeats} interleaved rounds after one warm-up call per method. Ratios are the median of the "
        "per-round ratios to WinCLIP (0-shot), the paper's comparison.",
        "",
        f"| method | settings | {clock} s, median (best-worst) | wall s, median | ratio to WinCLIP ({clock}) | "
        f"ratio (wall) | peak {'CUDA memory' if cuda else 'RSS'} above the call's start |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        med, lo, hi = summarise(main_t[name])
        section.append(f"| {name} | {rows[name][0]} | {med:.2f} ({lo:.2f}-{hi:.2f}) | "
                       f"{statistics.median(wall[name]):.2f} | {ratio(name, main_t):.2f} | {ratio(name, wall):.2f} | "
                       f"{mb(peak[name])} |")
    if anomalib is not None:
        med, lo, hi = summarise(main_t[ANOMALIB])
        section.append(f"| {ANOMALIB} | anomalib {anomalib.version} `WinClipModel`, cfviz's random CLIP weights "
                       f"loaded (strict), from the 240 px CLIP input to its 240 px map; own process, one call per "
                       f"round after a warm-up | {med:.2f} ({lo:.2f}-{hi:.2f}) | {statistics.median(wall[ANOMALIB]):.2f} "
                       f"| {ratio(ANOMALIB, main_t):.2f} | {ratio(ANOMALIB, wall):.2f} | - |")
    section += [
        "",
        f"Stage split of each method's median round ({clock} s; a blank is a stage the method does not run). "
        "CLIP encode: image pass (and window passes where the form has them); CLIP scores: text-anchor "
        "products, window aggregation and memory-bank distances; noise + conditioning: noising, inpainting "
        "conditioning and capture set-up; UNet: the UNet calls with the capture recorder inside; diffusion maps: "
        "M_diff_L (and M_diff_V); fusion + score: upsampling to the grid, per-image min-max (batch 1 has no set "
        "to normalise over), fusion, smoothing, score; other: the rest of the call.",
        "",
        "| method | " + " | ".join(shown) + " |",
        "|---|" + "---:|" * len(shown),
        *[f"| {n} | " + " | ".join(f"{rounds[n][s]:.2f}" if rounds[n].get(s, 0.0) >= 0.005 else ""
                                   for s in shown) + " |" for n in names],
        "",
        f"One-off costs (not in the table): building every model {t_build:.1f} s; the 1-shot references "
        f"(computed once per category) {t_refs:.1f} s in all: "
        + "; ".join(f"{k} {v:.1f} s" for k, v in methods.one_off.items()) + ".  ",
        "Warm-up call per method (excluded): " + "; ".join(f"{k} {v:.2f} s" for k, v in warm.items()) + ".  ",
        absent or f"anomalib's warm-up calls (excluded): {', '.join(f'{w:.2f} s' for w in anomalib.warm)}.",
    ]
    print("\n".join(section))
    if args.tiny:
        return
    previous = (RESULTS / "latency.md").read_text() if (RESULTS / "latency.md").exists() else ""
    history = ""
    if previous.startswith(TITLE):
        body = previous[len(TITLE):].strip()
        latest, _, older = body.partition(HISTORY)
        history = ("#" + latest.strip() + ("\n\n" + older.strip() if older.strip() else "")).strip()
    text = "\n".join([TITLE, "", *section, "", HISTORY, "", history]) + "\n"
    print(f"\nwrote {write_results('latency.md', text)}")


if __name__ == "__main__":
    main()
