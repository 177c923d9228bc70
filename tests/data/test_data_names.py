"""Image ids keep category, defect and file names readable in every script (issue 19).

Before: every character outside ASCII became ``_``, so two Chinese category names gave the same
id and the data set was refused as "two images map to the same image id".
"""

from __future__ import annotations

import unicodedata

import pytest

from cfviz.capture.store import entry_key
from cfviz.data.mvtec import FolderDataset
from cfviz.data.samples import make_image_id, safe_id_part


@pytest.mark.parametrize("names", [("瓶子", "螺丝"), ("винт", "гайка"), ("ボトル", "ネジ"), ("métal", "mètal")])
def test_category_names_in_any_script_stay_distinct_and_readable(tmp_path, builders, names):
    root = tmp_path / "d"
    for cat in names:
        builders["rgb"](root / cat / "test" / "good" / "000.png")
        builders["rgb"](root / cat / "test" / "défaut" / "000.png")
        builders["mask"](root / cat / "ground_truth" / "défaut" / "000_mask.png")
    ds = FolderDataset(root)
    ids = ds.image_ids
    assert len(set(ids)) == len(ids) == 4
    for cat in names:
        assert f"{cat}/test/good/000" in ids and f"{cat}/test/défaut/000" in ids  # readable, not hashed
    keys = [entry_key(i) for i in ids]  # store file names: ASCII and still one per image
    assert len(set(keys)) == 4 and all(k.isascii() for k in keys)


def test_ascii_ids_are_unchanged():
    """Ids of ASCII names (and so existing stores and per-image noise seeds) do not move."""
    assert make_image_id("metal nut", "test", "broken_large", "img 01 (copy)") == "metal_nut/test/broken_large/img_01_copy_"
    assert safe_id_part("../x") == "_.._x" and safe_id_part("a/b\\c:d") == "a_b_c_d"


def test_one_name_in_two_unicode_forms_gives_one_id():
    nfc, nfd = unicodedata.normalize("NFC", "métal"), unicodedata.normalize("NFD", "métal")
    assert nfc != nfd and safe_id_part(nfc) == safe_id_part(nfd) == "métal"
