"""MVTec-AD and any folder in the MVTec-AD layout.

Layout (``ROOT`` holds one folder per category)::

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png

Rules, so that nothing is guessed silently:

* Image files are those with an extension in :data:`~cfviz.data.images.IMAGE_EXTENSIONS`
  (png, jpg, jpeg, bmp, tif, tiff; any case). Hidden files and folders (``.DS_Store``,
  ``.ipynb_checkpoints``) and non-image files are not samples; the number of non-image files
  met is recorded in ``dataset.info["ignored_files"]``.
* A category folder is a sub-folder of ``ROOT`` that has a ``train`` or ``test`` folder. If
  ``ROOT`` itself has one, ``ROOT`` is read as a single category named after the folder.
* The mask of ``test/<defect>/<stem>.<ext>`` is ``ground_truth/<defect>/<stem><mask_suffix>``
  with any image extension (``.png`` preferred). ``mask_suffix`` is ``"_mask"`` for MVTec-AD;
  use ``""`` for folders whose masks share the image's name.
* Order is deterministic: categories by name, ``train`` before ``test``, ``good`` before the
  defect folders (by name), files by name.
* Files that cannot be used are never dropped silently: a test image that is a dangling symbolic
  link and a mask in ``ground_truth/<defect>/`` that belongs to no test image are warned about,
  naming the file (``stray_files="warn"``, the default), or refused (``stray_files="error"``).
* Listing reads no pixels; mask sizes are checked when a sample is loaded. Masks are binarised
  at half their range (:func:`cfviz.data.images.binarise_mask`; JPEG masks are warned about).
* ``limit_per_type=N`` keeps the first N test images of each category and defect folder in
  sorted image-id order (training images are all kept), for quick deterministic subsets.

Example
-------
>>> ds = MVTecAD("/data/mvtec_ad", categories=["bottle"], split="test")  # doctest: +SKIP
>>> ds[0].image.shape                                                     # doctest: +SKIP
(900, 900, 3)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cfviz.data.images import IMAGE_EXTENSIONS, is_image_file
from cfviz.data.samples import (NORMAL_DEFECT, AnomalyDataset, SampleRecord, check_limit_per_type, limit_records,
                                make_image_id)
from cfviz.errors import DatasetError

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)

MISSING_MASK_POLICIES = ("error", "warn")
#: what a data set does with a stray file (a dangling link among the images, a mask with no image)
STRAY_FILE_POLICIES = ("warn", "error")


def split_names(split: str) -> tuple[str, ...]:
    """``"train"``, ``"test"`` or ``"all"`` as the tuple of splits it covers.

    >>> split_names("all")
    ('train', 'test')
    """
    table = {"train": ("train",), "test": ("test",), "all": ("train", "test")}
    if split not in table:
        raise DatasetError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    return table[split]


def as_category_list(categories: str | Iterable[str] | None) -> list[str] | None:
    """None, one name or several names as a list (or None)."""
    if categories is None:
        return None
    if isinstance(categories, str):
        return [categories]
    out = [str(c) for c in categories]
    if not out:
        raise DatasetError("categories is empty. Fix: pass None for all categories, or at least one name.")
    return out


def choose_categories(available: list[str], asked: list[str] | None, where: str) -> list[str]:
    """Validate ``asked`` against ``available``; the error lists the available names."""
    if asked is None:
        return sorted(available)
    unknown = [c for c in asked if c not in available]
    if unknown:
        hints = []
        for c in unknown:
            close = difflib.get_close_matches(c, available, n=1)
            hints.append(f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise DatasetError(f"category {', '.join(hints)} not found in {where}; available categories: "
                           f"{', '.join(sorted(available)) or '(none)'}. Fix: use one of those names.")
    return list(dict.fromkeys(asked))


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not _hidden(d)), key=lambda d: d.name)


def _category_folders(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise DatasetError(f"data set folder not found: {root}. Fix: pass the folder that holds one folder per "
                           "category (ROOT/<category>/train/good/*.png, ROOT/<category>/test/<defect>/*.png).")
    if (root / "train").is_dir() or (root / "test").is_dir():
        return {root.name: root}
    found = {d.name: d for d in _subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()}
    if not found:
        subs = ", ".join(d.name for d in _subdirs(root)[:20]) or "(no sub-folders)"
        raise DatasetError(f"no category folders in {root}: a category folder must contain 'train' and/or 'test' "
                           f"(ROOT/<category>/test/<defect>/*.png). Sub-folders found: {subs}. Fix: point root "
                           "at the folder that holds the category folders.")
    return found


_STRAY_TEXT = {"broken_link": "is a symbolic link to a file that does not exist, so it is not a sample",
               "mask_without_image": "is a mask that belongs to no test image, so it is never used"}
_STRAY_FIX = {"broken_link": "restore the file it points to, or delete the link",
              "mask_without_image": "add its image to test/<defect>/, set mask_suffix= if masks are named "
                                    "differently, or delete the mask"}


def _masks_without_image(category_dir: Path, mask_suffix: str) -> list[Path]:
    """Mask files of ``category_dir/ground_truth/<defect>/`` whose image ``test/<defect>/<stem>.*`` is not there."""
    gt = category_dir / "ground_truth"
    if not gt.is_dir():
        return []
    out: list[Path] = []
    for defect_dir in _subdirs(gt):
        images = category_dir / "test" / defect_dir.name
        stems = {f.stem for f in images.iterdir() if is_image_file(f)} if images.is_dir() else set()  # links too
        out += [m for m in sorted(defect_dir.iterdir(), key=lambda f: f.name)
                if is_image_file(m) and (m.is_file() or m.is_symlink())
                and (not m.stem.endswith(mask_suffix) or m.stem.removesuffix(mask_suffix) not in stems)]
    return out


class FolderDataset(AnomalyDataset):
    """Any folder in the MVTec-AD layout (see the module docstring).

    Parameters
    ----------
    root : the folder holding one folder per category (or one category folder).
    categories : a name, a list of names, or None for every category found.
    split : ``"train"``, ``"test"`` (default) or ``"all"``.
    mask_suffix : appended to the image stem to name its mask (default ``"_mask"``).
    missing_masks : ``"error"`` (default): an anomalous test image without its mask raises
        :class:`~cfviz.errors.DatasetError` naming the image and the expected mask path.
        ``"warn"``: it is kept without a mask (``Sample.mask`` is None), counted in
        ``conversions["missing_mask"]`` and warned about once.
    has_masks : False for folders with no ``ground_truth`` at all (classification only): no
        masks are looked for and every ``Sample.mask`` is None.
    limit_per_type : keep only the first N test images of each (category, defect type) in
        sorted image-id order (None keeps all); see :func:`cfviz.data.samples.limit_records`.
        Missing masks of images left out are not looked for.
    stray_files : ``"warn"`` (default): an image file that is a dangling symbolic link, and a mask
        file of ``ground_truth/<defect>/`` that matches no test image, are counted in
        ``conversions["broken_link"]`` / ``conversions["mask_without_image"]`` and warned about
        once per kind, naming the file. ``"error"``: either raises :class:`~cfviz.errors.DatasetError`.

    Raises
    ------
    DatasetError : missing root, unknown category (the message lists the available ones), a
        category without images in the split, images outside the layout, missing masks.

    Example
    -------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for rel in ["cat/train/good/0.png", "cat/test/good/0.png", "cat/test/dent/0.png"]:
    ...     (root / rel).parent.mkdir(parents=True, exist_ok=True)
    ...     Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / rel)
    >>> (root / "cat/ground_truth/dent").mkdir(parents=True)
    >>> Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(root / "cat/ground_truth/dent/0_mask.png")
    >>> ds = FolderDataset(root, split="all")
    >>> [r.image_id for r in ds.records]
    ['cat/train/good/0', 'cat/test/good/0', 'cat/test/dent/0']
    >>> int(ds[2].mask.sum()), ds[2].label
    (8, 1)
    """

    kind = "folder"

    def __init__(self, root: str | os.PathLike[str], categories: str | Iterable[str] | None = None,
                 split: str = "test", *, mask_suffix: str = "_mask", missing_masks: str = "error",
                 has_masks: bool = True, limit_per_type: int | None = None, stray_files: str = "warn",
                 name: str | None = None) -> None:
        limit_per_type = check_limit_per_type(limit_per_type)
        if missing_masks not in MISSING_MASK_POLICIES:
            raise DatasetError(f"missing_masks must be one of {MISSING_MASK_POLICIES}, got {missing_masks!r}.")
        if stray_files not in STRAY_FILE_POLICIES:
            raise DatasetError(f"stray_files must be one of {STRAY_FILE_POLICIES}, got {stray_files!r}.")
        if not isinstance(mask_suffix, str):
            raise DatasetError(f"mask_suffix must be a string such as '_mask', got {mask_suffix!r}.")
        root_path = Path(root).expanduser()
        folders = _category_folders(root_path)
        chosen = choose_categories(list(folders), as_category_list(categories), str(root_path))
        splits = split_names(split)
        self._ignored = 0
        self._strays: list[tuple[str, Path]] = []  # (kind, file): dangling links, masks without an image
        records: list[SampleRecord] = []
        missing: list[tuple[Path, Path]] = []
        for cat in chosen:
            cat_records = self._list_category(cat, folders[cat], splits, mask_suffix, has_masks, missing)
            if not cat_records:
                looked = " and ".join(str(folders[cat] / s) for s in splits)
                raise DatasetError(f"category {cat!r} has no images in split {split!r} (looked in {looked}, for "
                                   f"<defect>/*{'|*'.join(IMAGE_EXTENSIONS)}). Fix: add the images, or leave the "
                                   "category out with categories=[...].")
            records.extend(cat_records)
        records = limit_records(records, limit_per_type)
        kept = {r.image_path for r in records}
        missing = [(image, expected) for image, expected in missing if image in kept]
        if missing and missing_masks == "error":
            image, expected = missing[0]
            more = f" ({len(missing) - 1} more anomalous images lack masks)" if len(missing) > 1 else ""
            raise DatasetError(f"anomalous image {image} has no mask: expected {expected} (any image extension)"
                               f"{more}. Fix: add the mask, set mask_suffix= if masks are named differently, or "
                               "pass missing_masks='warn' to keep such images as unannotated.")
        if self._strays and stray_files == "error":
            kind, path = self._strays[0]
            more = f" ({len(self._strays) - 1} more stray files)" if len(self._strays) > 1 else ""
            raise DatasetError(f"{path} {_STRAY_TEXT[kind]}{more}. Fix: {_STRAY_FIX[kind]}, or pass "
                               "stray_files='warn' to list such files as warnings and go on.")
        info: dict[str, Any] = {
            "kind": self.kind, "root": os.fspath(root_path), "split": split, "categories": chosen,
            "mask_suffix": mask_suffix, "missing_masks": missing_masks, "ignored_files": self._ignored,
            "limit_per_type": limit_per_type, "stray_files": stray_files,
        }
        super().__init__(records, has_masks=has_masks, root=root_path, name=name, info=info)
        for image, _ in missing:
            self.note("missing_mask", image)
        for kind, path in self._strays:
            self.note(kind, path)

    def _images_in(self, folder: Path) -> list[Path]:
        files = [f for f in folder.iterdir() if f.is_file() and not _hidden(f)]
        images = sorted((f for f in files if is_image_file(f)), key=lambda f: f.name)
        self._ignored += len(files) - len(images)
        # image files that are symbolic links to nothing (``is_file()`` is False for them)
        self._strays += [("broken_link", f) for f in sorted(folder.iterdir())
                         if f.is_symlink() and not f.exists() and is_image_file(f)]
        return images

    def _list_category(self, cat: str, folder: Path, splits: tuple[str, ...], mask_suffix: str,
                       has_masks: bool, missing: list[tuple[Path, Path]]) -> list[SampleRecord]:
        out: list[SampleRecord] = []
        for split in splits:
            split_dir = folder / split
            if not split_dir.is_dir():
                continue
            loose = [f for f in split_dir.iterdir() if f.is_file() and is_image_file(f)]
            if loose:
                raise DatasetError(f"image files directly in {split_dir} (e.g. {sorted(loose)[0].name}); the layout "
                                   f"needs them in {split}/good/ or {split}/<defect>/. Fix: move them there.")
            defects = sorted(_subdirs(split_dir), key=lambda d: (d.name != NORMAL_DEFECT, d.name))
            if split == "train":
                odd = [d.name for d in defects if d.name != NORMAL_DEFECT]
                if odd:
                    raise DatasetError(f"{split_dir} has folders {odd}, but training images must all be normal, in "
                                       f"{split_dir / NORMAL_DEFECT}. Fix: move anomalous images to test/<defect>/.")
            for defect_dir in defects:
                defect = defect_dir.name
                label = 0 if defect == NORMAL_DEFECT else 1
                masks: dict[str, Path] = {}  # mask files by stem; ``.png`` wins when a stem has several files
                gt_dir = folder / "ground_truth" / defect
                if label and has_masks and gt_dir.is_dir():
                    for f in sorted(gt_dir.iterdir(), key=lambda f: (f.suffix.lower() != ".png", f.name)):
                        if f.is_file() and is_image_file(f):
                            masks.setdefault(f.stem, f)
                for img in self._images_in(defect_dir):
                    mask_path = None
                    if label and has_masks:
                        mask_path = masks.get(img.stem + mask_suffix)
                        if mask_path is None:
                            missing.append((img, gt_dir / f"{img.stem}{mask_suffix}.png"))
                    out.append(SampleRecord(img, mask_path, label, cat, defect, split,
                                            make_image_id(cat, split, defect, img.stem)))
            if split == "test" and has_masks:
                self._strays += [("mask_without_image", m) for m in _masks_without_image(folder, mask_suffix)]
        return out


class MVTecAD(FolderDataset):
    """The MVTec-AD data set (15 categories, :data:`MVTEC_CATEGORIES`) read from ``root``.

    Same parameters as :class:`FolderDataset`; ``categories=None`` reads every category folder
    present under ``root`` (a partial copy of MVTec-AD works).

    Example
    -------
    >>> test = MVTecAD("/data/mvtec_ad", categories="bottle")                 # doctest: +SKIP
    >>> train = MVTecAD("/data/mvtec_ad", categories="bottle", split="train")  # doctest: +SKIP
    >>> refs = train.reference_samples("bottle", k=4, seed=0)                   # doctest: +SKIP
    """

    kind = "mvtec"
