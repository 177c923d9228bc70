"""VisA (Visual Anomaly data set, Zou et al. 2022), read from its one-class split file.

The extracted archive holds ``<category>/Data/Images/{Normal,Anomaly}/*.JPG``,
``<category>/Data/Masks/Anomaly/*.png`` and ``split_csv/1cls.csv``, whose columns are
``object, split, label, image, mask``: ``split`` is ``train``/``test``, ``label`` is
``normal``/``anomaly``, ``image`` and ``mask`` are paths relative to the VisA root (``mask`` is
empty for normal images). This reader follows the split file and does not copy anything.

VisA masks hold class indices (0 background, 1, 2, ... per defect region), so they are
binarised on load with any value above 0 a defect pixel (``mask_class_indices``); a mask whose
largest value is above 127 holds intensities and is binarised at half its range instead (see
:func:`cfviz.data.images.binarise_mask`). ``defect_type`` is ``"good"`` for
normal and ``"anomaly"`` for anomalous images: the split file has no finer defect names.

A VisA copy already converted by anomalib to the MVTec layout (``visa_pytorch``, masks named
like their images) can be read with ``FolderDataset(root, mask_suffix="")`` instead.

Example
-------
>>> ds = VisA("/data/VisA_20220922", categories=["pcb1"], split="test")  # doctest: +SKIP
>>> sorted(set(ds[0].mask.ravel().tolist()))                              # doctest: +SKIP
[0]
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cfviz.data.mvtec import MISSING_MASK_POLICIES, as_category_list, choose_categories, split_names
from cfviz.data.samples import (NORMAL_DEFECT, AnomalyDataset, SampleRecord, check_limit_per_type, limit_records,
                                make_image_id)
from cfviz.errors import DatasetError

VISA_CATEGORIES: tuple[str, ...] = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
VISA_COLUMNS: tuple[str, ...] = ("object", "split", "label", "image", "mask")
VISA_ANOMALY_DEFECT = "anomaly"
_LABELS = {"normal": 0, "anomaly": 1}


def default_split_csv(root: str | os.PathLike[str]) -> Path:
    """Where VisA keeps its one-class split file: ``ROOT/split_csv/1cls.csv``."""
    return Path(root) / "split_csv" / "1cls.csv"


def read_split_csv(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a VisA split file as ``(line number, row)`` with stripped values.

    Raises
    ------
    DatasetError : missing file, or missing columns (the message names the expected ones).
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"VisA split file not found: {p}. Fix: VisA ships it as split_csv/1cls.csv in the "
                           "extracted VisA_20220922 folder; pass split_csv=... if it lives elsewhere.")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in VISA_COLUMNS if c not in columns]
            if missing:
                raise DatasetError(f"VisA split file {p} lacks columns {missing}: expected columns "
                                   f"{', '.join(VISA_COLUMNS)}, found {columns or '(no header)'}. Fix: use "
                                   "VisA's split_csv/1cls.csv or a file with that header.")
            rows = []
            for row in reader:
                clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                if any(clean.values()):  # skip blank lines only
                    rows.append((reader.line_num, clean))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read VisA split file {p}: {exc}. Fix: restore the file.") from exc
    return rows


class VisA(AnomalyDataset):
    """VisA read from its split file (see the module docstring).

    Parameters
    ----------
    root : the extracted VisA folder (holds the category folders and ``split_csv``).
    categories : a name, a list of names, or None for every object in the split file.
    split : ``"train"``, ``"test"`` (default) or ``"all"``.
    split_csv : the split file; default ``ROOT/split_csv/1cls.csv``. Paths inside are relative
        to ``root``.
    missing_masks : ``"error"`` (default) or ``"warn"``, for anomalous rows with an empty mask
        column (as in :class:`~cfviz.data.mvtec.FolderDataset`).
    limit_per_type : keep only the first N test images of each (category, label) in sorted
        image-id order (None keeps all); see :func:`cfviz.data.samples.limit_records`.

    Raises
    ------
    DatasetError : missing root or split file, wrong columns, bad split/label values, unknown
        categories, rows whose image or mask file does not exist, empty categories.

    Example
    -------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "pcb1/img").mkdir(parents=True); (root / "split_csv").mkdir()
    >>> Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "pcb1/img/a.JPG", format="JPEG")
    >>> Image.fromarray(np.full((4, 4), 2, np.uint8)).save(root / "pcb1/img/a_mask.png")
    >>> _ = (root / "split_csv/1cls.csv").write_text(
    ...     "object,split,label,image,mask\\npcb1,test,anomaly,pcb1/img/a.JPG,pcb1/img/a_mask.png\\n")
    >>> ds = VisA(root)
    >>> ds.records[0].image_id, int(ds[0].mask.max())
    ('pcb1/test/anomaly/a', 1)
    """

    kind = "visa"
    mask_class_indices = True

    def __init__(self, root: str | os.PathLike[str], categories: str | Iterable[str] | None = None,
                 split: str = "test", *, split_csv: str | os.PathLike[str] | None = None,
                 missing_masks: str = "error", limit_per_type: int | None = None, name: str | None = None) -> None:
        limit_per_type = check_limit_per_type(limit_per_type)
        if missing_masks not in MISSING_MASK_POLICIES:
            raise DatasetError(f"missing_masks must be one of {MISSING_MASK_POLICIES}, got {missing_masks!r}.")
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetError(f"VisA folder not found: {root_path}. Fix: pass the extracted VisA folder (the one "
                               "that holds split_csv/ and the category folders).")
        csv_path = Path(split_csv).expanduser() if split_csv is not None else default_split_csv(root_path)
        rows = read_split_csv(csv_path)
        splits = split_names(split)
        available = sorted({r["object"] for _, r in rows if r["object"]})
        if not available:
            raise DatasetError(f"VisA split file {csv_path} has no rows. Fix: use VisA's split_csv/1cls.csv.")
        chosen = choose_categories(available, as_category_list(categories), f"split file {csv_path}")

        records: list[SampleRecord] = []
        missing_files: list[str] = []
        missing_masks_rows: list[Path] = []
        for line, row in rows:
            cat, row_split, label_text = row["object"], row["split"].lower(), row["label"].lower()
            if row_split not in ("train", "test"):
                raise DatasetError(f"{csv_path} line {line}: split {row['split']!r} is not 'train' or 'test'.")
            if label_text not in _LABELS:
                raise DatasetError(f"{csv_path} line {line}: label {row['label']!r} is not 'normal' or 'anomaly'.")
            if cat not in chosen or row_split not in splits:
                continue
            if not row["image"]:
                raise DatasetError(f"{csv_path} line {line}: the image column is empty.")
            label = _LABELS[label_text]
            image = root_path / row["image"]
            if not image.is_file():
                missing_files.append(f"line {line}: {image}")
            mask: Path | None = None
            if label == 0 and row["mask"]:
                raise DatasetError(f"{csv_path} line {line}: normal image {row['image']} has a mask "
                                   f"({row['mask']}). Fix: check the label of that row.")
            if label == 1:
                if row["mask"]:
                    mask = root_path / row["mask"]
                    if not mask.is_file():
                        missing_files.append(f"line {line}: {mask}")
                else:
                    missing_masks_rows.append(image)
            defect = NORMAL_DEFECT if label == 0 else VISA_ANOMALY_DEFECT
            records.append(SampleRecord(image, mask, label, cat, defect, row_split,
                                        make_image_id(cat, row_split, defect, image.stem)))
        if missing_files:
            shown = "; ".join(missing_files[:5]) + (f"; ... ({len(missing_files)} in all)" if len(missing_files) > 5 else "")
            raise DatasetError(f"VisA split file {csv_path} points to files that do not exist: {shown}. Fix: check "
                               "that root is the extracted VisA folder (paths in the file are relative to it) and "
                               "that the archive was extracted completely.")
        records.sort(key=lambda r: (chosen.index(r.category), splits.index(r.split), r.label, os.fspath(r.image_path)))
        records = limit_records(records, limit_per_type)
        kept = {r.image_path for r in records}
        missing_masks_rows = [m for m in missing_masks_rows if m in kept]
        if missing_masks_rows and missing_masks == "error":
            more = f" ({len(missing_masks_rows) - 1} more)" if len(missing_masks_rows) > 1 else ""
            raise DatasetError(f"anomalous image {missing_masks_rows[0]} has an empty mask column in {csv_path}{more}. "
                               "Fix: fill in the mask path, or pass missing_masks='warn' to keep such images as "
                               "unannotated.")
        for cat in chosen:
            if not any(r.category == cat for r in records):
                raise DatasetError(f"category {cat!r} has no rows with split {split!r} in {csv_path}. Fix: choose "
                                   "another split, or leave the category out.")
        info: dict[str, Any] = {"kind": self.kind, "root": os.fspath(root_path), "split": split,
                                "split_csv": os.fspath(csv_path), "categories": chosen,
                                "missing_masks": missing_masks, "limit_per_type": limit_per_type}
        super().__init__(records, has_masks=True, root=root_path, name=name, info=info)
        for image in missing_masks_rows:
            self.note("missing_mask", image)
