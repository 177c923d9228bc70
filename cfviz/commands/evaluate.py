"""``cfviz evaluate``: run CLIPFusion, its branches or WinCLIP on a data set and write result tables."""

from __future__ import annotations

import argparse
from typing import Any

DATASETS = ("mvtec", "visa", "folder", "textures", "conformal")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return i, n


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate`` and ``demo``-like commands."""
    from cfviz.experiments.config import METHODS, ExtractionConfig, ModelChoice, ScoringConfig

    m, e, s = ModelChoice(), ExtractionConfig(), ScoringConfig()
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="textures", help="data set kind (default: textures)")
    data.add_argument("--root", help="data set folder (default for textures: data/textures, generated if missing)")
    data.add_argument("--categories", nargs="+", help="only these categories")
    run = p.add_argument_group("run")
    run.add_argument("--method", nargs="+", choices=METHODS, default=["clipfusion"], dest="methods")
    run.add_argument("--shots", nargs="+", type=int, default=[0], help="k normal references (0 = zero-shot)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the k-shot reference draws")
    run.add_argument("--out", default="runs/evaluate", help="output folder for tables (default: runs/evaluate)")
    run.add_argument("--store", help="capture store folder (default: OUT/store); reused across runs")
    run.add_argument("--shard", type=_shard, help="i/n: run the models for shard i of n only, then merge by "
                                                 "running again without --shard")
    run.add_argument("--batch-size", type=int, default=4)
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    models = p.add_argument_group("models")
    models.add_argument("--clip", choices=("tiny", "random", "pretrained"), default=m.clip,
                        help="tiny offline, full-size random, or pretrained weights (default: tiny)")
    models.add_argument("--clip-arch", default=m.clip_arch)
    models.add_argument("--clip-pretrained", default=m.clip_pretrained, help="open_clip tag or checkpoint file")
    models.add_argument("--diffusion", default=m.diffusion,
                        help="tiny, random, or a hub id / local folder of SD2-inpainting weights "
                             "(e.g. stabilityai/stable-diffusion-2-inpainting)")
    models.add_argument("--revision", default=None, help="hub revision (commit) of the diffusion weights")
    models.add_argument("--device", default=m.device)
    models.add_argument("--dtype", default=m.dtype, choices=("float32", "float16", "bfloat16"))
    models.add_argument("--model-seed", type=int, default=m.seed, help="seed of random weights")
    ext = p.add_argument_group("extraction (changing these needs a new store)")
    ext.add_argument("--timesteps", nargs="+", type=int, default=list(e.timesteps))
    ext.add_argument("--features", nargs="+", default=list(e.features), help="UNet blocks kept for M_diff_V")
    ext.add_argument("--state", default=e.state, help="the [state] words of the MapDiff prompt")
    ext.add_argument("--diffusion-size", type=int, default=e.diffusion_size)
    ext.add_argument("--noise-seed", type=int, default=e.noise_seed)
    ext.add_argument("--aaclip", metavar="CHECKPOINT", default=None,
                     help="AA-CLIP adapters from `cfviz train-aaclip` (OUT/aaclip.safetensors): needed by "
                          "--method aaclip and --clip-branch aaclip")
    sc = p.add_argument_group("scoring (cheap: recomputed from the store)")
    sc.add_argument("--alpha-seg", type=float, default=s.alpha_seg)
    sc.add_argument("--alpha-cls", type=float, default=s.alpha_cls)
    sc.add_argument("--normalization", choices=("dataset", "image", "reference", "none"), default=s.normalization)
    sc.add_argument("--score-rule", choices=("max", "topk_mean", "mean"), default=s.score_rule)
    sc.add_argument("--sigma", type=float, default=s.sigma, help="Gaussian smoothing of final maps (pixels)")
    sc.add_argument("--eval-size", type=int, default=s.eval_size)
    sc.add_argument("--clip-branch", choices=("patchclip", "aaclip"), default=s.clip_branch,
                    help="CLIP language map fused by clipfusion/patchclip (aaclip needs --aaclip)")


def spec_from_args(args: argparse.Namespace) -> Any:
    from cfviz.experiments.aaclip_branch import resolve_checkpoint
    from cfviz.experiments.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig

    aaclip, aaclip_sha256 = resolve_checkpoint(getattr(args, "aaclip", None))
    if aaclip is None and ("aaclip" in args.methods or getattr(args, "clip_branch", None) == "aaclip"):
        from cfviz.clip.aaclip.checkpoint import CheckpointError

        raise CheckpointError("--method aaclip and --clip-branch aaclip need --aaclip CHECKPOINT, the adapters "
                              "written by `cfviz train-aaclip --out DIR` (DIR/aaclip.safetensors)")
    return RunSpec(
        dataset=args.dataset, root=args.root, categories=tuple(args.categories) if args.categories else None,
        methods=tuple(args.methods), shots=tuple(args.shots), seeds=tuple(args.seeds),
        models=ModelChoice(clip=args.clip, clip_arch=args.clip_arch, clip_pretrained=args.clip_pretrained,
                           diffusion=args.diffusion, revision=args.revision, device=args.device, dtype=args.dtype,
                           seed=args.model_seed),
        extraction=ExtractionConfig(timesteps=tuple(args.timesteps), features=tuple(args.features), state=args.state,
                                    diffusion_size=args.diffusion_size, noise_seed=args.noise_seed,
                                    aaclip=aaclip, aaclip_sha256=aaclip_sha256),
        scoring=ScoringConfig(alpha_seg=args.alpha_seg, alpha_cls=args.alpha_cls, normalization=args.normalization,
                              score_rule=args.score_rule, sigma=args.sigma, eval_size=args.eval_size,
                              clip_branch=getattr(args, "clip_branch", "patchclip")),
        batch_size=args.batch_size,
    )


def run(args: argparse.Namespace) -> int:
    from cfviz.experiments.runner import RANDOM_WEIGHTS_NOTE, EvaluationResult, evaluate

    spec = spec_from_args(args)
    result = evaluate(spec, args.out, store_dir=args.store, shard=args.shard, progress=not args.no_progress)
    if not isinstance(result, EvaluationResult):
        i, n = args.shard
        print(f"shard {i}/{n}: {result}. When every shard is done, run the same command without --shard "
              "to score the merged store.")
        return 0
    print((result.out_dir / "summary.md").read_text())
    if result.random_weights:
        print(f"note: {RANDOM_WEIGHTS_NOTE}")
    print(f"wrote {result.out_dir / 'results.csv'}, {result.out_dir / 'summary.md'}, {result.out_dir / 'run.json'}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate methods on a data set; writes CSV and Markdown tables",
                       description="Run CLIPFusion, PatchCLIP, MapDiff or WinCLIP zero-/few-shot on a data set. "
                                   "Model outputs are cached per image in a capture store, so re-runs, other "
                                   "alphas and ablations never recompute them.")
    add_run_arguments(p)
    p.set_defaults(func=run)
