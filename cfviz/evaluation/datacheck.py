"""What a run needs of its data set, checked when the data set is listed (before any model loads).

Every category scored needs normal and anomalous test images (image AUROC compares the two), and
a k-shot run needs k normal training images per category. :func:`check_run_data` says in one
sentence which category lacks what, and where it looked. A category with no test images at all
is left out with a warning when other categories remain (and the summary names it: the means are
over the others), and is an error when it is the only one.

>>> from pathlib import Path
>>> from cfviz.data.samples import AnomalyDataset, SampleRecord, make_image_id
>>> recs = [SampleRecord(Path(f"/d/tile/test/good/{i}.png"), None, 0, "tile", "good", "test",
...                      make_image_id("tile", "test", "good", str(i))) for i in range(2)]
>>> check_run_data(AnomalyDataset(recs, info={"kind": "folder"}), shots=(0,))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cfviz.errors.DataContentError: category 'tile' has only normal test images (2 in /d/tile/test/good) and no anomalous ...
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cfviz.errors import DataContentError

FOLDER_KINDS = ("mvtec", "folder")


class LeftOutCategoryWarning(UserWarning):
    """A category of the data set is not scored (its reason is in the message and the summary)."""


def _where(dataset: Any, category: str, split: str, defect: str | None = None) -> str:
    """Where the images of ``category`` / ``split`` (/ ``defect``) are looked for, for messages."""
    folders = {r.image_path.parents[2] for r in dataset.records if r.category == category}
    if dataset.info.get("kind") not in FOLDER_KINDS or (len(folders) != 1 and dataset.root is None):
        return f"the {split} split of {dataset.name}"
    path = (next(iter(folders)) if len(folders) == 1 else Path(dataset.root) / category) / split
    return str(path / defect) if defect else str(path)


def check_run_data(dataset: Any, shots: Sequence[int] = (0,)) -> dict[str, str]:
    """Check that every category of ``dataset`` can be scored for ``shots``; return those left out.

    Returns ``{category: reason}`` for categories with no test images, when others have some
    (each is also warned about with a :class:`LeftOutCategoryWarning`).

    Raises
    ------
    DataContentError : no category has test images; a category's test images are all normal or all
        anomalous; a k-shot run's category has fewer than k normal training images.
    """
    tests: dict[str, Counter[int]] = {c: Counter() for c in dataset.categories}
    train: Counter[str] = Counter()
    for r in dataset.records:
        if r.split == "test":
            tests[r.category][r.label] += 1
        elif r.label == 0:
            train[r.category] += 1
    left_out = {c: f"no test images in {_where(dataset, c, 'test')}" for c, n in tests.items() if not n}
    if left_out and len(left_out) == len(tests):
        names = ", ".join(repr(c) for c in tests) or "(none)"
        first = next(iter(left_out.values()), "")
        raise DataContentError(f"no category of the data set has test images ({names}; {first}): there is nothing "
                               "to score; add normal (test/good/) and anomalous (test/<defect>/) test images, or "
                               "point {root} at the data set's folder", "root")
    for c, counts in tests.items():
        if c in left_out:
            continue
        if not counts[1]:
            raise DataContentError(
                f"category {c!r} has only normal test images ({counts[0]} in {_where(dataset, c, 'test', 'good')}) "
                "and no anomalous ones, so its image metrics cannot be computed; add anomalous images "
                f"({_where(dataset, c, 'test', '<defect>')}/), or leave {c!r} out with {{categories}}", "categories")
        if not counts[0]:
            raise DataContentError(
                f"category {c!r} has no normal test images ({_where(dataset, c, 'test', 'good')} is missing or "
                f"empty; {counts[1]} anomalous), so its image metrics cannot be computed; add normal test "
                f"images there, or leave {c!r} out with {{categories}}", "categories")
    k = max(shots, default=0)
    for c in tests:
        if c in left_out or not k or train[c] >= k:
            continue
        where = _where(dataset, c, "train", "good")
        if not train[c]:
            raise DataContentError(
                f"{{shots}} {k} draws normal reference images of each category from its training images, but "
                f"category {c!r} has none ({where} is missing or empty); add normal images there, or use "
                "{shots} 0 (zero-shot)", "shots")
        raise DataContentError(f"{{shots}} {k} needs {k} normal training images of category {c!r}, but {where} holds "
                               f"{train[c]}; use {{shots}} {train[c]} or less, or add images there", "shots")
    for c, reason in left_out.items():
        kept = ", ".join(x for x in tests if x not in left_out)
        warnings.warn(f"category {c!r} is left out: {reason}; the results and their means are over {kept} only "
                      "(the summary says so)", LeftOutCategoryWarning, stacklevel=2)
    return left_out
