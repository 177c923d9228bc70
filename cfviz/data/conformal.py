"""The simulated textile images of the PyPI package ``conformal-clip-data``.

The package ships 250x250 RGB JPEGs in three folders: 1000 nominal, 500 with a local defect and
500 with a global defect (``conformal_clip_data.nominal_dir()``, ``local_dir()``,
``global_dir()``). It is an image CLASSIFICATION set: there are no pixel masks, so
``has_masks`` is False and every ``Sample.mask`` is None (pixel metrics skip it).

Category ``"textile"``; defect types ``"good"`` (nominal), ``"local"`` and ``"global"``.

The package has no train/test split, so a seeded one is made here: the nominal images are
shuffled with ``numpy.random.default_rng(seed)`` (after sorting by name) and the first
``n_train`` go to ``train`` (the pool for k-shot references); the rest of the nominal images
and all defective ones form ``test``. ``limit_per_type`` keeps the first N test images of each
defect type in sorted image-id order (the same rule as every reader, see
:func:`cfviz.data.samples.limit_records`) for quick runs (the whole set is 1,900 test images).
The seed and parameters are in ``dataset.info``.

Example
-------
>>> ds = ConformalTextiles(split="all", n_train=10, limit_per_type=5)  # doctest: +SKIP
>>> len(ds), ds.has_masks                                               # doctest: +SKIP
(25, False)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cfviz.data.images import is_image_file
from cfviz.data.mvtec import as_category_list, choose_categories, split_names
from cfviz.data.samples import (NORMAL_DEFECT, AnomalyDataset, SampleRecord, check_limit_per_type, limit_records,
                                make_image_id)
from cfviz.errors import DatasetError

CONFORMAL_CATEGORY = "textile"
# defect type -> (package function, folder name)
CONFORMAL_TYPES: dict[str, tuple[str, str]] = {
    NORMAL_DEFECT: ("nominal_dir", "nominal"), "local": ("local_dir", "local"), "global": ("global_dir", "global"),
}


def conformal_folders(root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The folder of each defect type: from the installed package, or ``root/{nominal,local,global}``.

    Raises
    ------
    DatasetError : the package is not installed (with the install command) or a folder is missing.
    """
    if root is None:
        try:
            import conformal_clip_data as ccd
        except ImportError as exc:
            raise DatasetError("the conformal textile data set needs the package conformal-clip-data, which is not "
                               "installed. Fix: pip install 'conformal-clip-data>=0.1.4,<0.2', or pass root= a "
                               "folder holding nominal/, local/ and global/.") from exc
        folders = {t: Path(getattr(ccd, fn)()) for t, (fn, _) in CONFORMAL_TYPES.items()}
    else:
        base = Path(root).expanduser()
        folders = {t: base / sub for t, (_, sub) in CONFORMAL_TYPES.items()}
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise DatasetError(f"conformal textile folder for {kind!r} images not found: {folder}. Fix: reinstall "
                               "conformal-clip-data, or pass root= a folder holding nominal/, local/ and global/.")
    return folders


def _list(folder: Path) -> list[Path]:
    files = sorted((f for f in folder.iterdir() if f.is_file() and is_image_file(f)), key=lambda f: f.name)
    if not files:
        raise DatasetError(f"no images in {folder}. Fix: reinstall conformal-clip-data or fill the folder.")
    return files


class ConformalTextiles(AnomalyDataset):
    """The conformal-clip-data textile images with a seeded train/test split.

    Parameters
    ----------
    root : None to use the installed package, or a folder with ``nominal/``, ``local/`` and
        ``global/`` sub-folders.
    categories : None or ``"textile"`` (the only category; accepted for a uniform API).
    split : ``"train"``, ``"test"`` (default) or ``"all"``.
    n_train : nominal images held out as the training pool for k-shot references.
    limit_per_type : keep the first N test images of each defect type in sorted image-id order
        (None keeps all).
    seed : seeds the train/test split.

    Raises
    ------
    DatasetError : package missing, folders missing or empty, or ``n_train`` larger than the
        number of nominal images.
    """

    kind = "conformal"

    def __init__(self, root: str | os.PathLike[str] | None = None, categories: str | Iterable[str] | None = None,
                 split: str = "test", *, n_train: int = 100, limit_per_type: int | None = None, seed: int = 0,
                 name: str | None = None) -> None:
        choose_categories([CONFORMAL_CATEGORY], as_category_list(categories), "the conformal textile data set")
        splits = split_names(split)
        for arg, value in (("n_train", n_train), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise DatasetError(f"{arg} must be a non-negative int, got {value!r}.")
        limit_per_type = check_limit_per_type(limit_per_type)
        folders = conformal_folders(root)
        lists = {t: _list(f) for t, f in folders.items()}
        nominal = lists[NORMAL_DEFECT]
        if n_train >= len(nominal):
            raise DatasetError(f"n_train={n_train} leaves no nominal test images ({len(nominal)} nominal images in "
                               f"{folders[NORMAL_DEFECT]}). Fix: use n_train < {len(nominal)}.")
        order = np.random.default_rng([int(seed), 0]).permutation(len(nominal))
        by_split: dict[str, dict[str, list[Path]]] = {
            "train": {NORMAL_DEFECT: [nominal[i] for i in order[:n_train]]},
            "test": {NORMAL_DEFECT: [nominal[i] for i in order[n_train:]],
                     **{t: lists[t] for t in CONFORMAL_TYPES if t != NORMAL_DEFECT}},
        }
        records = []
        for sp in splits:
            for t in CONFORMAL_TYPES:
                for f in sorted(by_split[sp].get(t, []), key=lambda f: f.name):
                    records.append(SampleRecord(f, None, int(t != NORMAL_DEFECT), CONFORMAL_CATEGORY, t, sp,
                                                make_image_id(CONFORMAL_CATEGORY, sp, t, f.stem)))
        records = limit_records(records, limit_per_type)
        version = None
        if root is None:  # conformal_folders imported the package
            import conformal_clip_data as ccd
            version = getattr(ccd, "__version__", "unknown")
        info: dict[str, Any] = {
            "kind": self.kind, "root": None if root is None else os.fspath(root), "split": split, "seed": int(seed),
            "n_train": int(n_train), "limit_per_type": limit_per_type, "package_version": version,
            "folders": {t: os.fspath(f) for t, f in folders.items()},
        }
        super().__init__(records, has_masks=False, root=None if root is None else Path(root), name=name, info=info)
