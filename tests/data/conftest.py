"""Fixture builders for the data-layer tests: tiny MVTec-layout and VisA folders in tmp_path."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_rgb(path: Path, size: tuple[int, int] = (12, 10), value: int = 100, fmt: str | None = None) -> Path:
    """An RGB image of ``size`` = (height, width) with a small gradient so it is not constant."""
    h, w = size
    arr = np.full((h, w, 3), value, np.uint8)
    arr[:, :, 1] = (np.arange(w, dtype=np.uint8) * 3)[None, :]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_mask(path: Path, size: tuple[int, int] = (12, 10), value: int = 255) -> Path:
    """A mask with a filled rectangle of ``value`` in the top-left quarter."""
    h, w = size
    arr = np.zeros((h, w), np.uint8)
    arr[: h // 2, : w // 2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_png16(path: Path, arr: np.ndarray) -> Path:
    """Write a 16-bit PNG (gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4)) by hand: Pillow cannot
    write 16-bit colour PNGs."""
    arr = np.asarray(arr, dtype=np.uint16)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def build_mvtec(root: Path, categories: tuple[str, ...] = ("bottle", "tile"), *, n_train: int = 3,
                n_good: int = 2, defects: dict[str, int] | None = None, size: tuple[int, int] = (12, 10),
                mask_suffix: str = "_mask", ext: str = ".png") -> Path:
    """A small MVTec-layout tree: train/good, test/good, test/<defect> with masks."""
    defects = {"crack": 2, "scratch": 1} if defects is None else defects
    for cat in categories:
        for i in range(n_train):
            write_rgb(root / cat / "train" / "good" / f"{i:03d}{ext}", size, value=10 + i)
        for i in range(n_good):
            write_rgb(root / cat / "test" / "good" / f"{i:03d}{ext}", size, value=50 + i)
        for defect, n in defects.items():
            for i in range(n):
                write_rgb(root / cat / "test" / defect / f"{i:03d}{ext}", size, value=200)
                write_mask(root / cat / "ground_truth" / defect / f"{i:03d}{mask_suffix}.png", size)
    return root


VISA_HEADER = "object,split,label,image,mask\n"


def build_visa(root: Path, categories: tuple[str, ...] = ("pcb1", "candle"), *, n_train: int = 2,
               n_test_good: int = 2, n_anomaly: int = 2, size: tuple[int, int] = (10, 14)) -> Path:
    """A small VisA tree with JPEG images, class-index masks (values 0, 1, 2) and split_csv/1cls.csv."""
    rows = []
    for cat in categories:
        base = root / cat / "Data"
        for i in range(n_train + n_test_good):
            rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            write_rgb(root / rel, size, value=30 + i, fmt="JPEG")
            rows.append(f"{cat},{'train' if i < n_train else 'test'},normal,{rel},")
        for i in range(n_anomaly):
            rel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            write_rgb(root / rel, size, value=180, fmt="JPEG")
            mask = np.zeros(size, np.uint8)
            mask[1:4, 1:4] = 1
            mask[6:8, 6:9] = 2  # a second defect region with another class index
            (base / "Masks" / "Anomaly").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(base / "Masks" / "Anomaly" / f"{i:03d}.png")
            rows.append(f"{cat},test,anomaly,{rel},{cat}/Data/Masks/Anomaly/{i:03d}.png")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text(VISA_HEADER + "\n".join(rows) + "\n")
    return root


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    return build_mvtec(tmp_path / "mvtec")


@pytest.fixture
def visa_root(tmp_path: Path) -> Path:
    return build_visa(tmp_path / "visa")


@pytest.fixture
def builders() -> dict[str, Callable[..., Path]]:
    """The builder functions, for tests that need a variant of the standard trees."""
    return {"mvtec": build_mvtec, "visa": build_visa, "rgb": write_rgb, "mask": write_mask, "png16": write_png16}
