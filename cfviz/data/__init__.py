"""Data sets, samples and model-input transforms.

Readers (all return an :class:`AnomalyDataset` of lazily loaded :class:`Sample` objects):

============  ===================================  ==========================================
kind          class                                data
============  ===================================  ==========================================
mvtec         :class:`MVTecAD`                     MVTec-AD (15 categories), root required
visa          :class:`VisA`                        VisA from ``split_csv/1cls.csv``, root required
folder        :class:`FolderDataset`               any folder in the MVTec-AD layout
textures      :class:`TexturesDataset`             the embedded set made from scikit-image
                                                   textures (generated on first use)
conformal     :class:`ConformalTextiles`           conformal-clip-data textiles (no masks)
============  ===================================  ==========================================

Importing this package is light (no torch, pandas or matplotlib); every public name is
imported on first use.

Example
-------
>>> import cfviz.data
>>> open_dataset("mvtec", "/data/mvtec_ad", categories=["bottle"])  # doctest: +SKIP
>>> open_dataset("imagenet")
Traceback (most recent call last):
...
cfviz.errors.DatasetError: unknown data set kind 'imagenet'; valid kinds: conformal, folder, mvtec, textures, visa.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Any

from cfviz.errors import DatasetError
from cfviz.utils.lazy import lazy_names

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "SampleRecord": "cfviz.data.samples", "Sample": "cfviz.data.samples",
    "AnomalyDataset": "cfviz.data.samples", "sample_references": "cfviz.data.samples",
    "make_image_id": "cfviz.data.samples", "limit_records": "cfviz.data.samples",
    "read_image": "cfviz.data.images", "read_mask": "cfviz.data.images", "binarise_mask": "cfviz.data.images",
    "DataConversionWarning": "cfviz.data.images", "IMAGE_EXTENSIONS": "cfviz.data.images",
    "MVTecAD": "cfviz.data.mvtec", "FolderDataset": "cfviz.data.mvtec", "MVTEC_CATEGORIES": "cfviz.data.mvtec",
    "VisA": "cfviz.data.visa", "VISA_CATEGORIES": "cfviz.data.visa",
    "TexturesDataset": "cfviz.data.textures", "generate_textures": "cfviz.data.textures",
    "ensure_textures": "cfviz.data.textures", "TEXTURE_CATEGORIES": "cfviz.data.textures",
    "DEFECT_KINDS": "cfviz.data.textures", "default_data_dir": "cfviz.data.textures",
    "ConformalTextiles": "cfviz.data.conformal",
    "clip_transform": "cfviz.data.transforms", "diffusion_transform": "cfviz.data.transforms",
    "resize_mask": "cfviz.data.transforms", "to_rgb": "cfviz.data.transforms",
    "clip_batch": "cfviz.data.transforms", "diffusion_batch": "cfviz.data.transforms",
    "mask_batch": "cfviz.data.transforms", "mask_to_tensor": "cfviz.data.transforms",
    "CLIP_MEAN": "cfviz.data.transforms", "CLIP_STD": "cfviz.data.transforms",
}

# kind -> (module, class, whether root is required)
DATASET_KINDS: dict[str, tuple[str, str, bool]] = {
    "conformal": ("cfviz.data.conformal", "ConformalTextiles", False),
    "folder": ("cfviz.data.mvtec", "FolderDataset", True),
    "mvtec": ("cfviz.data.mvtec", "MVTecAD", True),
    "textures": ("cfviz.data.textures", "TexturesDataset", False),
    "visa": ("cfviz.data.visa", "VisA", True),
}

# kinds that never carry pixel masks (image labels only)
MASKLESS_KINDS: frozenset[str] = frozenset({"conformal"})

__all__ = ["DATASET_KINDS", "MASKLESS_KINDS", "dataset_has_masks", "open_dataset", *sorted(_LAZY)]


def dataset_has_masks(kind: str, options: dict[str, Any] | None = None) -> bool:
    """Whether a data set of ``kind`` opened with reader ``options`` has pixel masks, without
    opening it (for messages and summaries).

    >>> dataset_has_masks("conformal"), dataset_has_masks("mvtec"), dataset_has_masks("folder", {"has_masks": False})
    (False, True, False)
    """
    key = kind.lower().strip() if isinstance(kind, str) else kind
    return key not in MASKLESS_KINDS and bool((options or {}).get("has_masks", True))


def open_dataset(kind: str, root: str | os.PathLike[str] | None = None, *,
                 categories: str | Iterable[str] | None = None, split: str = "test", **kwargs: Any) -> Any:
    """Open a data set by kind: ``"mvtec"``, ``"visa"``, ``"folder"``, ``"textures"`` or ``"conformal"``.

    ``root`` is required for mvtec, visa and folder; optional for textures (default folder,
    generated on first use) and conformal (the installed package). Other keyword arguments go
    to the reader class (e.g. ``missing_masks="warn"``, ``seed=``, ``n_train=``).

    Every reader takes ``limit_per_type=N``: keep the first N test images of each (category,
    defect type) in sorted image-id order, and every training image (a deterministic subset for
    quick runs; ``cfviz evaluate --limit-per-type N``). N must be an int >= 1.

    Raises
    ------
    DatasetError : unknown kind (the message lists the valid ones) or a missing root.
    """
    key = kind.lower().strip() if isinstance(kind, str) else kind
    if key not in DATASET_KINDS:
        raise DatasetError(f"unknown data set kind {kind!r}; valid kinds: {', '.join(sorted(DATASET_KINDS))}.")
    module, cls_name, needs_root = DATASET_KINDS[key]
    if needs_root and root is None:
        raise DatasetError(f"open_dataset({key!r}) needs root=, the folder that holds the data set.")
    cls = getattr(importlib.import_module(module), cls_name)
    return cls(root, categories, split, **kwargs)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
