"""Capture store size per image, projected to MVTec-AD and VisA: full and compact forms.

Entries of the real shapes at the 512 px SD2-inpainting geometry are written through
``CaptureStore.add`` and their files measured on disk (tensors file + JSON):

* attention and UNet features: the real capture (``cfviz.capture``) of the real UNet configuration
  (``cfviz/models/configs/sd2_inpainting_unet.json``) built on PyTorch's ``meta`` device, so the
  shapes, names and dtypes are what an extraction records, without computing a forward; the
  tensors are then filled with random values of those shapes;
* CLIP outputs (embeddings, zero-shot maps and window scores): one real extraction with a
  full-size random-weight CLIP (``ModelChoice(clip="random")``, ViT-B-16-plus-240 by default)
  and the tiny diffusion model, keeping the CLIP tensors only.

Two settings: the defaults (``ExtractionConfig()``: 3 timesteps, ``up_blocks.1``) and the
timestep/block matching grid (3 timesteps x ``up_blocks.1/2/3``). For each, one category of
``--tests`` test images and the k-shot references of ``--shots`` and ``--seeds`` is written, then
compacted with the real compaction (``cfviz.evaluation.compact.compact_category``: M_diff_V maps
of every reference draw and every (timestep, block) pair of the grid, computed from the random
features), and every entry measured again. Bytes do not depend on the values.

Projection: per test image x test images, plus per reference x references (at most
``max(shots) x len(seeds)`` per category: draws of different seeds assumed distinct, the upper
bound). MVTec-AD: 1,725 test images, 15 categories; VisA: 2,162 test images, 12 categories.

Run:  .venv/bin/python benchmarks/bench_store_size.py [--shots 1 2 4] [--seeds 0 1 2] [--tests 2]
Writes benchmarks/results/store_size.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import load_average, machine, now, write_results  # noqa: E402

BENCHMARKS = {"MVTec-AD": (1725, 15), "VisA": (2162, 12)}
GRID_BLOCKS = ("up_blocks.1", "up_blocks.2", "up_blocks.3")
TRAIN_POOL = 40  # normal training images the k-shot draws pick from (only the drawn ones are stored)


def meta_capture(extraction: object, category: str = "bottle") -> object:
    """The CaptureCache an extraction records for one image, with meta tensors (shapes only)."""
    from diffusers import UNet2DConditionModel

    import cfviz
    from cfviz.diffusion.forward import build_prompt
    from cfviz.evaluation.extraction import object_name
    from cfviz.models import clip_tokenizer
    from cfviz.models._config import model_config

    e = extraction
    config = model_config("sd2_inpainting_unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    latent = e.diffusion_size // 8  # type: ignore[attr-defined]
    prompt = build_prompt(object_name(category), e.state, e.prompt_template)  # type: ignore[attr-defined]
    x = torch.empty(1, config["in_channels"], latent, latent, device="meta")
    text = torch.empty(1, 77, config["cross_attention_dim"], device="meta")
    with torch.no_grad(), cfviz.capture(unet, attention=e.attention, features=list(e.features),  # type: ignore[attr-defined]
                                        tokens=e.tokens_for(category), tokenizer=clip_tokenizer(),  # type: ignore[attr-defined]
                                        prompt=[prompt], device="meta") as cap:
        for t in e.timesteps:  # type: ignore[attr-defined]
            unet(x, t, encoder_hidden_states=text)
    return cap.cache


def clip_arrays(folder: Path, clip_arch: str) -> dict[str, torch.Tensor]:
    """The CLIP tensors of one real extraction (full-size random CLIP; tiny diffusion model)."""
    from cfviz.capture.store import CaptureStore
    from cfviz.data.textures import TexturesDataset
    from cfviz.experiments import ExtractionConfig, ModelChoice
    from cfviz.evaluation.extraction import extract
    from cfviz.evaluation.models import load_models

    store = CaptureStore(folder)
    data = TexturesDataset(categories="grass")
    record = next(r for r in data.records if r.label == 1)
    models = load_models(ModelChoice(clip="random", clip_arch=clip_arch, diffusion="tiny"))
    extract(data, [record], models, ExtractionConfig(diffusion_size=64), store, batch_size=1, progress=False)
    tensors = store[record.image_id].load()
    return {n: t for n, t in tensors.items() if not n.startswith(("attn/", "feat/"))}


def records(category: str, n_tests: int) -> SimpleNamespace:
    """A data set's records: ``n_tests`` test images (one good, the rest defective) and a train pool."""
    recs = [SimpleNamespace(image_id=f"{category}/test/{'good' if i == 0 else 'defect'}/{i:03d}", category=category,
                            split="test", label=int(i > 0), defect_type="good" if i == 0 else "defect")
            for i in range(n_tests)]
    recs += [SimpleNamespace(image_id=f"{category}/train/good/{i:03d}", category=category, split="train", label=0,
                             defect_type="good") for i in range(TRAIN_POOL)]
    return SimpleNamespace(name="bench", categories=[category], records=recs, has_masks=False)


