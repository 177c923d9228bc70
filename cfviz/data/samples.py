"""Samples and the base data set class shared by every reader.

Two levels, so that listing a data set never touches pixels:

* :class:`SampleRecord` (frozen): where an image and its mask live, and its labels. Readers
  build a list of records by listing folders or a split file; nothing is decoded.
* :class:`Sample`: a record plus the decoded pixels, made by ``dataset[i]`` on demand.

Field names follow anomalib's vocabulary where it has one (``image_path``, ``mask_path``,
``gt_label``/``gt_mask`` as aliases); ``label`` is 0 for normal and 1 for anomalous,
``defect_type`` is ``"good"`` for normal images (MVTec-AD's folder name).

``image_id`` keys capture-store entries, so it is deterministic, unique within a data set and
readable: ``"<category>/<split>/<defect_type>/<file stem>"``, each part in Unicode normal form
NFC with every run of characters other than letters, digits, ``_``, ``.`` and ``-`` (in any
script) replaced by ``_``. Category names in any script stay distinct (``瓶子`` and ``螺丝`` are
two categories); the store derives its file names from ids (ASCII, hashed:
:func:`cfviz.capture.store.entry_key`).

Masks in a :class:`Sample`:

* an array of zeros for a normal image of a data set with pixel annotations;
* the binarised mask file for an annotated anomalous image;
* ``None`` when there is no pixel annotation: every image of a classification data set
  (``dataset.has_masks`` is False, e.g. the conformal textile set) and anomalous images whose
  mask was missing when the data set was opened with ``missing_masks="warn"``. Pixel metrics
  must skip ``None`` masks.

Example
-------
>>> from pathlib import Path
>>> recs = [SampleRecord(Path(f"/x/{i}.png"), None, 0, "tile", "good", "train",
...                      make_image_id("tile", "train", "good", str(i))) for i in range(3)]
>>> ds = AnomalyDataset(recs, name="demo")
>>> len(ds), ds.categories, ds.records[0].image_id
(3, ('tile',), 'tile/train/good/0')
>>> [r.image_id for r in ds.reference_samples("tile", k=2, seed=0)]
['tile/train/good/2', 'tile/train/good/0']
"""

from __future__ import annotations

import copy
import os
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfviz.data.images import WARNED_CONVERSIONS, DataConversionWarning, load_mask, read_image
from cfviz.errors import DatasetError

SPLITS: tuple[str, ...] = ("train", "test")
NORMAL_DEFECT = "good"
#: runs of characters an id part does not keep: ``\w`` is Unicode-aware (letters and digits of every
#: script, and ``_``), so ASCII names give the ids they always gave and other scripts stay readable
_UNSAFE = re.compile(r"[^\w.-]+")

_WARNING_TEXT = {
    "alpha": "has an alpha channel; it was dropped. Fix: save the images as RGB to silence this.",
    "high_bit_depth": ("has more than 8 bits per sample; it was scaled to 8 bits by its bit depth. "
                       "Fix: save the images as 8-bit to silence this."),
    "missing_mask": ("is anomalous but has no mask; it is treated as unannotated (mask None, left out "
                     "of pixel metrics). Fix: add the mask, or use missing_masks='error' to stop on it."),
    "mask_levels": ("(half its range, so defects keep the size they were drawn with; counting every value "
                    "above 0 would grow each defect by its blurred border). Masks saved as JPEG (lossy) or "
                    "with anti-aliased edges do this. Fix: save masks as PNG holding exactly two values "
                    "(0 and 255) to silence this."),
    "broken_link": ("is a symbolic link to a file that does not exist; it is left out of the data set. Fix: "
                    "restore the file it points to or delete the link (stray_files='error' stops on it)."),
    "mask_without_image": ("is a mask that belongs to no test image; it is never used. Fix: add its image, set "
                           "mask_suffix= if masks are named differently, or delete it (stray_files='error' stops "
                           "on it)."),
    "empty_mask": ("marks no defect pixel (all zero) although its image is anomalous. The image is kept: it "
                   "counts for image metrics, and its pixels count as normal in pixel metrics. Fix: redraw the "
                   "mask, or check that it belongs to its image."),
}
JPEG_EXTENSIONS = (".jpg", ".jpeg")


