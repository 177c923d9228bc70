"""``--eval-size native``: pixel metrics at each image's own mask size, on a set of two image sizes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate

KEYS = ["category", "method", "shots", "seed", "metric"]
OTHER = (48, 80)  # (height, width) of the resized half of the test images


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Textures at 64 x 64, with every other test image (and its mask) resized to 48 x 80."""
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=2, n_test_good=2,
                             n_per_defect=2, categories=["brick"], defect_kinds=["stain", "hole"])
    tests = sorted((root / "brick" / "test").rglob("*.png"))
    for path in tests[::2]:
        Image.open(path).resize(OTHER[::-1], Image.Resampling.BILINEAR).save(path)
        mask = root / "brick" / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        if mask.exists():
            Image.open(mask).resize(OTHER[::-1], Image.Resampling.NEAREST).save(mask)
    return root


@pytest.fixture(scope="module")
def spec(two_sizes: Path) -> RunSpec:
    return RunSpec(dataset="folder", root=str(two_sizes), methods=("clipfusion", "mapdiff"), shots=(0, 1),
                   extraction=ExtractionConfig(timesteps=(261,), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size="native"), batch_size=2)


def _rows(frame: pd.DataFrame) -> pd.Series:
    return frame.sort_values(KEYS).set_index(KEYS)["value"]


def test_native_pixel_metrics_use_each_mask_at_its_own_size(spec: RunSpec, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from cfviz.evaluation.runner import open_run_dataset
    from cfviz.evaluation.scoring import predict
    from cfviz.fusion import upsample
    from cfviz.metrics.native import NativeMasks

    native = evaluate(spec, tmp_path / "native", progress=False)
    grid = evaluate(replace(spec, scoring=replace(spec.scoring, eval_size=256)), tmp_path / "grid",
                    store_dir=native.store.path, progress=False)
    a, b = _rows(native.frame), _rows(grid.frame)
    assert list(a.index) == list(b.index)
    pixel = a.index.get_level_values("metric").str.startswith("pixel")
    assert pixel.any()
    np.testing.assert_array_equal(a[~pixel].values, b[~pixel].values)  # image scores: the same 256 grid
    assert not np.array_equal(a[pixel].values, b[pixel].values)

    dataset = open_run_dataset(spec)
    p = predict(native.store, dataset, "brick", "mapdiff", shots=1, scoring=spec.scoring)
    assert isinstance(p.masks, NativeMasks) and set(p.masks.shapes) == {(64, 64), OTHER}
    assert p.maps.shape[1:] == (256, 256)  # fused on the working grid
    truth = np.concatenate([m.ravel() for m in p.masks.masks()])
    scores = np.concatenate([upsample(m[None], np.shape(k))[0].ravel() for m, k in zip(p.maps, p.masks.masks())])
    assert sorted(p.masks.shapes) == [OTHER] * 3 + [(64, 64)] * 3  # 6 test images, every other one resized
    assert len(truth) == 3 * 64 * 64 + 3 * OTHER[0] * OTHER[1]  # every pixel of every image once
    expected = roc_auc_score(truth, scores)
    assert a.loc[("brick", "mapdiff", 1, 0, "pixel_auroc")] == pytest.approx(expected, abs=1e-12)


def test_native_masks_pool_like_a_stack_when_sizes_agree() -> None:
    from cfviz.metrics import pixel_metrics
    from cfviz.metrics.native import NativeMasks

    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[0, 4:8, 4:8] = 1
    masks[1, 0:2, 10:16] = 1
    maps = (masks + rng.normal(0, 0.4, masks.shape)).astype(np.float32)
    assert pixel_metrics(NativeMasks.from_list(list(masks)), maps) == pixel_metrics(masks, maps)
    # two sizes: each map is resized to its own mask, regions counted per image
    small = np.zeros((8, 12), np.uint8)
    small[1:3, 1:3] = 1
    mixed = pixel_metrics([masks[0], small], [maps[0], rng.random((8, 12)).astype(np.float32)])
    assert mixed["n_pixels"] == 16 * 16 + 8 * 12 and mixed["n_regions"] == 2


def test_eval_size_native_is_a_named_setting() -> None:
    import argparse

    from cfviz.commands.evaluate import add_run_arguments, spec_from_args
    from cfviz.errors import ConfigError

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    assert spec_from_args(p.parse_args(["--eval-size", "native"])).scoring.eval_size == "native"
    assert spec_from_args(p.parse_args(["--eval-size", "128"])).scoring.grid == 128
    with pytest.raises(SystemExit):
        p.parse_args(["--eval-size", "nativ"])
    with pytest.raises(ConfigError) as err:
        ScoringConfig(eval_size="full")
    assert err.value.field == "scoring.eval_size" and "native" in str(err.value)
