"""Files of an MVTec-layout folder that cannot be used are named, never dropped silently (issue 19).

Before: a test image that is a dangling symbolic link was left out without a word, and a mask
with no image was never reported. Now each is a warning naming the file (counted in
``dataset.conversions``), or an error with ``stray_files="error"`` (``--stray-files error``).
"""

from __future__ import annotations

import warnings

import pytest

from cfviz.cli import main
from cfviz.data.images import DataConversionWarning
from cfviz.data.mvtec import FolderDataset
from cfviz.errors import DatasetError


def _caught(root, **kw):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ds = FolderDataset(root, split="all", **kw)
    return ds, [str(w.message) for w in got if issubclass(w.category, DataConversionWarning)]


def test_a_dangling_link_among_test_images_is_named(mvtec_root):
    link = mvtec_root / "bottle/test/good/007.png"
    link.symlink_to(mvtec_root / "nowhere.png")
    ds, messages = _caught(mvtec_root)
    assert ds.conversions["broken_link"] == 1
    assert any(str(link) in m and "symbolic link to a file that does not exist" in m for m in messages), messages
    with pytest.raises(DatasetError, match=rf"{link} is a symbolic link to a file that does not exist"):
        FolderDataset(mvtec_root, split="all", stray_files="error")


def test_a_mask_without_image_is_named(mvtec_root):
    stray = mvtec_root / "tile/ground_truth/crack/009_mask.png"
    stray.write_bytes((mvtec_root / "tile/ground_truth/crack/000_mask.png").read_bytes())
    ds, messages = _caught(mvtec_root)
    assert ds.conversions["mask_without_image"] == 1
    assert any(str(stray) in m and "belongs to no test image" in m for m in messages), messages
    with pytest.raises(DatasetError, match=rf"{stray} is a mask that belongs to no test image"):
        FolderDataset(mvtec_root, stray_files="error")


def test_masks_of_a_defect_folder_without_images_are_named(mvtec_root):
    import shutil

    shutil.rmtree(mvtec_root / "bottle/test/scratch")
    ds, _ = _caught(mvtec_root)
    assert ds.conversions["mask_without_image"] == 1  # bottle/ground_truth/scratch/000_mask.png


def test_a_clean_folder_has_no_strays(mvtec_root):
    """The invariant: every image file and every mask of the layout is either used or named."""
    ds, messages = _caught(mvtec_root, stray_files="error")
    assert not messages and not ds.conversions
    used = {r.image_path for r in ds.records} | {r.mask_path for r in ds.records if r.mask_path}
    on_disk = {p for p in mvtec_root.rglob("*.png")}
    assert used == on_disk


def test_cli_stray_files_error_is_one_sentence(mvtec_root, tmp_path, capsys):
    (mvtec_root / "bottle/test/good/007.png").symlink_to(mvtec_root / "nowhere.png")
    code = main(["evaluate", "--dataset", "mvtec", "--root", str(mvtec_root), "--stray-files", "error",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "007.png is a symbolic link" in err and "--stray-files warn" in err, err
    assert "stray_files=" not in err
