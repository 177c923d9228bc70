"""Capture overhead on the full-size SDXL UNet, SD3-medium MMDiT and FLUX.1 blocks (random weights), CPU.

The method of ``bench_capture.py`` (SD2), per family:

* the same capture: every text-attending layer (SDXL: 70 ``attn2``; SD3: 24 joint; FLUX: joint
  and single-stream), 8 token positions, head mean, fp16 storage, plus one feature block for the
  UNet (none for the transformers, whose blocks output token sequences, not maps);
* one torch thread and **per-thread CPU time**, plain and captured forwards **interleaved** in
  pairs with the order alternating; the ratio as best / best and as the median of the per-pair
  ratios, the load average before and after; the recorder's own CPU time measured from inside
  captured forwards (``bench_capture.recorder_seconds``), which the load cannot disturb;
* the exactness checks: the output under capture is bit-identical to the plain one, and every
  attention processor is back afterwards.

Models (``cfviz.models.full_size``; one at a time, freed before the next): the whole SDXL base
UNet (2.57 B parameters, ~10.3 GB in fp32), SD3-medium (2.03 B) and a stated fraction of FLUX.1-dev
at full width (default 2 joint + 4 single-stream blocks of 19 + 38, the model's 1:2 mix; the whole
model is ~48 GB in fp32). Latent sizes (``--*-latent``, several allowed) are chosen so that a
forward takes seconds on one CPU thread; text lengths are stated in the results.

Run:  .venv/bin/python benchmarks/bench_capture_families.py [--repeats 11] [--families sdxl sd3 flux]
Writes benchmarks/results/capture_families.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import cfviz  # noqa: E402
from _common import PairedTimes, interleaved_pairs, load_average, machine, median, now, write_results  # noqa: E402
from bench_capture import GOAL, TOKENS, recorder_seconds  # noqa: E402  (the SD2 benchmark's method)

#: Feature blocks recorded per family (the UNet's middle up block; transformers: none).
FEATURES: dict[str, list[str] | None] = {"sdxl": ["up_blocks.1"], "sd3": None, "flux": None}


@dataclass
class SizeResult:
    """One family at one latent size."""

    latent: int
    image_tokens: int
    text_tokens: int
    times: PairedTimes
    inside: list[float]
    identical: bool
    max_diff: float
    restored: bool
    bytes_per_step: int
    reprojected: int  #: text layers whose query the recorder projected again (0: all borrowed)


@dataclass
class FamilyResult:
    name: str
    label: str
    layers: str
    parameters: int
    full_parameters: int
    text_layers: int
    kinds: dict[str, int]
    build_s: float
    sizes: list[SizeResult] = field(default_factory=list)


def wait_for_memory(gib: float, patience_s: float = 1800) -> None:
    """Block until ``gib`` GiB are available (other agents share the machine's memory)."""
    import psutil

    deadline = time.monotonic() + patience_s
    while psutil.virtual_memory().available < gib * 2**30:
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up: less than {gib:.0f} GiB available for {patience_s:.0f} s")
        print(f"waiting for {gib:.0f} GiB free (now {psutil.virtual_memory().available / 2**30:.1f})", flush=True)
        time.sleep(30)


def tokenizers(name: str, text_tokens: int) -> Any:
    """Offline tokenizers that label the recorded positions (the benchmark selects positions, not words)."""
    from cfviz.models import clip_tokenizer
    from cfviz.models.families import tiny_t5_tokenizer

    if name == "sdxl":
        return clip_tokenizer()
    if name == "sd3":
        return {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer(text_tokens - 77)}
    return tiny_t5_tokenizer(text_tokens)


def bench_family(name: str, layers: Any, latents: list[int], text_tokens: int, repeats: int,
                 n_inside: int) -> FamilyResult:
    from cfviz.capture.session import locate_text_attention
    from cfviz.models.full_size import (FULL_SIZE_DENOISERS, full_size_config, full_size_denoiser,
                                        full_size_inputs, parameter_count)

    full = parameter_count(full_size_denoiser(name, device="meta"))
    part = parameter_count(full_size_denoiser(name, layers=layers, device="meta"))
    wait_for_memory(part * 4 / 2**30 + 4)  # the weights and ~4 GiB for activations and the rest: SDXL ~14 GiB
    t0 = time.perf_counter()
    model = full_size_denoiser(name, layers=layers, seed=0)
    build_s = time.perf_counter() - t0
    config = full_size_config(name, layers)
    spec = FULL_SIZE_DENOISERS[name]
    counts = ", ".join(f"{k} {config[k]}" for k in spec.layer_keys) or "whole"
    located = locate_text_attention(model)
    kinds: dict[str, int] = {}
    for _, kind in located.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    result = FamilyResult(name, spec.label, counts, part, full, len(located), kinds, build_s)
    tok = tokenizers(name, text_tokens)
    features = FEATURES[name]

    for latent in latents:
        kw = full_size_inputs(name, model, size=latent, text_length=text_tokens)
        image_tokens = (latent // 2) ** 2 if name in ("sd3", "flux") else latent * latent

        def make_capture():
            return cfviz.capture(model, features=features, tokens=TOKENS, tokenizer=tok)

        def plain():
            return model(**kw).sample

        def captured():
            with make_capture() as cap:
                out = model(**kw).sample
            return cap, out

        # exactness (and warm-up): bit-identical output, every processor back afterwards; and
        # whether the recorder borrowed each layer's query or projected it again (to_q calls)
        before = dict(model.attn_processors)
        q_calls = [0]
        hooks = [m.to_q.register_forward_hook(lambda *_: q_calls.__setitem__(0, q_calls[0] + 1))
                 for m, _ in located.values()]
        reference = plain()
        plain_calls, q_calls[0] = q_calls[0], 0
        cap, out = captured()
        reprojected = q_calls[0] - plain_calls
        for h in hooks:
            h.remove()
        after = model.attn_processors
        restored = before.keys() == after.keys() and all(after[k] is v for k, v in before.items())
        identical = bool(torch.equal(reference, out))
        max_diff = float((reference - out).abs().max())
        nbytes = cap.cache.nbytes
        del cap, out, reference

        times = interleaved_pairs(plain, captured, repeats, label=f"{name} latent {latent}: ")
        inside = [recorder_seconds(model, plain, make_capture) for _ in range(n_inside)]
        result.sizes.append(SizeResult(latent, image_tokens, text_tokens, times, inside, identical, max_diff,
                                       restored, nbytes, reprojected))
    del model
    gc.collect()
    return result


def report(results: list[FamilyResult], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Capture overhead: full-size SDXL, SD3 and FLUX denoisers, random weights, CPU",
        "",
        f"Command: `{command}`  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}  ",
        "Method: that of `bench_capture.py` (SD2): one torch thread, per-thread CPU time (leaves out the time "
        "other processes get; wall time does not), plain and captured forwards interleaved in pairs, order "
        f"alternating, {args.repeats} pairs per row; capture of every text-attending layer, {len(TOKENS)} token "
        "positions, head mean, fp16 storage, feature block `up_blocks.1` for SDXL, none for the transformers. "
        "fp32 weights and inputs, batch 1, seeded random weights (`cfviz.models.full_size`).",
        "",
        "| family | model (layers built) | parameters | text layers | latent (image) | image + text tokens "
        "| plain forward, best / median (s) | **ratio, best / median of pairs** | recorder's own share "
        "| bit-identical, restored | queries projected again | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        kinds = ", ".join(f"{n} {k}" for k, n in r.kinds.items())
        share = f"{r.parameters:,}"
        if r.parameters != r.full_parameters:
            share += f" ({100 * r.parameters / r.full_parameters:.1f} % of {r.full_parameters:,})"
        positions = "" if r.name in ("sd3", "flux") else " latent positions"  # a UNet attends at several sizes
        for s in r.sizes:
            t = s.times
            rec = median(s.inside) / median(t.cpu_a)
            lines.append(
                f"| {r.name} | {r.label}: {r.layers} | {share} | {r.text_layers} ({kinds}) | {s.latent}x{s.latent} "
                f"({8 * s.latent} px) | {s.image_tokens}{positions} + {s.text_tokens} "
                f"| {min(t.cpu_a):.2f} / {median(t.cpu_a):.2f} "
                f"| **{t.ratio_best():.3f} / {t.ratio_median():.3f}** | {100 * rec:.1f} % | "
                f"{'yes' if s.identical else f'NO (max diff {s.max_diff:.2e})'}, {'yes' if s.restored else 'NO'} "
                f"| {s.reprojected} of {r.text_layers} | {t.load_before} / {t.load_after} |")
    lines += ["", f"Goal (as for SD2): ratio <= {GOAL}. Details per row:", ""]
    for r in results:
        for s in r.sizes:
            t = s.times
            lines += [
                f"**{r.name}, latent {s.latent}** (built in {r.build_s:.0f} s; {s.bytes_per_step:,} bytes recorded per "
                f"step): thread CPU plain {', '.join(f'{x:.2f}' for x in t.cpu_a)}; captured "
                f"{', '.join(f'{x:.2f}' for x in t.cpu_b)}. Per-pair ratios "
                f"{', '.join(f'{x:.3f}' for x in t.pair_ratios())}. Wall ratio {t.ratio_best(wall=True):.3f} best, "
                f"{t.ratio_median(wall=True):.3f} median. Recorder's own CPU time per forward (from inside): "
                f"{', '.join(f'{x * 1e3:.0f}' for x in s.inside)} ms.",
                "",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="interleaved (plain, captured) pairs per size")
    parser.add_argument("--families", nargs="+", default=["sdxl", "sd3", "flux"], choices=["sdxl", "sd3", "flux"])
    parser.add_argument("--inside", type=int, default=3, help="captured forwards timed from inside")
    parser.add_argument("--sdxl-latent", type=int, nargs="+", default=[32], help="latent sides (32 = 256 px)")
    parser.add_argument("--sd3-latent", type=int, nargs="+", default=[32],
                        help="latent sides (patch 2: 32 = 256 tokens)")
    parser.add_argument("--flux-latent", type=int, nargs="+", default=[32],
                        help="latent sides (packed 2x2: 32 = 256 tokens)")
    parser.add_argument("--sd3-layers", type=int, default=None, help="joint blocks (default: all 24)")
    parser.add_argument("--flux-layers", type=int, nargs=2, default=[2, 4], metavar=("JOINT", "SINGLE"))
    parser.add_argument("--sd3-text", type=int, default=154, help="text tokens: 77 CLIP + T5 (at least 78)")
    parser.add_argument("--flux-text", type=int, default=128, help="T5 tokens")
    parser.add_argument("--results", default="capture_families.md", help="results file (under benchmarks/results)")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the forward on this thread only: its CPU time is its own
    torch.set_grad_enabled(False)
    plan = {"sdxl": (None, args.sdxl_latent, 77), "sd3": (args.sd3_layers, args.sd3_latent, args.sd3_text),
            "flux": (tuple(args.flux_layers), args.flux_latent, args.flux_text)}
    results = []
    for name in args.families:
        layers, latents, text = plan[name]
        print(f"{name}: layers {layers}, latents {latents}, text {text}, load {load_average()}", flush=True)
        results.append(bench_family(name, layers, latents, text, args.repeats, args.inside))
        # results so far, in case a later family cannot get its memory
        command = ".venv/bin/python benchmarks/bench_capture_families.py " + " ".join(sys.argv[1:])
        text_out = report(results, args, command.strip())
        path = write_results(args.results, text_out + "\n")
    print(text_out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
