"""End-to-end seconds per image of zero-shot and 1-shot CLIPFusion, full-size architectures, CPU.

Models: ``ViT-B-16-plus-240`` and the SD2-inpainting pipeline (VAE, OpenCLIP-H text encoder,
UNet), all with seeded random weights: they time the same as real weights (the same shapes and
operations); no detection quality is measured. Each stage is the code the evaluation runner calls
(cfviz.experiments.extraction, then cfviz.experiments.scoring), timed on its own for one image at
batch size 1, median over ``--repeats``.

Run:  .venv/bin/python benchmarks/bench_e2e.py [--repeats 2]
Writes benchmarks/results/e2e.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import PeakRSS, machine, mb, median, now, timed, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import cfviz
    from cfviz.capture.store import CaptureStore
    from cfviz.data.transforms import clip_batch, diffusion_batch
    from cfviz.data.textures import TexturesDataset
    from cfviz.diffusion.forward import build_prompt, encode_prompts, inpaint_inputs, mapdiff_forward
    from cfviz.diffusion.mapdiff import language_map, visual_map
    from cfviz.experiments import ExtractionConfig, ScoringConfig
    from cfviz.experiments import clip_branch
    from cfviz.fusion import fuse, image_scores, normalize_maps, smooth, upsample
    from cfviz.models import random_clip, random_inpaint_pipeline

    torch.set_grad_enabled(False)
    ext, sc = ExtractionConfig(clip_size=240), ScoringConfig()  # ViT-B-16-plus-240 takes 240 px
    t_clip_build, clip = timed(lambda: random_clip("ViT-B-16-plus-240", seed=0))
    t_pipe_build, pipe = timed(lambda: random_inpaint_pipeline(seed=0))

    data = TexturesDataset(categories="grass")
    test = next(r for r in data.records if r.label == 1)
    ref = next(r for r in TexturesDataset(categories="grass", split="train").records)
    samples = [data.load(test), TexturesDataset(categories="grass", split="train").load(ref)]
    prompt = build_prompt("grass", ext.state)
    t_text_anchors, _ = timed(lambda: clip_branch.zero_shot_scores(
        clip, clip_branch.embed(clip, clip_batch([samples[0].image], ext.clip_size), ext), "grass", ext))

    stages: dict[str, list[float]] = {}

    def stage(name: str, fn):  # type: ignore[no-untyped-def]
        dt, out = timed(fn)
        stages.setdefault(name, []).append(dt)
        return out

    def extract_one(sample, store: CaptureStore, image_id: str) -> None:  # the runner's per-image work
        clip_in, img = stage("preprocess (240 px bicubic for CLIP, 512 px bilinear for diffusion)",
                             lambda: (clip_batch([sample.image], ext.clip_size),
                                      diffusion_batch([sample.image], ext.diffusion_size)))
        emb = stage("CLIP embeddings: image, 225 patches, 365 windows", lambda: clip_branch.embed(clip, clip_in, ext))
        scores, arrays = stage("CLIP zero-shot scores (PatchCLIP + WinCLIP, cached text)",
                               lambda: clip_branch.zero_shot_scores(clip, emb, "grass", ext))
        stage("VAE encode (inpainting inputs)", lambda: inpaint_inputs(pipe, img))
        stage("text encoder (prompt)", lambda: encode_prompts(pipe, [prompt]))

        def unet() -> object:
            with cfviz.capture(pipe, attention=ext.attention, features=list(ext.features),
                               tokens=ext.state_tokens, prompt=prompt) as cap:
                mapdiff_forward(pipe, img, prompt, timesteps=ext.timesteps, seed=0)
            return cap
        # mapdiff_forward repeats the VAE and text passes; subtract them to report the UNet alone
        cap = stage("_mapdiff_forward", unet)
        stage("store write (safetensors + JSON)", lambda: store.add(
            image_id, cap.cache, clip=scores, arrays={**{k: v[0].half() for k, v in emb.items()}, **arrays},
            overwrite=True))

    def score(store: CaptureStore, shots: int) -> None:  # the runner's scoring for one image
        entry = store["q"]

        def zero_shot() -> np.ndarray:
            lang, _ = clip_branch.stored_language(store, ["q"])
            dlang = language_map(entry.cache(blocks=[]), min_resolution=sc.language_min_resolution)[0].numpy()
            c = normalize_maps(upsample(lang, sc.eval_size), "image")
            d = normalize_maps(upsample(dlang[None], sc.eval_size), "image")
            return smooth(fuse({"language": c}, {"language": d}, sc.alpha_seg), sc.sigma)
        maps = stage(f"scoring from the store ({shots}-shot): language maps + fusion", zero_shot)
        if shots:
            def few_shot() -> None:
                from cfviz.experiments.scoring import clip_embeddings, diffusion_features
                q, r = clip_embeddings(store, ["q"]), clip_embeddings(store, ["r"])
                clip_branch.visual(q, r, ext)
                t = ext.timesteps[len(ext.timesteps) // 2]
                visual_map(diffusion_features(store, ["q"], sc.visual_block, t),
                           diffusion_features(store, ["r"], sc.visual_block, t))
            stage("scoring from the store (1-shot): visual maps (memory banks)", few_shot)
        image_scores(maps, sc.score_rule)

    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        store = CaptureStore(tmp)
        extract_one(samples[1], store, "r")  # warm-up, and the 1-shot reference
        stages.clear()
        for _ in range(args.repeats):
            extract_one(samples[0], store, "q")
            score(store, 0)
            score(store, 1)
        # the reference costs one more extraction per category and seed, shared by its test images
        bytes_per_image = store["q"].path.stat().st_size
    vae = median(stages["VAE encode (inpainting inputs)"])
    txt = median(stages["text encoder (prompt)"])
    unet_alone = median(stages.pop("_mapdiff_forward")) - vae - txt
    rows = [(k, median(v)) for k, v in stages.items()]
    rows.insert(5, (f"UNet x {len(ext.timesteps)} timesteps under capture ({len(ext.state_tokens)} token, "
                    f"all attn2, {', '.join(ext.features)})", unet_alone))
    model_rows = [(k, v) for k, v in rows if not k.startswith("scoring")]
    per_image_models = sum(v for _, v in model_rows)
    zero = per_image_models + dict(rows)["scoring from the store (0-shot): language maps + fusion"]
    one = per_image_models + dict(rows)["scoring from the store (1-shot): language maps + fusion"] + \
        dict(rows)["scoring from the store (1-shot): visual maps (memory banks)"]

    lines = [
        "# End-to-end seconds per image: CLIPFusion, full-size architectures, CPU",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_e2e.py --repeats {args.repeats}`  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}",
        "",
        "Models: `ViT-B-16-plus-240` and the SD2-inpainting pipeline (VAE, OpenCLIP-H text encoder, UNet), "
        "seeded random weights, float32, batch 1. Random weights time like real ones; no detection quality "
        f"is measured. Settings: the runner's defaults (timesteps {list(ext.timesteps)}, CLIP windows "
        f"{list(ext.scales)} at stride {ext.stride}, eval grid {sc.eval_size}).",
        "",
        f"One-off costs: building the random CLIP {t_clip_build:.1f} s and pipeline {t_pipe_build:.1f} s; "
        f"the class's text anchors (231 prompts, cached per class) plus a first CLIP pass {t_text_anchors:.1f} s.",
        "",
        f"| stage (median of {args.repeats}) | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in rows],
        "",
        f"**Zero-shot CLIPFusion: {zero:.1f} s per image. 1-shot: {one:.1f} s per image**, plus one "
        f"reference extraction ({per_image_models:.1f} s) per category and seed, shared by all its test images.",
        "",
        f"Store entry per image: {bytes_per_image:,} bytes. Peak RSS above start: {mb(mem.extra)}.",
        "",
        "Reading: the models run once per image (extraction); everything after the store is cheap, so "
        "ablations over alpha, normalisation, timestep/block matching and shots cost the scoring rows only.",
    ]
    path = write_results("e2e.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
