"""Two-stage AA-CLIP training with per-epoch safetensors checkpoints and exact resume.

Stage 1 (text): only the text adapters and ``text_proj`` learn. Patch features come from the
frozen CLIP (``ln_post`` -> ``proj`` -> normalise at each level; the released code runs the
last ``surgery_blocks`` blocks with V-V attention and adds the normalised class embedding of
the unmodified CLIP to every patch). ``surgery_attention`` says along which axis that V-V
attention runs: ``"released"`` (default) reproduces the released block, which receives
sequence-first tokens but reads them as batch-first, so at each token position the *images of
the batch* attend to each other (with batch size 1 each token keeps its own values) -- probably
an upstream slip, but it is what trained the published text adapters; ``"per-image"`` (ours)
attends over each image's own tokens, as the DPAM surgery is described. Loss: segmentation
loss (released code: last level only, ``stage1_levels="last"``; ``"all"`` sums the levels)
``+ gamma * (mean <T_N, T_A>)^2``;
``stage1_cls_loss=True`` adds the paper's image-level cross-entropy (Eq. 4; the released code
leaves it out, see ``methods.md`` 3.4).

Stage 2 (vision): text frozen (anchors computed once), vision adapters, ``seg_proj`` and
``det_proj`` learn. Loss: ``sum_levels seg_loss + CE(det . T, label)``; MultiStepLR on iterations.

Both stages upsample the level logits to the mask bilinearly with ``align_corners=True``
(``align_corners``; released ``calculate_similarity_map``) and augment images with nearest
resampling (``augment_interpolation``; torchvision's default in the released transforms).

Defaults are the released ``train.py``'s (seed 111, Adam betas (0.5, 0.999), stage 1: 5 epochs,
lr 1e-5, batch 16; stage 2: 20 epochs, lr 5e-4, batch 2, milestones 16000/32000, gamma 0.5).

Files in ``out_dir``: ``stage<s>_epoch_<e>.safetensors`` after every epoch (adapters, Adam
state, data-generator state, metadata with both configs, seeds, loss history and a digest of
the training images), and ``aaclip.safetensors`` (the final adapters) at the end. A rerun with
the same settings resumes after the last epoch written; more epochs than before extend a run.

Example
-------
>>> import tempfile
>>> from cfviz.data import open_dataset
>>> from cfviz.models import tiny_clip
>>> ds = open_dataset("textures", tempfile.mkdtemp(), image_size=64, n_train=1, n_test_good=2,
...                   n_per_defect=1, categories_generated=("brick",))
>>> cfg = TrainConfig(shots=2, stage1_epochs=1, stage2_epochs=1, stage1_batch_size=2, augment=False)
>>> rep = train_aaclip(tiny_clip(seed=0), ds, tempfile.mkdtemp(), train=cfg, progress=False)
>>> [p.name for p in rep.checkpoints], rep.final.name
(['stage1_epoch_001.safetensors', 'stage2_epoch_001.safetensors'], 'aaclip.safetensors')
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from cfviz.clip.aaclip.checkpoint import (CheckpointError, checkpoint_name, check_same_model, epoch_checkpoints,
                                          read_checkpoint, save_checkpoint)
from cfviz.clip.aaclip.config import AAClipConfig, depths
from cfviz.clip.aaclip.data import AUGMENT_INTERPOLATIONS, augment, load_batch, shuffled_batches, training_records
from cfviz.clip.aaclip.losses import classification_loss, disentangle_loss, segmentation_loss
from cfviz.clip.aaclip.model import AAClip

FINAL_NAME = "aaclip.safetensors"
#: TrainConfig fields that may change when a run is resumed (they only extend it)
_EXTENDABLE = ("stage1_epochs", "stage2_epochs")
#: Stage-1 V-V attention axis: across the batch at each token (released) or across each image's tokens
SURGERY_ATTENTION = {"released": "batch", "per-image": "tokens"}
#: TrainConfig fields added later, with the value runs written before them trained with
_LEGACY_TRAIN = {"align_corners": False, "surgery_attention": "per-image", "augment_interpolation": "bilinear"}


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (defaults: the released ``train.py``). See the module doc for their meaning.

    ``max_batches`` caps the batches per epoch (smoke runs); ``None`` uses every image.
    ``surgery_attention`` (``"released"`` | ``"per-image"``), ``align_corners`` (``True`` as
    released) and ``augment_interpolation`` (``"nearest"`` as released | ``"bilinear"``) are the
    released behaviours with cfviz's earlier ones as named alternatives.
    """

    seed: int = 111
    shots: int | None = None
    stage1_epochs: int = 5
    stage1_lr: float = 1e-5
    stage1_batch_size: int = 16
    stage2_epochs: int = 20
    stage2_lr: float = 5e-4
    stage2_batch_size: int = 2
    betas: tuple[float, float] = (0.5, 0.999)
    milestones: tuple[int, ...] = (16000, 32000)
    lr_gamma: float = 0.5
    gamma: float = 0.1
    stage1_cls_loss: bool = False
    stage1_levels: str = "last"
    stage1_add_cls: bool = True
    surgery_blocks: int | None = None
    augment: bool = True
    max_batches: int | None = None
    surgery_attention: str = "released"
    align_corners: bool = True
    augment_interpolation: str = "nearest"

    def validate(self) -> None:
        for key, least in (("stage1_epochs", 0), ("stage2_epochs", 0), ("stage1_batch_size", 1),
                           ("stage2_batch_size", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"{key} must be a {'positive' if least else 'non-negative'} integer, got {v!r}")
        for key in ("stage1_lr", "stage2_lr"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)!r}")
        if self.stage1_levels not in ("last", "all"):
            raise ValueError(f"stage1_levels must be 'last' (released code) or 'all', got {self.stage1_levels!r}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise ValueError(f"max_batches must be a positive integer or None, got {self.max_batches!r}")
        if self.gamma < 0:
            raise ValueError(f"gamma (disentangle-loss weight) must be >= 0, got {self.gamma!r}")
        if self.surgery_attention not in SURGERY_ATTENTION:
            raise ValueError(f"surgery_attention must be one of {', '.join(SURGERY_ATTENTION)} (released code: "
                             f"released), got {self.surgery_attention!r}")
        if not isinstance(self.align_corners, bool):
            raise ValueError(f"align_corners must be True (released code) or False, got {self.align_corners!r}")
        if self.augment_interpolation not in AUGMENT_INTERPOLATIONS:
            raise ValueError(f"augment_interpolation must be one of {', '.join(AUGMENT_INTERPOLATIONS)} (released "
                             f"code: nearest), got {self.augment_interpolation!r}")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; settings a run was written without take the values it trained with."""
        names = {f.name for f in fields(cls)}
        data = {**_LEGACY_TRAIN, **data}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


@dataclass
class TrainReport:
    """What :func:`train_aaclip` did."""

    model: AAClip
    out_dir: Path
    final: Path
    checkpoints: list[Path]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Path | None = None
    epochs_run: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        resumed = f", resumed from {self.resumed_from.name}" if self.resumed_from else ""
        return f"{self.epochs_run} epochs run{resumed} in {self.seconds:.1f} s; final adapters: {self.final}"


# ---------------------------------------------------------------------------------------- losses per batch
def surgery_from(bundle: Any, surgery_blocks: int | None) -> int | None:
    """First block index run with V-V attention in stage 1 (``None``: none).

    ``surgery_blocks=None`` uses the released choice scaled to the depth: every block after the
    fifth (19 of 24 on ViT-L-14-336; none on models with at most 5 blocks).
    """
    depth = depths(bundle)[0]
    n = max(depth - 5, 0) if surgery_blocks is None else int(surgery_blocks)
    if not 0 <= n <= depth:
        raise ValueError(f"surgery_blocks must be in 0..{depth} for {bundle.name}, got {surgery_blocks!r}")
    return depth - n if n else None


def frozen_patch_features(model: AAClip, images: torch.Tensor, train: TrainConfig) -> list[torch.Tensor]:
    """Stage-1 patch features per level ``(B, L, D)`` from the frozen CLIP (no gradients)."""
    from cfviz.clip.aaclip.encoders import vision_tokens

    bundle = model.bundle
    visual = bundle.model.visual
    with torch.no_grad(), model.activation():
        tokens = vision_tokens(bundle, images, levels=model.config.levels,
                               vv_from=surgery_from(bundle, train.surgery_blocks),
                               vv_axis=SURGERY_ATTENTION[train.surgery_attention])
        feats = [F.normalize((visual.ln_post(tokens[lv][:, 1:]) @ visual.proj).float(), dim=-1)
                 for lv in model.config.levels]
        if train.stage1_add_cls:
            cls = F.normalize(bundle.model.encode_image(images).float(), dim=-1)
            feats = [f + cls[:, None] for f in feats]
    return feats


def stage1_loss(model: AAClip, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                class_names: Sequence[str], train: TrainConfig,
                features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-1 loss of one batch and its parts (``seg``, ``dis``, ``cls``)."""
    feats = features if features is not None else frozen_patch_features(model, images, train)
    anchors = model.anchors(list(class_names), cache=False)  # (B, 2, D) with gradients
    used = feats[-1:] if train.stage1_levels == "last" else feats
    seg = sum(segmentation_loss(model.similarity(f, anchors), masks, align_corners=train.align_corners)
              for f in used)
    dis = disentangle_loss(anchors)
    loss = seg + train.gamma * dis
    parts = {"seg": float(seg.detach()), "dis": float(dis.detach())}
    if train.stage1_cls_loss:
        with torch.no_grad(), model.activation():
            cls = F.normalize(model.bundle.model.encode_image(images).float(), dim=-1)
        c = classification_loss(cls, anchors, labels)
        loss = loss + c
        parts["cls"] = float(c.detach())
    return loss, parts


def stage2_loss(model: AAClip, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                anchors: torch.Tensor, *, align_corners: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-2 loss of one batch: segmentation loss summed over levels + image cross-entropy.

    ``align_corners``: how the level logits are upsampled to the masks (``True`` as released).
    """
    logits, det = model.forward(images, anchors)
    seg = sum(segmentation_loss(s, masks, align_corners=align_corners) for s in logits)
    cls = classification_loss(det, anchors, labels)
    return seg + cls, {"seg": float(seg.detach()), "cls": float(cls.detach())}


# ---------------------------------------------------------------------------------------- optimiser state I/O
def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {f"optim/{i}/{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, json.dumps(sd["param_groups"])


def _load_optim(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optim/"):
            _, i, k = name.split("/", 2)
            state.setdefault(int(i), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


# ---------------------------------------------------------------------------------------- the loop
def _check_resumable(meta: dict[str, str], path: Path, config: AAClipConfig, train: TrainConfig,
                     data: dict[str, Any], bundle: Any) -> None:
    check_same_model(meta, bundle, path)
    fix = "use another out_dir, or train with the settings stored there"
    stored_config = {"activation": "model", **json.loads(meta["config"])}  # written before the setting: "model"
    if stored_config != config.to_json():
        raise CheckpointError(f"{path.parent} holds a run with another AA-CLIP config; {fix}")
    stored = {**_LEGACY_TRAIN, **json.loads(meta["train_config"])}  # a run written before these settings
    now = train.to_json()
    diff = sorted(k for k in now if k not in _EXTENDABLE and stored.get(k) != now[k])
    if diff:
        raise CheckpointError(f"{path.parent} holds a run with other training settings ({', '.join(diff)}); {fix}")
    if json.loads(meta["data"])["ids_sha256"] != data["ids_sha256"]:
        raise CheckpointError(f"{path.parent} holds a run trained on other images; {fix}")
    stage = int(meta["stage"])
    if stage == 2 and stored["stage1_epochs"] != now["stage1_epochs"]:
        raise CheckpointError(f"{path.parent}: stage 1 finished with {stored['stage1_epochs']} epochs; keep "
                              f"stage1_epochs={stored['stage1_epochs']} to resume, or {fix}")
    if int(meta["epoch"]) > (now["stage1_epochs"] if stage == 1 else now["stage2_epochs"]):
        raise CheckpointError(f"{path.name} is past the epochs asked for; raise the epoch count or {fix}")


def train_aaclip(bundle: Any, dataset: Any, out_dir: str | os.PathLike[str], *, config: AAClipConfig | None = None,
                 train: TrainConfig | None = None, categories: Sequence[str] | None = None, resume: bool = True,
                 progress: bool = True) -> TrainReport:
    """Train AA-CLIP adapters on the annotated images of ``dataset``; return the trained model.

    Parameters
    ----------
    bundle:
        The frozen CLIP (:func:`cfviz.models.load_clip`, ``tiny_clip`` for tests).
    dataset:
        An annotated data set (its test split; see :func:`~cfviz.clip.aaclip.data.training_records`).
    out_dir:
        Folder for the epoch checkpoints and ``aaclip.safetensors``.
    config, train:
        :class:`~cfviz.clip.aaclip.config.AAClipConfig` and :class:`TrainConfig`.
    categories:
        Train on these categories only.
    resume:
        Continue after the last checkpoint in ``out_dir`` (settings must match); ``False``
        refuses a folder that already holds checkpoints.
    """
    from cfviz.utils.progress import progress_bar

    start_time = time.perf_counter()
    train = train or TrainConfig()
    train.validate()
    config = (config or AAClipConfig()).resolve(bundle)
    surgery_from(bundle, train.surgery_blocks)  # validate before any work
    records = training_records(dataset, shots=train.shots, seed=train.seed, categories=categories)
    ids = "\n".join(r.image_id for r in records)
    data = {"dataset": getattr(dataset, "name", type(dataset).__name__), "images": len(records),
            "anomalous": sum(r.label for r in records), "categories": sorted({r.category for r in records}),
            "ids_sha256": hashlib.sha256(ids.encode()).hexdigest()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = AAClip(bundle, config, seed=train.seed)
    gen = torch.Generator().manual_seed(train.seed)
    history: list[dict[str, Any]] = []
    done = (1, 0)  # (stage, epochs finished in it)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    existing = epoch_checkpoints(out)
    resumed_from = None
    if existing:
        last = existing[-1][2]
        if not resume:
            raise CheckpointError(f"{out} already holds AA-CLIP checkpoints (last: {last.name}); pass resume=True "
                                  "(CLI: drop --no-resume) to continue, or choose an empty folder")
        tensors, meta = read_checkpoint(last)
        _check_resumable(meta, last, config, train, data, bundle)
        model.adapters.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("adapters/")})
        gen.set_state(tensors["rng/shuffle"])
        history = json.loads(meta.get("history", "[]"))
        done = (int(meta["stage"]), int(meta["epoch"]))
        resumed_from = last
    device = torch.device(bundle.device)
    size = model.image_size  # config.image_size (518 on ViT-L-14-336, as the released code trains)
    checkpoints = [p for _, _, p in existing]
    epochs_run = 0

    def batches(batch_size: int) -> list[list[int]]:
        bs = shuffled_batches(len(records), batch_size, gen)
        return bs[:train.max_batches] if train.max_batches else bs

    def save(stage: int, epoch: int, opt: torch.optim.Optimizer, extra_meta: dict[str, Any]) -> Path:
        opt_t, groups = _optim_tensors(opt)
        path = out / checkpoint_name(stage, epoch)
        save_checkpoint(path, model, extra={**opt_t, "rng/shuffle": gen.get_state()},
                        metadata={"stage": stage, "epoch": epoch, "train_config": train.to_json(), "data": data,
                                  "history": history, "optim_groups": groups, **extra_meta})
        checkpoints.append(path)
        return path

    def run_epoch(stage: int, epoch: int, total: int, opt: torch.optim.Optimizer, loss_of: Any,
                  sched: Any = None) -> None:
        """One epoch of optimiser steps on ``loss_of(images, masks, labels, names) -> (loss, parts)``."""
        nonlocal epochs_run
        bs = batches(train.stage1_batch_size if stage == 1 else train.stage2_batch_size)
        bar = progress_bar(total=len(bs), desc=f"AA-CLIP stage {stage} epoch {epoch}/{total}", unit="batch",
                           disable=not progress)
        losses: list[float] = []
        parts_sum: dict[str, float] = {}
        try:
            for idx in bs:
                images, masks, labels, names = load_batch(dataset, [records[i] for i in idx], size)
                if train.augment:
                    images, masks = augment(images, masks, gen, interpolation=train.augment_interpolation)
                opt.zero_grad(set_to_none=True)
                loss, parts = loss_of(images.to(device), masks.to(device), labels.to(device), names)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                losses.append(float(loss.detach()))
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        finally:
            bar.close()
        history.append({"stage": stage, "epoch": epoch, "loss": sum(losses) / max(len(losses), 1),
                        "losses": losses, **{k: v / max(len(losses), 1) for k, v in parts_sum.items()}})
        epochs_run += 1

    # ------------------------------------------------------------------ stage 1: text
    if done[0] == 1 and done[1] < train.stage1_epochs:
        opt1 = torch.optim.Adam(model.adapters.text_parameters(), lr=train.stage1_lr, betas=train.betas)
        if resumed_from is not None and int(meta["stage"]) == 1:
            _load_optim(opt1, tensors, meta["optim_groups"])
        model.adapters.train()
        for epoch in range(done[1] + 1, train.stage1_epochs + 1):
            run_epoch(1, epoch, train.stage1_epochs, opt1, lambda *batch: stage1_loss(model, *batch, train))
            save(1, epoch, opt1, {})
        done = (1, train.stage1_epochs)

    # ------------------------------------------------------------------ stage 2: vision
    model.adapters.eval()
    model.clear_cache()
    if train.stage2_epochs and (done[0] == 1 or done[1] < train.stage2_epochs):
        class_names = sorted({r.category for r in records})
        with torch.no_grad():
            table = dict(zip(class_names, model.anchors(class_names, cache=False)))
        opt2 = torch.optim.Adam(model.adapters.image_parameters(), lr=train.stage2_lr, betas=train.betas)
        step_count = 0
        if resumed_from is not None and int(meta["stage"]) == 2:
            _load_optim(opt2, tensors, meta["optim_groups"])
            step_count = int(meta.get("global_step", 0))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=list(train.milestones), gamma=train.lr_gamma)
        sched.last_epoch = step_count  # then counts the optimiser steps of stage 2 (one sched.step() each)
        model.adapters.train()

        def loss2(images: Any, masks: Any, labels: Any, names: list[str]) -> tuple[Any, dict[str, float]]:
            return stage2_loss(model, images, masks, labels, torch.stack([table[n] for n in names]),
                               align_corners=train.align_corners)

        first = done[1] + 1 if done[0] == 2 else 1
        for epoch in range(first, train.stage2_epochs + 1):
            run_epoch(2, epoch, train.stage2_epochs, opt2, loss2, sched)
            save(2, epoch, opt2, {"global_step": sched.last_epoch})
    model.adapters.eval()
    model.clear_cache()
    final = save_checkpoint(out / FINAL_NAME, model, metadata={"train_config": train.to_json(), "data": data,
                                                               "history": history, "stage": "final"})
    return TrainReport(model=model, out_dir=out, final=final, checkpoints=checkpoints, history=history,
                       resumed_from=resumed_from, epochs_run=epochs_run, seconds=time.perf_counter() - start_time)
