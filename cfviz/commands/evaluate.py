"""``cfviz evaluate``: run CLIPFusion, its branches or WinCLIP on a data set and write result tables."""

from __future__ import annotations

import argparse
from typing import Any

DATASETS = ("mvtec", "visa", "folder", "textures", "conformal")

#: RunSpec setting path -> the flag that sets it (configuration errors name the flag).
#: ``--clip-windows`` -> ``ExtractionConfig.clip_windows`` (``None``: auto, decided by the run's methods).
CLIP_WINDOWS: dict[str, bool | None] = {"auto": None, "on": True, "off": False}

FLAGS: dict[str, str] = {
    "dataset": "--dataset", "root": "--root", "categories": "--categories",
    "dataset_options.missing_masks": "--missing-masks", "dataset_options.mask_suffix": "--mask-suffix",
    "dataset_options.limit_per_type": "--limit-per-type", "dataset_options.stray_files": "--stray-files",
    "methods": "--method", "shots": "--shots", "seeds": "--seeds", "out_dir": "--out", "store_dir": "--store",
    "recompute_changed": "--recompute-changed",
    "batch_size": "--batch-size", "shard": "--shard", "distributed": "--distributed", "store_form": "--store-form",
    "models.clip": "--clip", "models.clip_arch": "--clip-arch", "models.clip_pretrained": "--clip-pretrained",
    "models.diffusion": "--diffusion", "models.revision": "--revision", "models.device": "--device",
    "models.dtype": "--dtype", "models.seed": "--model-seed", "models.compile": "--compile",
    "models.channels_last": "--channels-last",
    "extraction.timesteps": "--timesteps", "extraction.features": "--features", "extraction.state": "--state",
    "extraction.diffusion_size": "--diffusion-size", "extraction.clip_size": "--clip-size",
    "extraction.noise_seed": "--noise-seed",
    "extraction.aaclip": "--aaclip", "extraction.winclip_prompts": "--winclip-prompts",
    "extraction.aaclip_size": "--aaclip-size", "extraction.aaclip_names": "--aaclip-names",
    "extraction.clip_windows": "--clip-windows", "extraction.object_names": "--object-names",
    "extraction.language_tokens": "--language-tokens", "extraction.tokens": "--tokens",
    "extraction.mask": "--inpaint-mask",
    "extraction.noise": "--noise", "extraction.noise_draws": "--noise-draws",
    "extraction.batch_timesteps": "--batch-timesteps",
    "scoring.language_layers": "--language-layers", "scoring.visual_block": "--visual-block",
    "scoring.reference_block": "--reference-block", "scoring.visual_pooling": "--visual-pooling",
    "scoring.patchclip_language": "--patchclip-language", "scoring.patchclip_visual": "--patchclip-visual",
    "scoring.alpha_seg": "--alpha-seg", "scoring.alpha_cls": "--alpha-cls",
    "scoring.normalization": "--normalization", "scoring.score_rule": "--score-rule", "scoring.topk": "--topk",
    "scoring.sigma": "--sigma", "scoring.eval_size": "--eval-size",
    "scoring.language_min_resolution": "--min-resolution", "scoring.clip_branch": "--clip-branch",
    "scoring.aaclip_upsample": "--aaclip-upsample",
    "scoring.smoothing": "--smoothing", "scoring.image_score": "--image-score",
}

