"""``cfviz train-aaclip``: train AA-CLIP adapters on an annotated data set (e.g. VisA's test split).

Example (the paper's protocol: train on VisA, then evaluate zero-shot on MVTec-AD)::

    cfviz train-aaclip --dataset visa --root /data/visa --clip pretrained \\
        --clip-arch ViT-L-14-336 --clip-pretrained openai --out runs/aaclip-visa
    cfviz evaluate --dataset mvtec --root /data/mvtec --clip pretrained --clip-arch ViT-L-14-336 \\
        --clip-pretrained openai --aaclip runs/aaclip-visa/aaclip.safetensors --method aaclip clipfusion

Offline smoke run on the embedded textures with the tiny random-weight CLIP (shows that the
pipeline runs, not detection quality)::

    cfviz train-aaclip --shots 2 --stage1-epochs 1 --stage2-epochs 1 --out runs/aaclip-smoke

Checkpoints are written after every epoch; rerunning the same command resumes after the last one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DATASETS = ("mvtec", "visa", "folder", "textures")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train-aaclip`` options (defaults: the released AA-CLIP ``train.py``)."""
    from cfviz.clip.aaclip.train import TrainConfig

    t = TrainConfig()
    data = p.add_argument_group("data (annotated images: the test split is used)")
    data.add_argument("--dataset", choices=DATASETS, default="textures", help="data set kind (default: textures)")
    data.add_argument("--root", help="data set folder (default for textures: data/textures, generated if missing)")
    data.add_argument("--categories", nargs="+", help="only these categories")
    data.add_argument("--shots", type=int, default=None,
                      help="k images per category (half normal, half anomalous); default: all (full-shot)")
    models = p.add_argument_group("CLIP (frozen)")
    models.add_argument("--clip", choices=("tiny", "random", "pretrained"), default="tiny",
                        help="tiny offline, full-size random, or pretrained weights (default: tiny)")
    models.add_argument("--clip-arch", default="ViT-L-14-336", help="open_clip architecture (paper: ViT-L-14-336)")
    models.add_argument("--clip-pretrained", default="openai", help="open_clip tag or checkpoint file")
    models.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    models.add_argument("--model-seed", type=int, default=0, help="seed of random CLIP weights (tiny/random)")
    ad = p.add_argument_group("adapters")
    ad.add_argument("--text-blocks", type=int, default=None, help="K_T (default: depth / 4; paper 3)")
    ad.add_argument("--image-blocks", type=int, default=None, help="K_I (default: depth / 4; paper 6)")
    ad.add_argument("--levels", type=int, nargs="+", default=None,
                    help="1-based vision blocks of the patch levels (default: 1/4..4/4 of the depth)")
    ad.add_argument("--text-lambda", type=float, default=0.1, help="residual weight of the text adapters")
    ad.add_argument("--image-lambda", type=float, default=0.1, help="residual weight of the image adapters")
    ad.add_argument("--init", choices=("xavier", "clip"), default="xavier", help="initialisation of the adapters")
    ad.add_argument("--image-size", type=int, default=None, metavar="PX",
                    help="input side, position embeddings interpolated to its grid (default: the released code's "
                         "518 on ViT-L-14-336's geometry, the model's own size on others)")
    ad.add_argument("--class-names", choices=("descriptive", "plain"), default="descriptive",
                    help="class names in the prompts: the released code's descriptions (MVTec-AD, VisA, MPDD, BTAD, "
                         "medical sets) or the category names")
    ad.add_argument("--activation", choices=("gelu", "quick_gelu", "model"), default="gelu",
                    help="the CLIP's MLP activation while AA-CLIP runs it: exact GELU (released code), QuickGELU, or "
                         "the CLIP's own as loaded (QuickGELU from the openai tag, GELU from a local file)")
    tr = p.add_argument_group("training")
    tr.add_argument("--out", default="runs/aaclip", help="folder for checkpoints")
    tr.add_argument("--seed", type=int, default=t.seed, help="seed of shuffling, augmentation and initialisation")
    tr.add_argument("--stage1-epochs", type=int, default=t.stage1_epochs, help="epochs of the text-adapter stage")
    tr.add_argument("--stage2-epochs", type=int, default=t.stage2_epochs, help="epochs of the image-adapter stage")
    tr.add_argument("--stage1-lr", type=float, default=t.stage1_lr, help="learning rate of stage 1")
    tr.add_argument("--stage2-lr", type=float, default=t.stage2_lr, help="learning rate of stage 2")
    tr.add_argument("--stage1-batch-size", type=int, default=t.stage1_batch_size, help="batch size of stage 1")
    tr.add_argument("--stage2-batch-size", type=int, default=t.stage2_batch_size, help="batch size of stage 2")
    tr.add_argument("--gamma", type=float, default=t.gamma, help="weight of the disentangle loss (paper: 0.1)")
    tr.add_argument("--stage1-cls-loss", action="store_true",
                    help="add the paper's image-level loss to stage 1 (the released code has none)")
    tr.add_argument("--stage1-levels", choices=("last", "all"), default=t.stage1_levels,
                    help="stage-1 segmentation loss on the last level (released code) or all levels")
    tr.add_argument("--surgery-blocks", type=int, default=None,
                    help="stage-1 V-V attention in the last N vision blocks (default: all after the fifth)")
    tr.add_argument("--surgery-attention", choices=("released", "per-image"), default=t.surgery_attention,
                    help="stage-1 V-V attention: across the images of the batch at each token, as the released "
                         "code computes it (default), or across each image's tokens")
    tr.add_argument("--half-pixel-upsampling", action="store_true",
                    help="upsample the loss logits with align_corners=False (default: True, as released)")
    tr.add_argument("--no-augment", action="store_true", help="no rotation/translation/flip augmentation")
    tr.add_argument("--augment-interpolation", choices=("nearest", "bilinear"), default=t.augment_interpolation,
                    help="image resampling of the rotation/translation (default: nearest, as released)")
    tr.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch, for smoke runs "
                                                                  "(default: no cap)")
    tr.add_argument("--no-resume", action="store_true", help="refuse a folder that already holds checkpoints")
    tr.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _load_clip(args: argparse.Namespace) -> Any:
    from cfviz import models

    if args.clip == "tiny":
        return models.tiny_clip(seed=args.model_seed, device=args.device, like=args.clip_arch)  # its geometry
    if args.clip == "random":
        return models.random_clip(args.clip_arch, seed=args.model_seed, device=args.device)
    return models.load_clip(args.clip_arch, args.clip_pretrained, device=args.device)