def safe_id_part(text: str) -> str:
    """One component of an image id: NFC-normalised, runs of characters other than letters, digits
    (any script), ``_``, ``.`` and ``-`` become ``_``.

    >>> safe_id_part("metal nut"), safe_id_part("../x"), safe_id_part(""), safe_id_part("瓶子 1")
    ('metal_nut', '_.._x', '_', '瓶子_1')
    """
    out = _UNSAFE.sub("_", unicodedata.normalize("NFC", str(text)))
    if out.startswith("."):  # never ".", ".." or a hidden name as a path component
        out = "_" + out
    return out or "_"


def make_image_id(category: str, split: str, defect_type: str, stem: str) -> str:
    """The stable id ``"<category>/<split>/<defect_type>/<stem>"`` with each part made safe.

    >>> make_image_id("bottle", "test", "broken_large", "000")
    'bottle/test/broken_large/000'
    """
    return "/".join(safe_id_part(p) for p in (category, split, defect_type, stem))


def _label_value(label: Any) -> int:
    names = {"normal": 0, "good": 0, "anomalous": 1, "anomaly": 1, "abnormal": 1}
    if isinstance(label, str) and label.lower() in names:
        return names[label.lower()]
    if isinstance(label, (bool, np.bool_)) or label not in (0, 1):
        raise ValueError(f"label must be 0 (normal), 1 (anomalous), 'normal' or 'anomalous', got {label!r}")
    return int(label)


def check_limit_per_type(limit: Any) -> int | None:
    """Validate ``limit_per_type``: None (keep every image) or an int >= 1.

    >>> check_limit_per_type(None), check_limit_per_type(3)
    (None, 3)
    >>> check_limit_per_type(0)
    Traceback (most recent call last):
    ...
    cfviz.errors.DatasetError: limit_per_type must be None (every image) or an int >= 1, got 0. Fix: ...
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DatasetError(f"limit_per_type must be None (every image) or an int >= 1, got {limit!r}. Fix: "
                           "pass the number of test images to keep per category and defect type, e.g. 5 "
                           "(--limit-per-type 5 on the command line).")
    return int(limit)


def limit_records(records: Iterable[SampleRecord], limit_per_type: int | None) -> list[SampleRecord]:
    """Keep the first ``limit_per_type`` test records of each (category, defect type), in sorted
    image-id order; training records are all kept, and the kept records stay in their order.

    The subset depends only on the file names (no seed), so a run with ``limit_per_type=N`` sees
    the same images every time and a larger N gives a superset of a smaller one.

    >>> from pathlib import Path
    >>> recs = [SampleRecord(Path(f"/x/{d}/{i}.png"), None, int(d != "good"), "tile", d, "test",
    ...                      make_image_id("tile", "test", d, str(i))) for d in ("good", "crack") for i in (2, 0, 1)]
    >>> [r.image_id for r in limit_records(recs, 2)]
    ['tile/test/good/0', 'tile/test/good/1', 'tile/test/crack/0', 'tile/test/crack/1']
    """
    recs = list(records)
    limit = check_limit_per_type(limit_per_type)
    if limit is None:
        return recs
    groups: dict[tuple[str, str], list[SampleRecord]] = {}
    for r in recs:
        if r.split == "test":
            groups.setdefault((r.category, r.defect_type), []).append(r)
    keep = {r.image_id for g in groups.values() for r in sorted(g, key=lambda r: r.image_id)[:limit]}
    return [r for r in recs if r.split != "test" or r.image_id in keep]


@dataclass(frozen=True)
class SampleRecord:
    """Where one image (and its mask) lives, and its labels; no pixels.

    Parameters
    ----------
    image_path : the image file.
    mask_path : the mask file, or None (normal image, or no pixel annotation).
    label : 0 normal, 1 anomalous.
    category : object or texture class (MVTec-AD "bottle", VisA "pcb1", ...).
    defect_type : ``"good"`` for normal images, else the defect name.
    split : ``"train"`` or ``"test"``.
    image_id : stable unique id, see :func:`make_image_id`.
    """

    image_path: Path
    mask_path: Path | None
    label: int
    category: str
    defect_type: str
    split: str
    image_id: str

    def __post_init__(self) -> None:
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise ValueError(f"SampleRecord.label must be 0 or 1, got {self.label!r} for {self.image_path}")
        if self.split not in SPLITS:
            raise ValueError(f"SampleRecord.split must be one of {SPLITS}, got {self.split!r} for {self.image_path}")
        if (self.label == 0) != (self.defect_type == NORMAL_DEFECT):
            raise ValueError(f"SampleRecord for {self.image_path}: defect_type must be 'good' exactly when "
                             f"label is 0 (got label={self.label}, defect_type={self.defect_type!r})")

    @property
    def is_anomalous(self) -> bool:
        return self.label == 1

    @property
    def gt_label(self) -> int:
        """anomalib's name for :attr:`label`."""
        return self.label

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (paths as strings, a missing mask as None)."""
        return {
            "image_id": self.image_id, "category": self.category, "split": self.split,
            "defect_type": self.defect_type, "label": self.label,
            "image_path": os.fspath(self.image_path),
            "mask_path": None if self.mask_path is None else os.fspath(self.mask_path),
        }


@dataclass
class Sample:
    """A loaded sample: ``image`` is ``np.uint8 (H, W, 3)`` RGB; ``mask`` is ``np.uint8 (H, W)``
    in {0, 1}, zeros for normal images, or None when there is no pixel annotation (see the
    module docstring)."""

    image: np.ndarray
    mask: np.ndarray | None
    label: int
    category: str
    defect_type: str
    image_path: Path
    mask_path: Path | None
    split: str
    image_id: str

    @property
    def path(self) -> Path:
        """Alias of :attr:`image_path`."""
        return self.image_path

    @property
    def gt_label(self) -> int:
        """anomalib's name for :attr:`label`."""
        return self.label

    @property
    def gt_mask(self) -> np.ndarray | None:
        """anomalib's name for :attr:`mask`."""
        return self.mask

    @property
    def record(self) -> SampleRecord:
        return SampleRecord(self.image_path, self.mask_path, self.label, self.category,
                            self.defect_type, self.split, self.image_id)


