"""AA-CLIP in the evaluation runner: extraction into the store and maps/scores from it.

At extraction (``ExtractionConfig.aaclip`` = an adapter checkpoint), every image gets
``aaclip/map/anomaly`` (the blurred sum of level maps on the patch grid), ``aaclip/map/level_<l>``
and ``aaclip/image`` (``(<det, T_A> + 1) / 2``). The checkpoint's SHA-256 is part of the
extraction settings, so a store written with other adapters (or none) is refused.

AA-CLIP runs as its authors run it unless told otherwise (each default from the released code,
``methods.md`` 3.1-3.2): at the checkpoint's image size (518 px with interpolated position
embeddings on ViT-L-14-336, whatever size the CLIP branch takes; ``extraction.aaclip_size``
overrides it), with the checkpoint's class names (descriptive ``REAL_NAMES``;
``extraction.aaclip_names`` overrides them), and from a training folder the stage-2 checkpoint of
the paper's epoch 15 (``resolve_checkpoint(..., epoch=N)`` picks another). Its images are
resized from the originals (bicubic, CLIP mean/std), not from the CLIP branch's smaller batch.
Where cfviz still differs from the released evaluation: pixel metrics are taken on the run's
evaluation grid (``scoring.eval_size``, one rule for every method) rather than at 518 px, and
the medical image-score rule (the map's maximum alone) is only in the Python API
(:func:`~cfviz.clip.aaclip.model.released_image_scores`, ``pixel_weight=1.0``).

The CLIP's MLP activation while AA-CLIP runs is the checkpoint's ``activation`` (exact GELU for
a new training, as released, whatever activation the CLIP was loaded with); the store records
the activation that ran (:func:`identity`, ``store.json`` key ``aaclip``), and a later run that
would compute AA-CLIP with another one is refused.

At scoring:

* method ``aaclip`` — AA-CLIP alone as released: the anomaly map upsampled to the evaluation
  grid (bilinear, ``align_corners=True``; ``scoring.aaclip_upsample="half_pixel"`` is ours; no
  further smoothing) and the industrial image score of the released ``metrics_eval``: the
  category's pixel maps min-max normalised over all their pixels, the scores over the
  category, then ``0.5 * max(map) + 0.5 * score``;
* ``ScoringConfig.clip_branch = "aaclip"`` — CLIPFusion / PatchCLIP take AA-CLIP's map and
  image score (the same two functions) as their CLIP language branch (``M_clip_L``) instead of
  PatchCLIP's. In k-shot, ``M_clip_V`` stays PatchCLIP's memory-bank map (AA-CLIP has no few-shot
  memory at test time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cfviz.errors import CfvizError
from cfviz.models.fingerprint import sha256_file as file_sha256  # the public name stays importable here

PREFIX = "aaclip"


class MissingAAClipError(CfvizError, KeyError):
    """AA-CLIP outputs were asked for from a store extracted without adapters."""


def resolve_checkpoint(path: str | None, epoch: int | None = None) -> tuple[str | None, str | None]:
    """``(absolute path, sha256)`` of an adapter checkpoint, or ``(None, None)``; clear error if missing.

    ``path`` is a checkpoint file or a training folder (``cfviz train-aaclip --out DIR``). From a
    folder, ``epoch`` picks that stage-2 epoch's file; ``None`` picks the paper's epoch
    (:data:`~cfviz.clip.aaclip.checkpoint.PAPER_EPOCH`, 15) when the folder holds it, else the
    final ``aaclip.safetensors`` (a run of fewer epochs). An ``epoch`` with a file is refused.
    """
    from cfviz.clip.aaclip.checkpoint import PAPER_EPOCH, CheckpointError, epoch_checkpoint, epoch_checkpoints

    if path is None:
        if epoch is not None:
            raise CheckpointError("--aaclip-epoch chooses a checkpoint from the training folder given as --aaclip; "
                                  "pass --aaclip DIR (from `cfviz train-aaclip --out DIR`)")
        return None, None
    p = Path(path).expanduser()
    if epoch is not None:
        if not p.is_dir():
            raise CheckpointError(f"--aaclip-epoch {epoch} chooses a file from a training folder, but --aaclip {path} "
                                  "is not a folder; pass the folder `cfviz train-aaclip --out DIR` wrote, or drop "
                                  "--aaclip-epoch to use this file")
        p = epoch_checkpoint(p, epoch)
    elif p.is_dir():
        paper = [f for s, e, f in epoch_checkpoints(p) if (s, e) == (2, PAPER_EPOCH)]
        if paper:
            p = paper[0]
        elif (p / "aaclip.safetensors").is_file():
            p = p / "aaclip.safetensors"
    if not p.is_file():
        raise CheckpointError(f"--aaclip {path}: no such checkpoint; train one with `cfviz train-aaclip --out DIR` "
                              "and pass DIR/aaclip.safetensors")
    return str(p.resolve()), file_sha256(p)


def load(bundle: Any, extraction: Any) -> Any:
    """The :class:`~cfviz.clip.aaclip.AAClip` the extraction asks for, or ``None``.

    The checkpoint must still have the SHA-256 recorded in the extraction settings.
    """
    from cfviz.clip.aaclip.checkpoint import CheckpointError, load_aaclip

    path = getattr(extraction, "aaclip", None)
    if not path:
        return None
    digest = getattr(extraction, "aaclip_sha256", None)
    if digest is not None and Path(path).is_file() and file_sha256(path) != digest:
        raise CheckpointError(f"{path} changed since this store was configured (SHA-256 differs); extract into a "
                              "new store, or restore the checkpoint")
    return load_aaclip(path, bundle, image_size=getattr(extraction, "aaclip_size", None),
                       class_names=getattr(extraction, "aaclip_names", None))


def arrays(model: Any, clip_images: Any, categories: Sequence[str], images: Sequence[Any] | None = None
           ) -> list[dict[str, Any]]:
    """Per image, AA-CLIP's store entries (``aaclip/...`` float32 tensors).

    ``images`` (the original pictures) are resized to AA-CLIP's own input size, as the released
    code resizes its data set images to 518 px. Without them, ``clip_images`` is used when it has
    that size, else it is resized (bicubic, from the CLIP branch's batch).
    """
    import torch
    from torch.nn import functional as F

    size = model.image_size
    if images is not None:
        from cfviz.data.transforms import clip_transform

        batch = torch.stack([clip_transform(im, size, mean=model.bundle.mean, std=model.bundle.std) for im in images])
    elif tuple(clip_images.shape[-2:]) != (size, size):
        batch = F.interpolate(clip_images.float(), size=(size, size), mode="bicubic", align_corners=False)
    else:
        batch = clip_images
    res = model.predict(batch, list(categories))  # names: AAClip maps categories to prompt words
    return [res.arrays(i, prefix=PREFIX) for i in range(len(categories))]


def require(store: Any, ids: Sequence[str]) -> None:
    """Raise a clear ``KeyError`` when the store holds no AA-CLIP outputs."""
    if ids and f"{PREFIX}/map/anomaly" not in store[ids[0]].names:
        raise MissingAAClipError(f"the store at {store.path} holds no AA-CLIP outputs; evaluate with --aaclip CHECKPOINT "
                       "(a file from `cfviz train-aaclip`) into a new store")


def stored(store: Any, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """AA-CLIP anomaly maps ``(N, gh, gw)`` and detection scores ``(N,)`` from the store."""
    require(store, ids)
    maps, scores = [], []
    for image_id in ids:
        t = store[image_id].load([f"{PREFIX}/map/anomaly", f"{PREFIX}/image"])
        maps.append(t[f"{PREFIX}/map/anomaly"].float().numpy())
        scores.append(float(t[f"{PREFIX}/image"].reshape(-1)[0]))
    return np.stack(maps), np.asarray(scores, dtype=np.float32)


def identity(model: Any) -> dict[str, Any]:
    """What the store records of the AA-CLIP that ran (``store.confirm("aaclip", ...)``): its activation.

    ``activation`` is the MLP activation the CLIP actually ran with under AA-CLIP (``"gelu"`` or
    ``"quick_gelu"``), the checkpoint's setting resolved against the loaded CLIP.

    >>> from cfviz.clip.aaclip import AAClip
    >>> from cfviz.models import tiny_clip
    >>> identity(AAClip(tiny_clip(seed=0)))
    {'activation': 'gelu'}
    """
    from cfviz.clip.aaclip.encoders import model_activation

    with model.activation():
        return {"activation": model_activation(model.bundle.model)}


def upsample(maps: np.ndarray, size: Any, mode: str = "align_corners") -> np.ndarray:
    """AA-CLIP's patch-grid maps ``(N, gh, gw)`` as pixel maps (see :func:`~cfviz.clip.aaclip.model.upsample_maps`)."""
    from cfviz.clip.aaclip.model import upsample_maps

    return upsample_maps(maps, size, mode)


def image_scores(pixel_maps: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The released industrial image score over one category from its *pixel* maps (:func:`upsample`).

    See :func:`~cfviz.clip.aaclip.model.released_image_scores`.
    """
    from cfviz.clip.aaclip.model import released_image_scores

    return released_image_scores(pixel_maps, scores)