#: Setting -> flag, so that configuration errors name the flag.
FLAGS: dict[str, str] = {"root": "--root", "dataset": "--dataset", "out_dir": "--out", "models.device": "--device",
                         "models.clip": "--clip", "models.clip_arch": "--clip-arch",
                         "models.clip_pretrained": "--clip-pretrained", "models.seed": "--model-seed"}

EXAMPLES = """\
examples:
  # offline smoke run on the embedded textures (tiny random-weight CLIP)
  cfviz train-aaclip --shots 2 --stage1-epochs 1 --stage2-epochs 1 --out runs/aaclip-smoke
  # the paper's protocol: train on VisA, then evaluate zero-shot on MVTec-AD
  cfviz train-aaclip --dataset visa --root /data/visa --clip pretrained --clip-arch ViT-L-14-336 \\
      --clip-pretrained openai --device cuda --out runs/aaclip-visa
  cfviz evaluate --dataset mvtec --root /data/mvtec_ad --clip pretrained --clip-arch ViT-L-14-336 \\
      --clip-pretrained openai --aaclip runs/aaclip-visa/aaclip.safetensors --method aaclip clipfusion
"""


def preflight(args: argparse.Namespace) -> None:
    """Check the data folder, the output folder, the device and the CLIP before anything loads."""
    from cfviz.evaluation.config import ModelChoice, RunSpec
    from cfviz.evaluation.preflight import check_clip, check_data_root, check_device, check_writable_folder

    choice = ModelChoice(clip=args.clip, clip_arch=args.clip_arch, clip_pretrained=args.clip_pretrained,
                         device=args.device, seed=args.model_seed)
    check_data_root(RunSpec(dataset=args.dataset, root=args.root, models=choice))
    check_writable_folder(args.out, "out_dir")
    check_device(args.device)
    check_clip(choice)


def run(args: argparse.Namespace) -> int:
    from cfviz.clip.aaclip import AAClipConfig, TrainConfig, train_aaclip
    from cfviz.data import open_dataset

    config = AAClipConfig(text_adapter_blocks=args.text_blocks, image_adapter_blocks=args.image_blocks,
                          levels=tuple(args.levels) if args.levels else None, text_lambda=args.text_lambda,
                          image_lambda=args.image_lambda, init=args.init,
                          image_size=getattr(args, "image_size", None),
                          class_names=getattr(args, "class_names", "descriptive"),
                          activation=getattr(args, "activation", "gelu"))
    train = TrainConfig(seed=args.seed, shots=args.shots, stage1_epochs=args.stage1_epochs,
                        stage2_epochs=args.stage2_epochs, stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr,
                        stage1_batch_size=args.stage1_batch_size, stage2_batch_size=args.stage2_batch_size,
                        gamma=args.gamma, stage1_cls_loss=args.stage1_cls_loss, stage1_levels=args.stage1_levels,
                        surgery_blocks=args.surgery_blocks, augment=not args.no_augment,
                        max_batches=args.max_batches,
                        surgery_attention=getattr(args, "surgery_attention", "released"),
                        align_corners=not getattr(args, "half_pixel_upsampling", False),
                        augment_interpolation=getattr(args, "augment_interpolation", "nearest"))
    preflight(args)
    dataset = open_dataset(args.dataset, args.root, categories=args.categories, split="test")
    bundle = _load_clip(args)
    report = train_aaclip(bundle, dataset, args.out, config=config, train=train, resume=not args.no_resume,
                          progress=not args.no_progress)
    for h in report.history[-report.epochs_run:] if report.epochs_run else []:
        print(f"stage {h['stage']} epoch {h['epoch']}: loss {h['loss']:.4f}")
    print(report)
    if bundle.weights == "random":
        print("note: the CLIP has random weights; the adapters show that training runs, not detection quality.")
    return 0


def add_parser(sub: Any) -> None:
    from cfviz.commands.evaluate import _defer

    p = sub.add_parser("train-aaclip", help="train AA-CLIP adapters (two stages) on an annotated data set",
                       description="Train AA-CLIP's text (stage 1) and vision (stage 2) adapters on the annotated "
                                   "test images of a data set; evaluate zero-shot on another with "
                                   "`cfviz evaluate --aaclip OUT/aaclip.safetensors`. Checkpoints are written "
                                   "after every epoch; rerunning the same command resumes after the last one.",
                       epilog=EXAMPLES)
    _defer(p, add_arguments)  # TrainConfig imports torch: only when this command is used
    p.set_defaults(func=run, cli_flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``train-aaclip`` on its own (as ``cfviz train-aaclip`` does), with cfviz's error handling."""
    from cfviz.cli import HelpFormatter, cli_message
    from cfviz.errors import CfvizError

    parser = argparse.ArgumentParser(prog="cfviz train-aaclip", formatter_class=HelpFormatter, epilog=EXAMPLES)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CfvizError as exc:
        print(f"cfviz train-aaclip: error: {cli_message(exc, FLAGS)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