def _as_set(value: Any) -> set[Any] | None:
    if value is None:
        return None
    if isinstance(value, (str, int, np.integer)):
        return {value}
    return set(value)


@dataclass
class _State:
    """Per-data-set bookkeeping of conversions and the warnings already given."""

    conversions: Counter[str] = field(default_factory=Counter)
    warned: set[str] = field(default_factory=set)


class AnomalyDataset:
    """A list of :class:`SampleRecord` that loads :class:`Sample` objects lazily.

    Parameters
    ----------
    records : the samples, in a deterministic order.
    has_masks : whether the data set carries pixel annotations (False for classification sets).
    root : the folder the data set was read from (shown in ``repr`` and ``info``).
    name : short name for messages (default: the class name).
    info : JSON-friendly facts about how the data set was opened (reader parameters, seeds).

    ``conversions`` counts the image conversions met so far (see :mod:`cfviz.data.images`), the
    anomalous images listed without a mask (``"missing_mask"``), masks holding more than two
    levels (``"mask_levels"``, e.g. JPEG masks; binarised at half their range) and anomalous
    images whose mask is all zero (``"empty_mask"``; kept, see :meth:`load`); each lossy kind is
    warned about once per data set with a :class:`~cfviz.data.images.DataConversionWarning`
    that names one file.

    ``mask_class_indices`` (a class attribute, True for VisA) says the reader's masks hold class
    indices rather than intensities (see :func:`cfviz.data.images.binarise_mask`).

    Raises
    ------
    DatasetError : two records share an image id.
    """

    mask_class_indices: bool = False

    def __init__(self, records: Iterable[SampleRecord], *, has_masks: bool = True,
                 root: str | os.PathLike[str] | None = None, name: str | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self._records: tuple[SampleRecord, ...] = tuple(records)
        seen: dict[str, SampleRecord] = {}
        for rec in self._records:
            if not isinstance(rec, SampleRecord):
                raise TypeError(f"records must be SampleRecord objects, got {type(rec).__name__}")
            other = seen.setdefault(rec.image_id, rec)
            if other is not rec:
                raise DatasetError(
                    f"two images map to the same image id {rec.image_id!r}: {other.image_path} and "
                    f"{rec.image_path}. Fix: rename one of them (ids use the file stem, so 000.png "
                    "and 000.jpg in one folder collide).")
        self.has_masks = bool(has_masks)
        self.root = None if root is None else Path(root)
        self.name = name or type(self).__name__
        self.info: dict[str, Any] = dict(info or {})
        self._state = _State()

    # -- listing ---------------------------------------------------------------------------
    @property
    def records(self) -> tuple[SampleRecord, ...]:
        """All records, in the data set's order."""
        return self._records

    @property
    def conversions(self) -> Counter[str]:
        """Counts of conversions and missing masks met so far (see the class docstring)."""
        return self._state.conversions

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories in order of first appearance."""
        return tuple(dict.fromkeys(r.category for r in self._records))

    @property
    def labels(self) -> np.ndarray:
        """``np.int64`` array of the labels, in order."""
        return np.array([r.label for r in self._records], dtype=np.int64)

    @property
    def image_ids(self) -> list[str]:
        return [r.image_id for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Sample:
        """Load sample ``index`` (a slice gives a new data set of those records, unloaded)."""
        if isinstance(index, slice):
            return self._with_records(self._records[index])  # type: ignore[return-value]
        return self.load(self._records[index])

    def __iter__(self) -> Iterator[Sample]:
        for rec in self._records:
            yield self.load(rec)

    def to_frame(self) -> Any:
        """A pandas DataFrame with one row per sample (columns: image_id, category, split,
        defect_type, label, image_path, mask_path); ``attrs`` holds ``has_masks`` and ``info``."""
        import pandas as pd

        cols = ["image_id", "category", "split", "defect_type", "label", "image_path", "mask_path"]
        frame = pd.DataFrame([r.to_dict() for r in self._records], columns=cols)
        frame["label"] = frame["label"].astype("int64")
        frame.attrs["has_masks"] = self.has_masks
        frame.attrs["info"] = dict(self.info)
        return frame

    def filter(self, *, category: Any = None, split: Any = None, label: Any = None,
               defect_type: Any = None) -> AnomalyDataset:
        """A new data set of the records matching every given criterion (a value or a list).

        ``label`` takes 0/1 or "normal"/"anomalous". The new data set has its own
        ``conversions`` counter.
        """
        cats, splits, defects = _as_set(category), _as_set(split), _as_set(defect_type)
        labels = None if label is None else {_label_value(v) for v in (_as_set(label) or ())}
        if cats is not None:
            unknown = sorted(str(c) for c in cats - set(self.categories))
            if unknown:
                raise DatasetError(f"{self.name}: no category {', '.join(unknown)}; available categories: "
                                   f"{', '.join(self.categories) or '(none)'}. Fix: use one of those names.")
        if splits is not None and not splits <= set(SPLITS):
            raise DatasetError(f"split must be one of {SPLITS}, got {sorted(map(str, splits))}")
        kept = [r for r in self._records
                if (cats is None or r.category in cats) and (splits is None or r.split in splits)
                and (labels is None or r.label in labels) and (defects is None or r.defect_type in defects)]
        return self._with_records(kept)

    def limit_per_type(self, n: int) -> AnomalyDataset:
        """A new data set keeping the first ``n`` test images of each (category, defect type) in
        sorted image-id order, and every training image (see :func:`limit_records`)."""
        new = self._with_records(limit_records(self._records, n))
        new.info["limit_per_type"] = int(n)
        return new

    def _with_records(self, records: Iterable[SampleRecord]) -> AnomalyDataset:
        new = copy.copy(self)
        new._records = tuple(records)
        new.info = dict(self.info)
        new._state = _State()
        return new

    # -- loading ---------------------------------------------------------------------------
    def load(self, record: SampleRecord) -> Sample:
        """Decode ``record`` into a :class:`Sample`.

        Masks are binarised at half their range (:func:`cfviz.data.images.binarise_mask`); a mask
        holding more than two levels is counted as ``"mask_levels"`` and warned about once. An
        anomalous image whose mask is all zero is kept with that mask (it counts for image metrics;
        its pixels count as normal in pixel metrics), counted as ``"empty_mask"`` and warned about
        once, naming the mask file.

        Raises
        ------
        DatasetError : unreadable image or mask, or a mask whose size differs from its image.
        """
        conv: Counter[str] = Counter()
        image = read_image(record.image_path, conversions=conv)
        mask: np.ndarray | None
        if record.mask_path is not None:
            mask, levels = load_mask(record.mask_path, class_indices=self.mask_class_indices)
            if not levels.two_level:
                self.note("mask_levels", record.mask_path, detail=levels.describe())
            if record.label == 1 and not mask.any():
                self.note("empty_mask", record.mask_path, detail=f"(the mask of {record.image_path})")
            if mask.shape != image.shape[:2]:
                (ih, iw), (mh, mw) = image.shape[:2], mask.shape
                raise DatasetError(
                    f"mask {record.mask_path} is {mw}x{mh} (width x height) but its image "
                    f"{record.image_path} is {iw}x{ih}. Fix: save the mask at the image's size, or "
                    "check that the mask belongs to this image.")
        elif self.has_masks and record.label == 0:
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
        else:
            mask = None  # no pixel annotation
        for kind, n in conv.items():
            self.note(kind, record.image_path, n)
        return Sample(image=image, mask=mask, **vars(record))

    def note(self, kind: str, path: str | os.PathLike[str], n: int = 1, *, detail: str = "") -> None:
        """Count ``n`` conversions of ``kind`` for ``path``; warn once per lossy kind.

        ``detail`` (e.g. the values a mask holds) goes into the warning after the file name.
        """
        self._state.conversions[kind] += n
        if kind in WARNED_CONVERSIONS and kind not in self._state.warned:
            self._state.warned.add(kind)
            text = _WARNING_TEXT.get(kind, "was converted.")
            if detail:
                text = f"{detail} {text}"
            warnings.warn(f"{self.name}: {path} {text}{self._how_many(kind)} This warning is shown once per "
                          f"data set; dataset.conversions[{kind!r}] counts every case.",
                          DataConversionWarning, stacklevel=3)

    def _how_many(self, kind: str) -> str:
        """What the records tell cheaply (file names only) about how many files a warning concerns."""
        if kind != "mask_levels":
            return ""
        masks = [r.mask_path for r in self._records if r.mask_path is not None]
        jpeg = sum(1 for m in masks if m.suffix.lower() in JPEG_EXTENSIONS)
        return f" {jpeg} of the {len(masks)} mask files of this data set are JPEG files." if jpeg else ""

    # -- few-shot references ---------------------------------------------------------------
    def reference_samples(self, category: str, k: int, seed: int = 0) -> list[SampleRecord]:
        """Draw ``k`` normal training records of ``category``; see :func:`sample_references`."""
        return sample_references(self, category, k, seed)

    # -- display ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        head = [f"{len(self)} samples", f"{len(self.categories)} categories",
                f"masks={'yes' if self.has_masks else 'no'}"]
        if self.root is not None:
            head.insert(0, f"root={os.fspath(self.root)!r}")
        counts: dict[tuple[str, str], Counter[int]] = {}
        for r in self._records:
            counts.setdefault((r.category, r.split), Counter())[r.label] += 1
        width = max([len("category")] + [len(c) for c, _ in counts])
        lines = [f"{self.name}({', '.join(head)})"]
        if counts:
            lines.append(f"  {'category':<{width}}  split  normal  anomalous")
            for (cat, split), c in counts.items():
                lines.append(f"  {cat:<{width}}  {split:<5}  {c[0]:>6}  {c[1]:>9}")
        if self.conversions:
            lines.append("  conversions: " + ", ".join(f"{k}={v}" for k, v in sorted(self.conversions.items())))
        return "\n".join(lines)


def sample_references(dataset: AnomalyDataset, category: str, k: int, seed: int = 0) -> list[SampleRecord]:
    """Draw ``k`` normal training images of ``category`` for k-shot memory banks.

    The candidates (split "train", label 0) are sorted by image id and shuffled with
    ``numpy.random.default_rng(seed)``; the first ``k`` are returned. So the draw depends only on
    the file names and the seed, and a smaller ``k`` gives a prefix of a larger one (k=1 is
    inside k=2 is inside k=4), which keeps a sweep over k nested. Record the seed and the
    returned paths with results.

    Raises
    ------
    DatasetError : unknown category, no normal training images (open the data set with
        ``split="train"`` or ``"all"``), or fewer than ``k`` of them.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if category not in dataset.categories:
        raise DatasetError(f"{dataset.name}: no category {category!r}; available categories: "
                           f"{', '.join(dataset.categories) or '(none)'}.")
    pool = sorted((r for r in dataset.records if r.category == category and r.split == "train" and r.label == 0),
                  key=lambda r: r.image_id)
    if not pool:
        fix = ("add normal images to its training split" if dataset.info.get("split", "all") != "test" else
               "open the data set with split='train' or split='all' for references")
        raise DatasetError(f"{dataset.name}: category {category!r} has no normal training images in this data "
                           f"set. Fix: {fix}.")
    if k > len(pool):
        raise DatasetError(f"{dataset.name}: asked for k={k} references of {category!r} but only {len(pool)} "
                           "normal training images exist. Fix: use a smaller k.")
    order = np.random.default_rng(int(seed)).permutation(len(pool))
    return [pool[i] for i in order[:k]]