def entry_bytes(store: object, image_id: str) -> int:
    """Bytes on disk of one entry: its tensors file and its JSON."""
    entry = store[image_id]  # type: ignore[index]
    return entry.path.stat().st_size + entry.path.with_name(f"{entry.meta['key']}.json").stat().st_size


def measure(name: str, extraction: object, clip: dict[str, torch.Tensor], shots: list[int], seeds: list[int],
            n_tests: int, work: Path) -> dict[str, object]:
    """Write one category in the full form, compact it, and measure every entry before and after."""
    from cfviz.capture.store import CaptureStore
    from cfviz.experiments import ScoringConfig
    from cfviz.evaluation.compact import compact_category, reference_draws, visual_pairs

    from cfviz.diffusion.forward import build_prompt

    category = "bottle"
    template = meta_capture(extraction, category)
    prompt = build_prompt(category, extraction.state, extraction.prompt_template)  # type: ignore[attr-defined]
    dataset = records(category, n_tests)
    draws = reference_draws(dataset, category, shots, seeds)
    refs = sorted({r for d in draws.values() for r in d["references"]})
    tests = [r.image_id for r in dataset.records if r.split == "test"]
    store = CaptureStore(work / name, {"bench": name})
    gen = torch.Generator().manual_seed(0)
    for image_id in tests + refs:
        cache = template.select_rows(0) if template.batch_size > 1 else template  # type: ignore[attr-defined]
        for per_step in (*cache.attention.values(), *cache.features.values()):  # type: ignore[attr-defined]
            for step, t in per_step.items():
                per_step[step] = torch.randn(t.shape, generator=gen).to(t.dtype)
        rec = next(r for r in dataset.records if r.image_id == image_id)
        store.add(image_id, cache, arrays=clip, metadata={
            "label": rec.label, "category": category, "defect_type": rec.defect_type, "split": rec.split,
            "image_path": f"{image_id}.png", "mask_path": None, "prompt": prompt, "noise_seed": 0})
    full_test = sum(entry_bytes(store, i) for i in tests) / len(tests)
    full_ref = sum(entry_bytes(store, i) for i in refs) / len(refs)
    feat = sum(t.numel() * t.element_size() for per in template.features.values() for t in per.values())  # type: ignore[attr-defined]
    attn = sum(t.numel() * t.element_size() for per in template.attention.values() for t in per.values())  # type: ignore[attr-defined]
    t0, c0 = time.perf_counter(), time.process_time()
    compact_category(store, dataset, category, shots=shots, seeds=seeds, extraction=extraction,  # type: ignore[arg-type]
                     scoring=ScoringConfig())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    small_test = sum(entry_bytes(store, i) for i in tests) / len(tests)
    small_ref = sum(entry_bytes(store, i) for i in refs) / len(refs)
    n_maps = len([n for n in store[tests[0]].names if n.startswith("mdv/")])
    pairs = len(visual_pairs(extraction, ScoringConfig()))  # type: ignore[arg-type]
    shutil.rmtree(work / name)
    return {"name": name, "full_test": full_test, "full_ref": full_ref, "compact_test": small_test,
            "compact_ref": small_ref, "feat": feat, "attn": attn, "clip": sum(t.numel() * t.element_size()
                                                                               for t in clip.values()),
            "draws": len(draws), "pairs": pairs, "maps": n_maps, "seconds": seconds, "cpu": cpu,
            "refs_written": len(refs)}


