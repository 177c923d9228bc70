"""read_image / read_mask: conversions to uint8 RGB, binarised masks, clear errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cfviz.data.images import is_image_file, read_image, read_mask
from cfviz.errors import DatasetError


def _save(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


def test_rgb_is_kept_exactly(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image(_save(tmp_path / "a.png", arr))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    c = Counter()
    out = read_image(_save(tmp_path / "g.png", gray), conversions=c)
    assert out.shape == (4, 5, 3)
    for ch in range(3):
        np.testing.assert_array_equal(out[:, :, ch], gray)
    assert c == Counter({"grayscale": 1})


def test_rgba_drops_alpha_and_counts(tmp_path):
    arr = np.zeros((3, 4, 4), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3] = 10, 20, 30, 7
    c = Counter()
    out = read_image(_save(tmp_path / "a.png", arr), conversions=c)
    assert out.shape == (3, 4, 3) and out[0, 0].tolist() == [10, 20, 30]
    assert c["alpha"] == 1


def test_la_drops_alpha(tmp_path):
    Image.new("LA", (3, 3), (90, 5)).save(tmp_path / "la.png")
    c = Counter()
    out = read_image(tmp_path / "la.png", conversions=c)
    assert out.shape == (3, 3, 3) and out[1, 1].tolist() == [90, 90, 90]
    assert c["alpha"] == 1


def test_palette_expands_to_colours(tmp_path):
    img = Image.new("P", (2, 2))
    img.putpalette([0, 0, 0, 250, 100, 5] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png")
    c = Counter()
    out = read_image(tmp_path / "p.png", conversions=c)
    assert out[0, 1].tolist() == [250, 100, 5] and out[0, 0].tolist() == [0, 0, 0]
    assert c["palette"] == 1


def test_16bit_gray_png_is_scaled_by_bit_depth(tmp_path, builders):
    vals = np.array([[0, 257, 65535, 32896]], np.uint16)
    c = Counter()
    out = read_image(builders["png16"](tmp_path / "g16.png", vals), conversions=c)
    # full 16-bit range maps to the full 8-bit range (not stretched by the image's own max)
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]
    assert c["high_bit_depth"] == 1


def test_16bit_dark_image_is_not_stretched(tmp_path, builders):
    vals = np.array([[0, 1000, 2000]], np.uint16)
    out = read_image(builders["png16"](tmp_path / "d16.png", vals))
    assert out[0, :, 0].tolist() == [0, 4, 8]  # round(v * 255 / 65535)


def test_16bit_rgb_png_is_counted(tmp_path, builders):
    vals = np.zeros((2, 2, 3), np.uint16)
    vals[..., 0], vals[..., 1], vals[..., 2] = 65535, 32768, 256
    c = Counter()
    out = read_image(builders["png16"](tmp_path / "rgb16.png", vals), conversions=c)
    assert out[0, 0].tolist() == [255, 128, 1]
    assert c["high_bit_depth"] == 1


def test_32bit_and_float_tiffs(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    c = Counter()
    assert read_image(tmp_path / "i.tif", conversions=c)[0, :, 0].tolist() == [0, 255]
    assert read_image(tmp_path / "f.tif", conversions=c)[0, :, 0].tolist() == [0, 128, 255]
    assert c["high_bit_depth"] == 2


def test_mask_binarised_from_class_indices_and_255(tmp_path):
    # class indices (VisA): every value above 0 is a defect
    out = read_mask(_save(tmp_path / "i.png", np.array([[0, 1, 2], [0, 3, 7]], np.uint8)), class_indices=True)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1, 1], [0, 1, 1]]
    # intensities: cut at half the mask's range (255 / 2), so faint values are background
    c = Counter()
    out = read_mask(_save(tmp_path / "m.png", np.array([[0, 1, 2], [0, 255, 7]], np.uint8)), conversions=c)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0, 0], [0, 1, 0]]
    assert c["mask_levels"] == 1  # more than two levels: counted (the data set warns once)
    # a clean 0/1 mask and an all-255 mask are binary as they are
    assert read_mask(_save(tmp_path / "b.png", np.array([[0, 1]], np.uint8)), conversions=c).tolist() == [[0, 1]]
    assert read_mask(_save(tmp_path / "f.png", np.full((1, 2), 255, np.uint8)), conversions=c).tolist() == [[1, 1]]
    assert c["mask_levels"] == 1


def test_colour_mask_ignores_alpha(tmp_path):
    m = np.zeros((2, 2, 4), np.uint8)
    m[..., 3] = 255  # opaque everywhere: alpha alone must not mark defects
    m[0, 0, 2] = 40
    assert read_mask(_save(tmp_path / "m.png", m)).tolist() == [[1, 0], [0, 0]]


def test_16bit_mask(tmp_path, builders):
    out = read_mask(builders["png16"](tmp_path / "m16.png", np.array([[0, 300]], np.uint16)))
    assert out.tolist() == [[0, 1]]


def test_corrupt_file_error_names_it(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DatasetError, match="broken.png") as err:
        read_image(bad)
    assert "Fix" in str(err.value)
    with pytest.raises(DatasetError, match="broken.png"):
        read_mask(bad)


def test_truncated_file_error(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _save(tmp_path / "t.png", arr)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_missing_file_error(tmp_path):
    with pytest.raises(DatasetError, match="not found.*nope.png"):
        read_image(tmp_path / "nope.png")


def test_is_image_file():
    assert is_image_file("x/a.JPG") and is_image_file("a.tiff") and is_image_file("a.Bmp")
    assert not is_image_file("a.txt") and not is_image_file(".hidden.png")
