"""Capture overhead on the full-size SD2-inpainting UNet (random weights), 512 px, on CPU.

Compares, in one run and interleaved, the plain UNet forward with a forward under
``cfviz.capture`` recording all cross-attention layers for 8 tokens plus 3 feature blocks, and
reports the time ratio (goal <= 1.10), the extra peak memory, the bytes stored per image per
timestep, and how bytes and time grow with timesteps, layers and tokens.

Run:  .venv/bin/python benchmarks/bench_capture.py [--repeats 3]
Writes benchmarks/results/capture.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import cfviz  # noqa: E402
from _common import PeakRSS, load_average, machine, mb, median, now, timed, timed_cpu, write_results  # noqa: E402

FEATURES = ["up_blocks.1", "up_blocks.2", "up_blocks.3"]
TOKENS = list(range(1, 9))  # 8 token positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latent", type=int, default=64, help="latent side (64 = 512 px images)")
    args = parser.parse_args()

    from cfviz.models import clip_tokenizer, sd2_inpaint_unet

    torch.set_grad_enabled(False)
    unet = sd2_inpaint_unet(seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, args.latent, args.latent, generator=g)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    tokenizer = clip_tokenizer()  # labels the recorded token positions of a bare UNet

    def plain() -> None:
        unet(x, 500, encoder_hidden_states=emb)

    def captured(attention="*attn2", features=FEATURES, tokens=TOKENS, steps=1):
        with cfviz.capture(unet, attention=attention, features=features, tokens=tokens,
                           tokenizer=tokenizer) as cap:
            for i in range(steps):
                unet(x, 900 - 100 * i, encoder_hidden_states=emb)
        return cap

    n_layers = len(cfviz.capture.locate_cross_attention(unet))
    plain()  # warm-up (allocator, kernels)
    captured()
    load_before = load_average()
    t_plain, t_cap, c_plain, c_cap, mem_plain, mem_cap = [], [], [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        with PeakRSS() as m:
            dt, ct, _ = timed_cpu(plain)
        t_plain.append(dt)
        c_plain.append(ct)
        mem_plain.append(m.extra)
        with PeakRSS() as m:
            dt, ct, cap = timed_cpu(captured)
        t_cap.append(dt)
        c_cap.append(ct)
        mem_cap.append(m.extra)
    load_after = load_average()
    # other work on a shared machine only ever adds time: the minimum is the least disturbed run
    ratio = min(t_cap) / min(t_plain)
    ratio_median = median(t_cap) / median(t_plain)
    ratio_cpu = min(c_cap) / min(c_plain)
    per_step_bytes = cap.cache.nbytes
    attn_bytes = sum(t.numel() * t.element_size() for per in cap.cache.attention.values() for t in per.values())
    feat_bytes = per_step_bytes - attn_bytes
    with tempfile.TemporaryDirectory() as tmp:
        store = cfviz.capture.CaptureStore(tmp, {"bench": True})
        entry = store.add("bench/0", cap.cache)
        file_bytes = entry.path.stat().st_size

    # growth: timesteps, layers, tokens (one forward per step; bytes exact, time per step)
    growth = []
    for steps in (1, 2, 4):
        dt, c = timed(lambda: captured(steps=steps))
        growth.append(("timesteps", steps, c.cache.nbytes, dt / steps))
    for attention, label in (("up_blocks.3*attn2", None), ("up_blocks.*attn2", None), ("*attn2", None)):
        dt, c = timed(lambda: captured(attention=attention, features=None))
        growth.append(("layers", len(c.layers), c.cache.nbytes, dt))
    for tokens in ([1], TOKENS, None):
        dt, c = timed(lambda: captured(features=None, tokens=tokens))
        growth.append(("tokens", 77 if tokens is None else len(tokens), c.cache.nbytes, dt))

    lines = [
        "# Capture overhead: full-size SD2-inpainting UNet, random weights, CPU",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_capture.py --repeats {args.repeats} --latent {args.latent}`",
        f"Date: {now()}  ",
        f"Machine: {machine()}",
        "",
        f"Input: latent 1x9x{args.latent}x{args.latent} ({args.latent * 8} px image), text 1x77x"
        f"{unet.config.cross_attention_dim}, fp32. Capture: all {n_layers} cross-attention layers, "
        f"{len(TOKENS)} tokens, head mean, fp16 storage, feature blocks {', '.join(FEATURES)}.",
        "",
        "| | plain forward | forward under capture |",
        "|---|---|---|",
        f"| wall time per forward, best of {args.repeats} (s) | {min(t_plain):.2f} | {min(t_cap):.2f} |",
        f"| wall time, median (s) | {median(t_plain):.2f} | {median(t_cap):.2f} |",
        f"| CPU time of the process, best of {args.repeats} (s) | {min(c_plain):.2f} | {min(c_cap):.2f} |",
        f"| all runs, wall (s) | {', '.join(f'{t:.2f}' for t in t_plain)} | {', '.join(f'{t:.2f}' for t in t_cap)} |",
        f"| peak RSS above start (median) | {mb(median(mem_plain))} | {mb(median(mem_cap))} |",
        "",
        f"1-minute load average before / after the timed runs: {load_before} / {load_after} (2 cores; a load "
        "above 2 means other work competed for them, which only ever adds time).",
        "",
        f"**Time ratio capture / plain: {ratio:.3f}** (best runs; goal <= 1.10: "
        f"{'met' if ratio <= 1.10 else 'NOT met'}). Medians: {ratio_median:.3f}. CPU time: {ratio_cpu:.3f}.  ",
        f"Extra peak memory of the capture: {mb(median(mem_cap) - median(mem_plain))} "
        "(sampled RSS every 5 ms; includes the stored maps).",
        "",
        "Stored per image per timestep:",
        f"- attention maps: {attn_bytes:,} bytes ({mb(attn_bytes)})",
        f"- feature maps: {feat_bytes:,} bytes ({mb(feat_bytes)})",
        f"- total in memory: {per_step_bytes:,} bytes; as a store entry on disk (safetensors + header): "
        f"{file_bytes:,} bytes",
        "",
        "Growth (bytes are exact; time is one run per row, per UNet call, so it carries the machine's noise):",
        "",
        "| varied | value | bytes recorded | seconds per UNet call |",
        "|---|---|---|---|",
        *[f"| {kind} | {value} | {nbytes:,} | {dt:.2f} |" for kind, value, nbytes, dt in growth],
        "",
        "Reading: bytes grow linearly in timesteps, in tokens (attention only) and with the number and "
        "resolution of layers; feature maps dominate when recorded. Time per call barely moves: the "
        "recorder borrows each layer's own query (a hook on `to_q`) and adds only a 77-token key projection "
        "and a 77-key softmax per cross-attention layer. Peak RSS is sampled, so the allocator reusing memory "
        "freed by the forward can hide the capture's few MiB per step; the bytes above are exact.",
    ]
    path = write_results("capture.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
