"""AA-CLIP training data: which annotated images to train on, batches, and joint augmentation.

AA-CLIP trains on the *test* split of one data set (it needs anomalies with masks; the
released ``full-shot.jsonl`` files list the VisA / MVTec-AD test images) and is evaluated
zero-shot on another data set. k-shot training takes k images per category, half normal and
half anomalous (2-shot = 1 normal + 1 anomalous), drawn with a seeded generator.

Augmentation (released code, applied jointly to image and mask): random rotation up to 30
degrees (p 0.5), random translation up to 15 % (p 0.5), horizontal and vertical flips (p 0.5
each). The released code stacks image and mask into one tensor for torchvision's
``RandomRotation`` / ``RandomAffine``, whose default resampling is nearest neighbour, so the
image is resampled by nearest neighbour too (``interpolation="nearest"``); ``"bilinear"`` for
the image is ours. The random draws are cfviz's own (seeded), not torchvision's, and the released
translation rounds to whole pixels. The released colour jitter of stage 2 is not implemented.

Example
-------
>>> import tempfile
>>> from cfviz.data import open_dataset
>>> ds = open_dataset("textures", tempfile.mkdtemp(), image_size=64, n_train=1, n_test_good=2,
...                   n_per_defect=1, categories_generated=("brick",))
>>> recs = training_records(ds, shots=2, seed=0)
>>> sorted(r.label for r in recs)
[0, 1]
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cfviz.errors import CfvizError


class TrainingDataError(CfvizError, ValueError):
    """The data set given for AA-CLIP training cannot train it (no anomalies, no masks, ...)."""


def training_records(dataset: Any, *, shots: int | None = None, seed: int = 0, split: str = "test",
                     categories: Sequence[str] | None = None) -> list[Any]:
    """The records AA-CLIP trains on, sorted by image id.

    Parameters
    ----------
    dataset:
        An :class:`~cfviz.data.samples.AnomalyDataset` with pixel masks (open it with
        ``split="test"`` or ``"all"``).
    shots:
        ``None`` for every image (full-shot), else k per category: ``k // 2`` normal and
        ``k - k // 2`` anomalous.
    seed:
        Seed of the k-shot draw (per category: ``seed`` and a CRC of the category name).
    split:
        Which split to train on (``"test"``: the annotated images).
    categories:
        Only these categories (default: all).
    """
    name = getattr(dataset, "name", type(dataset).__name__)
    if not getattr(dataset, "has_masks", False):
        raise TrainingDataError(f"{name} has no pixel masks; AA-CLIP's segmentation losses need them: train on an "
                                "annotated data set such as VisA or MVTec-AD (their test split)")
    recs = [r for r in dataset.records if r.split == split and (categories is None or r.category in categories)]
    if not recs:
        raise TrainingDataError(f"{name} has no {split!r} images{' in ' + str(list(categories)) if categories else ''}; "
                                f"open the data set with split='{split}' or 'all'")
    unannotated = [r for r in recs if r.label == 1 and r.mask_path is None]
    if unannotated:
        warnings.warn(f"{len(unannotated)} anomalous images of {name} have no mask and are left out of AA-CLIP "
                      f"training (e.g. {unannotated[0].image_id})", stacklevel=2)
        recs = [r for r in recs if not (r.label == 1 and r.mask_path is None)]
    if not any(r.label == 1 for r in recs):
        raise TrainingDataError(f"the {split!r} split of {name} has no anomalous images with masks; AA-CLIP learns "
                                "from annotated anomalies: train on a data set's test split (e.g. VisA) and "
                                "evaluate zero-shot on another")
    recs = sorted(recs, key=lambda r: r.image_id)
    if shots is None:
        return recs
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be a positive integer (k images per category) or None for all, got {shots!r}")
    chosen = []
    for cat in sorted({r.category for r in recs}):
        rng = np.random.default_rng([int(seed), zlib.crc32(cat.encode())])
        for label, k in ((0, shots // 2), (1, shots - shots // 2)):
            pool = [r for r in recs if r.category == cat and r.label == label]
            if len(pool) < k:
                warnings.warn(f"{cat}: {k} {'anomalous' if label else 'normal'} images asked for, {len(pool)} "
                              "available; using all of them", stacklevel=2)
            idx = rng.permutation(len(pool))[:k]
            chosen.extend(pool[i] for i in sorted(idx))
    return sorted(chosen, key=lambda r: r.image_id)


def load_batch(dataset: Any, records: Sequence[Any], size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                         list[str]]:
    """Images ``(B, 3, S, S)`` (CLIP-normalised), masks ``(B, S, S)``, labels ``(B,)`` and class names."""
    from cfviz.data.transforms import clip_transform, mask_to_tensor

    images, masks, labels, names = [], [], [], []
    for rec in records:
        s = dataset.load(rec)
        images.append(clip_transform(s.image, size))
        mask = s.mask if s.mask is not None else np.zeros(np.asarray(s.image).shape[:2], np.uint8)
        masks.append(mask_to_tensor(mask, size))
        labels.append(int(s.label))
        names.append(s.category)
    return torch.stack(images), torch.stack(masks), torch.tensor(labels), names


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """A seeded permutation of ``range(n)`` cut into batches (the last may be smaller).

    >>> shuffled_batches(5, 2, torch.Generator().manual_seed(0))
    [[4, 0], [1, 3], [2]]
    """
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


#: Image resampling of :func:`augment`: nearest neighbour (released) or bilinear (ours).
AUGMENT_INTERPOLATIONS = ("nearest", "bilinear")


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, *, max_degrees: float = 30.0,
            max_translate: float = 0.15, p: float = 0.5, interpolation: str = "nearest"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation, translation and flips applied jointly to ``images (B, 3, S, S)`` and ``masks (B, S, S)``.

    Images are resampled by ``interpolation`` (``"nearest"`` as released, or ``"bilinear"``),
    masks always by nearest neighbour; pixels moved in from outside are 0 (the mean colour
    after CLIP normalisation, and "normal" in the mask).

    >>> x, m = torch.randn(2, 3, 8, 8), torch.zeros(2, 8, 8)
    >>> [t.shape for t in augment(x, m, torch.Generator().manual_seed(0))]
    [torch.Size([2, 3, 8, 8]), torch.Size([2, 8, 8])]
    """
    if interpolation not in AUGMENT_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {AUGMENT_INTERPOLATIONS} (released code: nearest), got "
                         f"{interpolation!r}")
    b = images.shape[0]

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    angle = torch.where(draw(b) < p, (draw(b) * 2 - 1) * math.radians(max_degrees), torch.zeros(b))
    shift = torch.where(draw(b, 1) < p, (draw(b, 2) * 2 - 1) * max_translate * 2, torch.zeros(b, 2))
    flip = torch.where(draw(b, 2) < p, -torch.ones(b, 2), torch.ones(b, 2))  # (x, y) sign
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip[:, 0], -sin * flip[:, 1], shift[:, 0]], 1),
                         torch.stack([sin * flip[:, 0], cos * flip[:, 1], shift[:, 1]], 1)], 1)
    theta = theta.to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out_img = F.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    out_mask = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)[:, 0]
    return out_img, out_mask
