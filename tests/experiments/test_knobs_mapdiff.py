"""MapDiff and scoring knobs of issue 13: each changes what it says and nothing else.

* noise shared / per image and the number of noise draws averaged (extraction settings);
* state words as an ensemble (extraction);
* the cross-attention layers of M_diff_L (scoring);
* M_diff_V over several UNet blocks, and how they are pooled (scoring).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfviz.capture.store import CaptureStore, StoreMismatchError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.experiments.runner import EvaluationResult

METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip")
KEYS = ["category", "method", "shots", "seed", "metric"]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=5, image_size=64, n_train=2, n_test_good=2,
                             n_per_defect=1, categories=["brick"], defect_kinds=["stain", "hole"])


@pytest.fixture(scope="module")
def spec(small_root: Path) -> RunSpec:
    return RunSpec(dataset="folder", root=str(small_root), methods=METHODS, shots=(0, 1), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64,
                                               features=("up_blocks.1", "up_blocks.2")),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)


@pytest.fixture(scope="module")
def base(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    result = evaluate(spec, tmp_path_factory.mktemp("base"), progress=False)
    assert isinstance(result, EvaluationResult)
    return result


def _rows(frame: pd.DataFrame) -> pd.Series:
    return frame.sort_values(KEYS).set_index(KEYS)["value"]


def _store_files(store: CaptureStore) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store.path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(store.path.rglob("*")) if p.is_file()}


def _entry_bytes(store: CaptureStore) -> dict[str, bytes]:
    """Every array file of the store's entries, by relative path (the entries' payload)."""
    return {str(p.relative_to(store.path)): p.read_bytes() for p in sorted(store.path.rglob("*.safetensors"))}


def _differing(a: CaptureStore, b: CaptureStore, image_id: str) -> list[str]:
    x, y = a[image_id].load(), b[image_id].load()
    assert x.keys() == y.keys()
    return sorted(k for k in x if x[k].shape != y[k].shape
                  or not np.array_equal(x[k].float().numpy(), y[k].float().numpy()))


# ------------------------------------------------------------------------------------------- noise
def test_per_image_noise_differs_per_image_and_not_with_the_batch() -> None:
    from cfviz.diffusion.forward import draw_noise, noise_seed

    shared = draw_noise((3, 4, 8, 8), 0, 261)
    assert torch.equal(shared[0], shared[2])
    # draw 0 of the shared noise is the one draw of earlier versions
    gen = torch.Generator("cpu").manual_seed(noise_seed(0, 261))
    assert torch.equal(shared[0], torch.randn((4, 8, 8), generator=gen))
    own = draw_noise((3, 4, 8, 8), 0, 261, keys=["a", "b", "c"])
    assert not torch.equal(own[0], own[1])
    assert torch.equal(own[2], draw_noise((1, 4, 8, 8), 0, 261, keys=["c"])[0])  # batch-independent
    assert not torch.equal(draw_noise((1, 4, 8, 8), 0, 261, draw=1)[0], shared[0])


def test_noise_draws_average_the_records_of_separate_draws() -> None:
    """draws=2 stores one step per timestep: the mean of the two draws' records."""
    import cfviz
    from cfviz.diffusion.forward import mapdiff_forward
    from cfviz.models import tiny_inpaint_pipeline

    pipe = tiny_inpaint_pipeline(seed=0)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    prompt = "a photo of a brick with damage"

    def run(**kw: object) -> object:
        with cfviz.capture(pipe, tokens=["damage"], prompt=prompt, features=["up_blocks.1"],
                           dtype=torch.float32) as cap:
            mapdiff_forward(pipe, images, prompt, timesteps=[100, 400], capture=cap, **kw)
        return cap.cache

    two = run(draws=2)
    assert two.timesteps == [100.0, 400.0] and [s.step for s in two.steps] == [0, 1]
    with cfviz.capture(pipe, tokens=["damage"], prompt=prompt, features=["up_blocks.1"], dtype=torch.float32) as cap:
        mapdiff_forward(pipe, images, prompt, timesteps=[100, 400], draws=2)  # no capture given: steps kept
    sep = cap.cache
    assert sep.timesteps == [100.0, 100.0, 400.0, 400.0]
    one = run()
    for name in two.attention:
        for k in (0, 1):
            want = (sep.attention[name][2 * k] + sep.attention[name][2 * k + 1]) / 2
            torch.testing.assert_close(two.attention[name][k], want)
            torch.testing.assert_close(one.attention[name][k], sep.attention[name][2 * k], rtol=0, atol=0)
    torch.testing.assert_close(two.features["up_blocks.1"][1],
                               (sep.features["up_blocks.1"][2] + sep.features["up_blocks.1"][3]) / 2)


@pytest.mark.parametrize("name, value", [("noise", "per-image"), ("noise_draws", 2)])
def test_a_noise_knob_is_an_extraction_setting_that_changes_only_the_diffusion_outputs(
        base: EvaluationResult, spec: RunSpec, tmp_path: Path, name: str, value: object) -> None:
    assert name not in spec.extraction.to_json()  # at the default: older stores keep matching
    other_spec = replace(spec, extraction=replace(spec.extraction, **{name: value}))
    assert other_spec.extraction.to_json()[name] == value
    with pytest.raises(StoreMismatchError):
        evaluate(other_spec, tmp_path / "same", store_dir=base.store.path, progress=False)
    other = evaluate(other_spec, tmp_path / "new", progress=False)
    for image_id in base.store.ids[:2]:
        differ = _differing(base.store, other.store, image_id)
        assert differ and all(k.startswith(("attn/", "feat/")) for k in differ), differ
        assert other.store[image_id].meta["metadata"][name] == value
    a, b = _rows(base.frame), _rows(other.frame)
    methods = a.index.get_level_values("method")
    clip_only = methods.isin(["patchclip", "winclip"])
    assert np.array_equal(a[clip_only].values, b[clip_only].values)
    assert not np.array_equal(a[methods == "mapdiff"].values, b[methods == "mapdiff"].values)


def test_per_image_noise_stores_are_byte_identical_across_shards_and_close_across_batch_sizes(
        spec: RunSpec, tmp_path: Path) -> None:
    """Each image's noise depends on its id only: two shards merged give the single run's store byte
    for byte, and batches of 1 and 3 give the same records (up to the last bits that CPU kernels
    change with the batch, which is why the batch size is part of a store's identity)."""
    one = replace(spec, methods=("mapdiff",), shots=(0,), extraction=replace(spec.extraction, noise="per-image"))
    single = evaluate(one, tmp_path / "single", progress=False)
    shared_store = tmp_path / "sharded"
    for i in range(2):
        evaluate(one, tmp_path / "s", store_dir=shared_store, shard=(i, 2), progress=False)
    merged = evaluate(one, tmp_path / "s", store_dir=shared_store, progress=False)
    assert _entry_bytes(merged.store) == _entry_bytes(single.store) != {}
    other = evaluate(replace(one, batch_size=3), tmp_path / "b3", progress=False)
    assert other.store.ids == single.store.ids
    for image_id in single.store.ids:
        x, y = single.store[image_id].load(), other.store[image_id].load()
        for k in x:
            if k.startswith(("attn/", "feat/")):
                torch.testing.assert_close(x[k].float(), y[k].float(), rtol=1e-2, atol=2e-3)