EXAMPLES = """\
examples:
  # offline smoke run on the embedded textures (tiny random-weight models)
  cfviz evaluate --method clipfusion winclip --shots 0 1 --seeds 0 1 --out runs/textures
  # MVTec-AD with the paper's models on a GPU
  cfviz evaluate --dataset mvtec --root /data/mvtec_ad --clip pretrained --diffusion \\
      stabilityai/stable-diffusion-2-inpainting --device cuda --dtype float16 --out runs/mvtec
  # a deterministic subset of the conformal textiles (no masks: image metrics only)
  cfviz evaluate --dataset conformal --limit-per-type 5 --method clipfusion --out runs/conformal
"""


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _eval_size(text: str) -> int | str:
    """``--eval-size``: a number of pixels or ``native``."""
    if text.strip().lower() == "native":
        return "native"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--eval-size must be a number of pixels (e.g. 256) or 'native', "
                                         f"got {text!r}") from None


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The ``models`` group (shared by ``evaluate`` and ``demo``)."""
    from cfviz.evaluation.config import CLIP_MODES, DTYPES, ExtractionConfig, ModelChoice
    from cfviz.models.speed import COMPILE_MODES

    m = ModelChoice()
    models = p.add_argument_group("models")
    models.add_argument("--clip", choices=CLIP_MODES, default=m.clip,
                        help="tiny offline, full-size random, or pretrained weights")
    models.add_argument("--clip-arch", default=m.clip_arch,
                        help="open_clip architecture (with --clip random/pretrained; --clip tiny takes its input "
                             "size and patch size)")
    models.add_argument("--clip-size", type=int, default=ExtractionConfig().clip_size,
                        help="image side fed to CLIP; must be the architecture's input size, which is the default "
                             "(240 for ViT-B-16-plus-240 as in the paper, 224 for ViT-B-32, 336 for ViT-L-14-336; "
                             "--clip tiny takes --clip-arch's size)")
    models.add_argument("--clip-pretrained", default=m.clip_pretrained,
                        help="open_clip pretrained tag or a .safetensors/.pt checkpoint file (with --clip pretrained)")
    models.add_argument("--diffusion", default=m.diffusion,
                        help="tiny (SD2 inpainting), tiny-sd1, tiny-sdxl, tiny-sdxl-inpaint, tiny-sd3, tiny-sd35, "
                             "tiny-flux, tiny-flux-fill, tiny-pixart, random, or a hub id / local diffusers folder "
                             "of any SD 1.x/2.x, SDXL, SD3, FLUX (Fill) or PixArt pipeline "
                             "(e.g. stabilityai/stable-diffusion-2-inpainting)")
    models.add_argument("--revision", default=None, help="hub revision (commit) of the diffusion weights "
                                                         "(default: main)")
    models.add_argument("--device", default=m.device, help="torch device: cpu, cuda, cuda:N or mps")
    models.add_argument("--dtype", default=m.dtype, choices=DTYPES,
                        help="parameter dtype of every model (float16/bfloat16 on GPUs; float32, the default, on "
                             "CPUs); the store keeps float16 maps either way")
    models.add_argument("--model-seed", type=int, default=m.seed, help="seed of random weights (tiny/random)")
    models.add_argument("--compile", nargs="?", const="inductor", default=m.compile, choices=COMPILE_MODES,
                        metavar="BACKEND",
                        help="torch.compile the denoiser's ResNet, self-attention and feed-forward blocks (capture "
                             "still works); BACKEND inductor (the default when the flag is given; needs a C++ "
                             "compiler on CPUs), aot_eager or eager (trace only); default: off")
    models.add_argument("--channels-last", action="store_true", default=m.channels_last,
                        help="channels_last memory format for the UNet and VAE (faster convolutions on GPUs; "
                             "other last bits, so part of the store's identity)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``evaluate`` (data, run, models, extraction, scoring)."""
    from cfviz.data.mvtec import MISSING_MASK_POLICIES, STRAY_FILE_POLICIES
    from cfviz.evaluation.config import (AACLIP_NAMES, IMAGE_SCORES, INPAINT_MASKS, LANGUAGE_TOKENS, MAP_SOURCES,
                                          METHODS, PROMPT_AVERAGES, SCORE_RULES, SMOOTHINGS, TOKEN_MODES,
                                          ExtractionConfig, ScoringConfig)
    from cfviz.clip.object_names import OBJECT_NAME_MODES
    from cfviz.diffusion.mapdiff import VISUAL_POOLINGS

    e, s = ExtractionConfig(), ScoringConfig()
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="textures", help="data set kind")
    data.add_argument("--root", help="data set folder (default for textures: data/textures, generated if missing)")
    data.add_argument("--categories", nargs="+", help="only these categories (default: all)")
    data.add_argument("--missing-masks", choices=MISSING_MASK_POLICIES, default=None,
                      help="an anomalous test image without a mask: stop with an error, or warn and keep it for "
                           "image metrics (mvtec, folder, visa; default: error)")
    data.add_argument("--stray-files", choices=STRAY_FILE_POLICIES, default=None,
                      help="a test image that is a dangling symbolic link, or a mask that belongs to no test image: "
                           "warn, naming the file, and go on, or stop with an error (mvtec, folder; default: warn)")
    data.add_argument("--mask-suffix", default=None,
                      help="appended to an image's stem to name its mask (mvtec, folder; default: _mask)")
    data.add_argument("--limit-per-type", type=int, default=None, metavar="N",
                      help="keep the first N test images of each defect type, a deterministic subset "
                           "(default: all)")
    run = p.add_argument_group("run")
    run.add_argument("--method", nargs="+", choices=METHODS, default=["clipfusion"], dest="methods",
                     help="methods to score")
    run.add_argument("--shots", nargs="+", type=int, default=[0], help="k normal references (0 = zero-shot)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the k-shot reference draws")
    run.add_argument("--out", default="runs/evaluate", help="output folder for tables")
    run.add_argument("--store", help="capture store folder, reused across runs (default: OUT/store)")
    run.add_argument("--shard", type=_shard, help="i/n: run the models for shard i of n only, then merge by "
                                                 "running again without --shard (default: everything)")
    run.add_argument("--distributed", choices=("auto", "off"), default="auto",
                     help="auto: under `accelerate launch` with several processes, each extracts its share "
                          "of the batches (as --shard rank/world_size would) and the main one scores; "
                          "off: every process runs the whole job")
    run.add_argument("--batch-size", type=int, default=4, help="images per model call (part of the store's "
                                                              "identity)")
    run.add_argument("--store-form", choices=("full", "compact"), default="full",
                     help="full: the store keeps every captured tensor; compact: once extracted, the test images' "
                          "UNet features are replaced by M_diff_V maps for these --shots/--seeds and the "
                          "(timestep, block) matching grid of --timesteps/--features: 10x+ smaller for three "
                          "blocks, the same results; other shots, seeds or pairs then need a new store "
                          "(part of the store's identity)")
    run.add_argument("--repair", action="store_true",
                     help="recompute damaged store entries instead of stopping at the first one")
    run.add_argument("--recompute-changed", action="store_true",
                     help="recompute store entries whose image file changed since they were stored (or that an "
                          "older cfviz stored without a fingerprint) instead of refusing the run")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_arguments(p)
    ext = p.add_argument_group("extraction (changing these needs a new store)")
    ext.add_argument("--timesteps", nargs="+", type=int, default=list(e.timesteps),
                     help="diffusion timesteps (0-999) at which attention and features are captured")
    ext.add_argument("--features", nargs="+", default=list(e.features), help="UNet blocks kept for M_diff_V")
    ext.add_argument("--state", default=e.state,
                     help="the [state] word(s) of the MapDiff prompt; commas make an ensemble written into one "
                          "prompt (damage,defect,scratch), each state weighing equally in M_diff_L; the prompt "
                          "conditions the UNet, so an ensemble changes M_diff_V's features too")
    ext.add_argument("--diffusion-size", type=int, default=e.diffusion_size,
                     help="image side fed to the diffusion model (a multiple of 8)")
    ext.add_argument("--noise-seed", type=int, default=e.noise_seed, help="seed of the diffusion noise")
    ext.add_argument("--noise", choices=("shared", "per-image"), default=e.noise,
                     help="diffusion noise at a timestep: one draw shared by all images, or each image its own "
                          "(seeded by its id: independent of batch and shard)")
    ext.add_argument("--noise-draws", type=int, default=e.noise_draws, metavar="N",
                     help="noise draws averaged per timestep (each one more UNet call per timestep)")
    ext.add_argument("--batch-timesteps", nargs="?", const="on", default="off", metavar="ROWS",
                     help="MapDiff's timesteps (and noise draws) as rows of one UNet call per batch ('on', or bare), "
                          "or of calls of at most ROWS rows; default off: one call per timestep. Pays on a GPU, "
                          "not on a CPU; part of the store's identity (other kernels move the last bits)")
    ext.add_argument("--aaclip", metavar="CHECKPOINT", default=None,
                     help="AA-CLIP adapters from `cfviz train-aaclip`: a checkpoint file, or the training folder "
                          "(then the stage-2 checkpoint of the paper's epoch 15 if it is there, else "
                          "aaclip.safetensors); needed by --method aaclip and --clip-branch aaclip (default: none)")
    ext.add_argument("--aaclip-epoch", type=int, default=None, metavar="N",
                     help="with --aaclip DIR: evaluate the stage-2 checkpoint of epoch N (default: 15, the epoch "
                          "the AA-CLIP paper's results come from)")
    ext.add_argument("--aaclip-size", type=int, default=None, metavar="PX",
                     help="AA-CLIP's input side, position embeddings interpolated to its grid (default: the "
                          "checkpoint's: 518 on ViT-L-14-336, as the released code)")
    ext.add_argument("--aaclip-names", choices=AACLIP_NAMES, default=None,
                     help="class names in AA-CLIP's prompts: the released code's descriptions or the category "
                          "names (default: the checkpoint's, descriptive)")
    ext.add_argument("--clip-windows", choices=tuple(CLIP_WINDOWS), default="auto",
                     help="CLIP's window embeddings at extraction: auto (default) computes them only when a method "
                          "needs them (winclip, --patchclip-language/--patchclip-visual mean or windows); off "
                          "skips them (then only PatchCLIP's patches forms, no winclip); on always")
    ext.add_argument("--object-names", choices=OBJECT_NAME_MODES, default=e.object_names,
                     help="the category's words in both prompts: readable names for MVTec-AD and VisA (default; "
                          "pcb1 -> 'printed circuit board', chewinggum -> 'chewing gum') or the folder name")
    ext.add_argument("--winclip-prompts", choices=PROMPT_AVERAGES, default=e.winclip_prompts,
                     help="WinCLIP's text anchors: mean of unit-normalised prompt embeddings, or of raw ones "
                          "(anomalib)")
    ext.add_argument("--inpaint-mask", choices=INPAINT_MASKS, default=e.mask,
                     help="mask given to the inpainting UNet: none (nothing to repaint) or full (everything)")
    ext.add_argument("--language-tokens", choices=LANGUAGE_TOKENS, default=e.language_tokens,
                     help="words whose cross-attention M_diff_L averages: the [state] word(s) (paper), the [object] "
                          "word(s), or every word of the prompt")
    ext.add_argument("--tokens", choices=TOKEN_MODES, default=e.tokens,
                     help="tokens whose cross-attention the store keeps: the --language-tokens words, or those and "
                          "every token of the prompt, <start> to <end> (per-word figures, the explorer's token "
                          "menu; M_diff_L is unchanged)")
    sc = p.add_argument_group("scoring (cheap: recomputed from the store)")
    sc.add_argument("--alpha-seg", type=float, default=s.alpha_seg, help="CLIP weight in the fused map (0-1)")
    sc.add_argument("--alpha-cls", type=float, default=s.alpha_cls, help="CLIP weight in the image score (0-1)")
    sc.add_argument("--normalization", choices=("dataset", "inductive", "image", "none"), default=s.normalization,
                    help="how maps are made comparable before fusion: dataset (min-max over a category's test "
                         "maps, transductive), inductive (k-shot: the references' range for language maps, a "
                         "fixed range for visual maps; zero-shot: each map alone), image, none")
    sc.add_argument("--image-score", choices=IMAGE_SCORES, default=s.image_score,
                    help="one image-score rule for every method: eq9 (the map fused with --alpha-cls, paper eq. 9; "
                         "a one-branch method's own map) reduced by --score-rule, map (the final map), cls (the "
                         "global CLS score; MapDiff its map), own (each method's favourite)")
    sc.add_argument("--score-rule", choices=SCORE_RULES, default=s.score_rule,
                    help="how --image-score's map becomes a number: max, mean of the top --topk, or mean")
    sc.add_argument("--topk", type=float, default=s.topk, help="fraction of pixels averaged by --score-rule "
                                                             "topk_mean")
    sc.add_argument("--sigma", type=float, default=s.sigma, help="Gaussian smoothing of final maps (pixels)")
    sc.add_argument("--smoothing", choices=SMOOTHINGS, default=s.smoothing,
                    help="shared: --sigma on every method's final map (WinCLIP's and AA-CLIP's too); own: each "
                         "method's favourite (WinCLIP unsmoothed, AA-CLIP its released blur only)")
    sc.add_argument("--eval-size", type=_eval_size, default=s.eval_size, metavar="PX|native",
                    help="grid on which maps and masks are compared; native: each image's own mask size for "
                         "pixel metrics (maps fused on 256)")
    sc.add_argument("--min-resolution", type=int, default=s.language_min_resolution,
                    help="coarsest cross-attention resolution used in M_diff_L (ours)")
    sc.add_argument("--language-layers", default=s.language_layers, metavar="GLOBS",
                    help="cross-attention layers of M_diff_L: glob patterns over layer names, comma-separated "
                         "(e.g. 'up_blocks.*'; default: all, then --min-resolution)")
    sc.add_argument("--visual-block", default=s.visual_block, metavar="BLOCKS",
                    help="UNet block(s) of M_diff_V, stored by --features; several comma-separated "
                         "(up_blocks.1,up_blocks.2) are pooled by --visual-pooling")
    sc.add_argument("--reference-block", default=s.reference_block, metavar="BLOCKS",
                    help="reference block(s) of M_diff_V, one per --visual-block (default: matched)")
    sc.add_argument("--visual-pooling", choices=VISUAL_POOLINGS, default=s.visual_pooling,
                    help="several M_diff_V blocks: mean of per-block distance maps, or one search over their "
                         "concatenated, per-block normalised features (PatchCore)")
    sc.add_argument("--clip-branch", choices=("patchclip", "aaclip"), default=s.clip_branch,
                    help="CLIP language map fused by clipfusion/patchclip (aaclip needs --aaclip)")
    sc.add_argument("--aaclip-upsample", choices=("align_corners", "half_pixel"), default=s.aaclip_upsample,
                    help="AA-CLIP's map to pixels: bilinear with align_corners=True (released code) or False")
    sc.add_argument("--patchclip-language", choices=MAP_SOURCES, default=s.patchclip_language,
                    help="PatchCLIP's language map: patch tokens of one forward pass (default), or the mean of "
                         "patch and window maps, or windows only (both need window embeddings)")
    sc.add_argument("--patchclip-visual", choices=MAP_SOURCES, default=s.patchclip_visual,
                    help="PatchCLIP's k-shot visual map: patches (default), or the mean of patch and window maps "
                         "(WinCLIP+), or windows only (both need window embeddings)")


