"""CLIP / diffusion transforms, mask resizing and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cfviz.data.transforms import (CLIP_MEAN, CLIP_STD, clip_batch, clip_transform, diffusion_batch,
                                   diffusion_transform, mask_batch, mask_to_tensor, resize_mask, to_rgb)


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_clip_shape_dtype_and_normalisation():
    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 128, 0
    x = clip_transform(img)
    assert x.shape == (3, 240, 240) and x.dtype == torch.float32
    expected = [(255 / 255 - CLIP_MEAN[0]) / CLIP_STD[0], (128 / 255 - CLIP_MEAN[1]) / CLIP_STD[1],
                (0 - CLIP_MEAN[2]) / CLIP_STD[2]]
    for c in range(3):
        assert torch.allclose(x[c], torch.full((240, 240), expected[c]), atol=1e-5)


def test_clip_matches_pil_bicubic_then_normalise():
    img = _noise(37, 53)
    ref = np.asarray(Image.fromarray(img).resize((240, 240), Image.Resampling.BICUBIC), np.float32) / 255.0
    ref = (ref - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    x = clip_transform(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(x, ref, atol=1e-5)
    # bilinear would differ: the interpolation really is bicubic
    bil = np.asarray(Image.fromarray(img).resize((240, 240), Image.Resampling.BILINEAR), np.float32) / 255.0
    bil = (bil - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    assert np.abs(x - bil).max() > 0.05


def test_diffusion_range_shape_and_bilinear():
    img = _noise(30, 70)
    y = diffusion_transform(img)
    assert y.shape == (3, 512, 512) and y.dtype == torch.float32
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    ref = np.asarray(Image.fromarray(img).resize((512, 512), Image.Resampling.BILINEAR), np.float32) / 127.5 - 1
    np.testing.assert_allclose(y.permute(1, 2, 0).numpy(), ref, atol=1e-6)
    black = diffusion_transform(np.zeros((8, 8, 3), np.uint8), size=16)
    white = diffusion_transform(np.full((8, 8, 3), 255, np.uint8), size=16)
    assert float(black.max()) == -1.0 and float(white.min()) == 1.0


def test_non_square_and_rect_sizes():
    img = _noise(20, 90)
    assert clip_transform(img, size=(32, 48)).shape == (3, 32, 48)
    assert diffusion_transform(img, size=64).shape == (3, 64, 64)
    # a left/right split of the image stays left/right after squeezing (no crop, no padding)
    half = np.zeros((20, 90, 3), np.uint8)
    half[:, 45:] = 255
    y = diffusion_transform(half, size=64)
    assert float(y[:, :, :30].max()) == -1.0 and float(y[:, :, 34:].min()) == 1.0


def test_pil_and_grayscale_inputs_match_arrays():
    img = _noise(24, 24)
    assert torch.equal(clip_transform(Image.fromarray(img), size=32), clip_transform(img, size=32))
    gray = img[..., 0]
    assert torch.equal(clip_transform(gray, size=16), clip_transform(np.repeat(gray[..., None], 3, 2), size=16))
    rgba = Image.fromarray(np.concatenate([img, np.zeros((24, 24, 1), np.uint8)], axis=2))
    assert torch.equal(diffusion_transform(rgba, size=16), diffusion_transform(img, size=16))


def test_to_rgb_variants_and_errors():
    assert to_rgb(np.zeros((3, 4, 1), np.uint8)).shape == (3, 4, 3)
    assert to_rgb(np.full((2, 2), 0.5)).max() == 128
    assert to_rgb(Image.new("L", (5, 2), 7)).tolist()[0][0] == [7, 7, 7]
    with pytest.raises(ValueError, match="shape"):
        to_rgb(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb(np.full((2, 2), 3.0))
    with pytest.raises(TypeError, match="uint8"):
        to_rgb(np.zeros((2, 2), np.uint16))


def test_resize_mask_nearest_stays_binary():
    mask = np.zeros((37, 53), np.uint8)
    mask[5:20, 10:40] = 1
    for size in (8, 240, (17, 91)):
        out = resize_mask(mask, size)
        assert out.dtype == np.uint8 and set(np.unique(out).tolist()) <= {0, 1}
    big = resize_mask(mask, (37 * 3, 53 * 3))
    np.testing.assert_array_equal(big[::3, ::3], mask)  # exact nearest-neighbour upsampling
    assert resize_mask(mask * 255, 240).max() == 1
    frac = resize_mask(mask, 240).mean()
    assert abs(frac - mask.mean()) < 0.02
    t = mask_to_tensor(mask, 16)
    assert t.shape == (16, 16) and t.dtype == torch.float32 and set(t.unique().tolist()) <= {0.0, 1.0}


def test_batches_stack():
    imgs = [_noise(10, 12, s) for s in range(3)]
    b = clip_batch(imgs, size=24)
    assert b.shape == (3, 3, 24, 24)
    assert torch.equal(b[1], clip_transform(imgs[1], size=24))
    assert diffusion_batch(imgs, size=16).shape == (3, 3, 16, 16)
    assert mask_batch([np.eye(10, dtype=np.uint8)] * 2, 16).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="None mask"):
        mask_batch([None], 16)
    with pytest.raises(ValueError, match="at least one"):
        clip_batch([])