def project(m: dict[str, object], form: str, tests: int, categories: int, refs_per_category: int) -> float:
    return float(m[f"{form}_test"]) * tests + float(m[f"{form}_ref"]) * refs_per_category * categories  # type: ignore[arg-type]


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4], help="k-shot settings (0 adds nothing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the reference draws")
    parser.add_argument("--tests", type=int, default=2, help="test images written per setting (bytes are per image)")
    parser.add_argument("--clip-arch", default="ViT-B-16-plus-240", help="CLIP architecture (the paper's)")
    parser.add_argument("--tmp", default="/tmp", help="folder for the temporary stores (~0.5 GB)")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write store_size.md")
    args = parser.parse_args()

    from cfviz.experiments import ExtractionConfig

    torch.set_grad_enabled(False)
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="cfviz-bench-store-size-", dir=args.tmp))
    try:
        clip = clip_arrays(work / "clip", args.clip_arch)
        settings = {"defaults (up_blocks.1)": ExtractionConfig(),
                    "matching grid (up_blocks.1/2/3)": ExtractionConfig(features=GRID_BLOCKS)}
        results = [measure(f"s{i}", e, clip, args.shots, args.seeds, args.tests, work) | {"label": label}
                   for i, (label, e) in enumerate(settings.items())]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = load_average()

    refs_per_category = max(args.shots) * len(args.seeds) if max(args.shots) else 0
    e = ExtractionConfig()
    lines = [
        "# Capture store size: full and compact forms, projected to MVTec-AD and VisA", "",
        f"Command: `.venv/bin/python benchmarks/bench_store_size.py --shots {' '.join(map(str, args.shots))} "
        f"--seeds {' '.join(map(str, args.seeds))} --tests {args.tests}`  ",
        f"Date: {now()}  ",
        f"Machine: {machine()}; load average {load_before} before, {load_after} after", "",
        f"Entries of the real shapes at {e.diffusion_size} px (SD2-inpainting UNet configuration, captured on the "
        f"meta device: timesteps {list(e.timesteps)}, every `attn2` layer, the [state] token `damage`; CLIP "
        f"`{args.clip_arch}` outputs from one real extraction), written with `CaptureStore.add`; bytes on disk "
        "(tensors file + JSON) per entry. Compact: the real compaction (`cfviz.evaluation.compact`) of one "
        f"category with {args.tests} test images and the references of shots {args.shots} x seeds {args.seeds}.", "",
        "Per image (bytes on disk):", "",
        "| setting | part | full | compact | ratio |", "|---|---|---:|---:|---:|",
    ]
    for m in results:
        ft, ct, fr, cr = (float(m[k]) for k in ("full_test", "compact_test", "full_ref", "compact_ref"))  # type: ignore[arg-type]
        lines.append(f"| {m['label']} | test image | {ft:,.0f} | {ct:,.0f} | {ft / ct:.1f}x |")
        lines.append(f"| {m['label']} | reference | {fr:,.0f} | {cr:,.0f} | {fr / cr:.1f}x |")
    lines += ["", "What an entry holds (tensor bytes, before the file's header):", ""]
    for m in results:
        lines.append(f"- {m['label']}: features {int(m['feat']):,} (3 timesteps), attention {int(m['attn']):,}, "
                     f"CLIP {int(m['clip']):,}; compact test image: features replaced by {m['maps']} float32 "
                     f"M_diff_V maps ({m['pairs']} (timestep, block) pairs x {m['draws']} reference draws); "
                     f"compaction of {args.tests} test images and {m['refs_written']} references took "
                     f"{float(m['seconds']):.1f} s wall, {float(m['cpu']):.1f} s CPU")  # type: ignore[arg-type]
    lines += ["", f"Projected stores: test images plus at most {refs_per_category} references per category "
              f"({max(args.shots)} shots x {len(args.seeds)} seeds; smaller shots are prefixes of a draw):", "",
              "| benchmark | setting | full | compact | ratio |", "|---|---|---:|---:|---:|"]
    for bench, (n_tests, n_cats) in BENCHMARKS.items():
        for m in results:
            full = project(m, "full", n_tests, n_cats, refs_per_category)
            small = project(m, "compact", n_tests, n_cats, refs_per_category)
            lines.append(f"| {bench} ({n_tests:,} test images, {n_cats} categories) | {m['label']} | {gb(full)} | "
                         f"{gb(small)} | {full / small:.1f}x |")
    grid = results[-1]
    per_draw = (float(grid["compact_test"]) - float(grid["compact_ref"])) / int(grid["draws"])  # type: ignore[arg-type]
    limit = int((float(grid["full_test"]) / 10 - float(grid["compact_ref"])) // per_draw)  # type: ignore[arg-type]
    lines += ["", "The compact form's maps are float32 as scoring computes them: results are bit-identical to the "
              "full form's (tests/test_compact_store.py compares results.csv byte for byte). What it loses is "
              "what was not asked for: another seed, shots value or (timestep, block) pair needs the test "
              "images' features again (a new store). Its size grows with the reference draws kept (one per "
              f"(shots >= 1, seed)): each adds {grid['pairs']} maps, {per_draw:,.0f} bytes per test image for the "
              f"grid, so a test image stays 10x smaller than in the full form up to {limit} draws per category "
              f"(here {grid['draws']})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        print(f"wrote {write_results('store_size.md', text)}")


if __name__ == "__main__":
    main()