def _given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The settings of ``section`` (``""``: RunSpec's own) given on the command line, by :data:`FLAGS`.

    A setting that is not given (``None``, or a parser without its flag) is left out, so that it
    keeps its default; lists become tuples.
    """
    given = {}
    for path, flag in FLAGS.items():
        head, _, name = path.rpartition(".")
        value = getattr(args, "methods" if flag == "--method" else flag[2:].replace("-", "_"), None)
        if head == section and value is not None:
            given[name] = tuple(value) if isinstance(value, list) else value
    return given


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """Reader options given on the command line (only those given: the readers' defaults apply)."""
    return _given(args, "dataset_options")


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~cfviz.evaluation.config.RunSpec` of parsed arguments (missing ones take their defaults).

    Raises :class:`~cfviz.errors.ConfigError` (naming the setting) for any out-of-range value.
    """
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig

    run = {k: v for k, v in _given(args, "").items() if k in RunSpec.__dataclass_fields__}
    aaclip, aaclip_sha256 = None, None
    if getattr(args, "aaclip", None):  # reading the checkpoint imports torch: only when one is given
        from cfviz.evaluation.aaclip_branch import resolve_checkpoint

        aaclip, aaclip_sha256 = resolve_checkpoint(args.aaclip, getattr(args, "aaclip_epoch", None))
    elif getattr(args, "aaclip_epoch", None) is not None:
        from cfviz.evaluation.aaclip_branch import resolve_checkpoint

        resolve_checkpoint(None, args.aaclip_epoch)  # refused: an epoch needs a training folder
    if aaclip is None and ("aaclip" in run.get("methods", ()) or getattr(args, "clip_branch", None) == "aaclip"):
        from cfviz.clip.aaclip.checkpoint import CheckpointError

        raise CheckpointError("--method aaclip and --clip-branch aaclip need --aaclip CHECKPOINT, the adapters "
                              "written by `cfviz train-aaclip --out DIR` (DIR/aaclip.safetensors)")
    extraction = _given(args, "extraction")
    extraction.update(aaclip=aaclip, aaclip_sha256=aaclip_sha256,
                      clip_windows=CLIP_WINDOWS[extraction.get("clip_windows", "auto")],
                      batch_timesteps=_batch_timesteps(extraction.get("batch_timesteps", "off")))
    return RunSpec(**run, dataset_options=dataset_options(args), models=ModelChoice(**_given(args, "models")),
                   extraction=ExtractionConfig(**extraction), scoring=ScoringConfig(**_given(args, "scoring")))


def run(args: argparse.Namespace) -> int:
    from cfviz.evaluation.report import RANDOM_WEIGHTS_NOTE, EvaluationResult
    from cfviz.evaluation.runner import evaluate

    spec = spec_from_args(args)
    extra = {"repair": True} if getattr(args, "repair", False) else {}
    if getattr(args, "recompute_changed", False):
        extra["recompute_changed"] = True
    result = evaluate(spec, args.out, store_dir=args.store, shard=args.shard, progress=not args.no_progress,
                      distributed=getattr(args, "distributed", "auto"), **extra)
    if not isinstance(result, EvaluationResult):  # a shard, or a launched process other than the main one
        if args.shard is not None:
            print(f"shard {args.shard[0]}/{args.shard[1]}: {result}. When every shard is done, run the same "
                  "command without --shard to score the merged store.")
        return 0
    print((result.out_dir / "summary.md").read_text())
    if result.random_weights:
        print(f"note: {RANDOM_WEIGHTS_NOTE}")
    print(f"store {result.store.path}: {result.extraction}")
    print(f"wrote {result.out_dir / 'results.csv'}, {result.out_dir / 'summary.md'}, {result.out_dir / 'run.json'}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate methods on a data set; writes CSV and Markdown tables",
                       description="Run CLIPFusion, PatchCLIP, MapDiff or WinCLIP zero-/few-shot on a data set. "
                                   "Model outputs are cached per image in a capture store, so re-runs, other "
                                   "alphas and ablations never recompute them. Every setting, path, device and "
                                   "model name is checked before any model loads.",
                       epilog=EXAMPLES)
    _defer(p, add_run_arguments)
    p.set_defaults(func=run, cli_flags=FLAGS)


def _defer(p: Any, build: Any) -> None:
    """Add arguments when the parser is first used (a CommandParser), or now (a plain parser)."""
    if hasattr(p, "defer"):
        p.defer(build)
    else:
        build(p)


def _batch_timesteps(value: str) -> bool | int | str:
    """``--batch-timesteps``: off/on, or a number of UNet rows per call (anything else: ExtractionConfig says so).

    >>> _batch_timesteps("off"), _batch_timesteps("on"), _batch_timesteps("6"), _batch_timesteps("x")
    (False, True, 6, 'x')
    """
    text = str(value).strip().lower()
    if text in ("off", "on"):
        return text == "on"
    return int(text) if text.isdigit() else value
