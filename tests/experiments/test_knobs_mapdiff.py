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
from cfviz.evaluation.runner import EvaluationResult

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
                                               features=("up_blocks.0", "up_blocks.1", "up_blocks.2")),
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


# ------------------------------------------------------------------------------------------ scoring
def _changed_groups(a: pd.Series, b: pd.Series) -> set[tuple[str, int]]:
    assert list(a.index) == list(b.index)
    return {(m, k) for (m, k), g in a.groupby(level=["method", "shots"])
            if not np.array_equal(g.values, b.loc[g.index].values)}


def _rescore(base: EvaluationResult, spec: RunSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             **scoring: object) -> EvaluationResult:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a scoring setting loaded a model")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    before = _store_files(base.store)
    other = evaluate(replace(spec, scoring=replace(spec.scoring, **scoring)), tmp_path, store_dir=base.store.path,
                     progress=False)
    assert _store_files(base.store) == before  # nothing rewritten, nothing added
    return other


def test_language_layers_filter_m_diff_l_only(base: EvaluationResult, spec: RunSpec, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from cfviz.diffusion.mapdiff import language_map
    from cfviz.evaluation.scoring import diffusion_language_maps

    other = _rescore(base, spec, tmp_path, monkeypatch, language_layers="up_blocks.*")
    changed = _changed_groups(_rows(base.frame), _rows(other.frame))
    assert changed == {(m, k) for m in ("clipfusion", "mapdiff") for k in (0, 1)}
    ids = base.store.ids[:2]
    up = diffusion_language_maps(base.store, ids, replace(spec.scoring, language_layers="up_blocks.*"))
    cache = base.store[ids[0]].cache(blocks=[])
    names = [n for n in cache.attention if n.startswith("up_blocks.")]
    assert 0 < len(names) < len(cache.attention)
    np.testing.assert_array_equal(up[0], language_map(cache, layers=names, min_resolution=1)[0].numpy())
    every = diffusion_language_maps(base.store, ids, spec.scoring)
    np.testing.assert_array_equal(every[0], language_map(cache, min_resolution=1)[0].numpy())
    assert not np.allclose(up, every)
    # short names and several patterns, comma-separated
    both = diffusion_language_maps(base.store, ids, replace(spec.scoring, language_layers="up1.*, mid.*"))
    np.testing.assert_array_equal(both[0], language_map(cache, layers=["up1.*", "mid.*"], min_resolution=1)[0].numpy())


@pytest.mark.parametrize("pooling", ["mean", "concat"])
def test_several_visual_blocks_are_pooled_and_change_only_k_shot_diffusion_rows(
        base: EvaluationResult, spec: RunSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pooling: str) -> None:
    from cfviz.diffusion.mapdiff import mean_on_finest_grid, pooled_visual_map
    from cfviz.evaluation.scoring import diffusion_features, diffusion_visual_maps, pooled_diffusion_visual_maps

    blocks = "up_blocks.0,up_blocks.2"  # 64 channels on 4x4, 32 on 8x8
    other = _rescore(base, spec, tmp_path, monkeypatch, visual_block=blocks, visual_pooling=pooling)
    assert _changed_groups(_rows(base.frame), _rows(other.frame)) == {("clipfusion", 1), ("mapdiff", 1)}
    store, ext = base.store, base.spec.extraction
    ids, refs = [i for i in store.ids if "/test/" in i][:3], [i for i in store.ids if "/train/" in i][:1]
    sc = replace(spec.scoring, visual_block=blocks, visual_pooling=pooling)
    pooled = pooled_diffusion_visual_maps(store, ids, refs, sc, ext)
    per_block = [diffusion_visual_maps(store, ids, refs, replace(spec.scoring, visual_block=b), ext)
                 for b in ("up_blocks.0", "up_blocks.2")]
    assert per_block[0].shape != per_block[1].shape  # blocks of different grids (and widths)
    mean = mean_on_finest_grid([torch.from_numpy(m) for m in per_block]).numpy()
    assert pooled.shape == max((m.shape for m in per_block), key=lambda s: s[1] * s[2])
    if pooling == "mean":
        np.testing.assert_array_equal(pooled, mean)
    else:
        assert not np.allclose(pooled, mean)
        t = ext.timesteps[len(ext.timesteps) // 2]
        q = [diffusion_features(store, ids, b, t) for b in ("up_blocks.0", "up_blocks.2")]
        r = [diffusion_features(store, refs, b, t) for b in ("up_blocks.0", "up_blocks.2")]
        np.testing.assert_array_equal(pooled, pooled_visual_map(q, r, "concat").numpy())
        # a reference image against itself: distance 0 everywhere, as for one block
        assert np.abs(pooled_visual_map(r, r, "concat").numpy()).max() < 1e-5
    # one block is the one-block map itself, whatever the pooling
    one = pooled_diffusion_visual_maps(store, ids, refs, replace(sc, visual_block="up_blocks.2"), ext)
    np.testing.assert_array_equal(one, per_block[1])


def test_visual_blocks_must_be_stored_and_paired() -> None:
    from cfviz.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        RunSpec(methods=("mapdiff",), shots=(1,), scoring=ScoringConfig(visual_block="up_blocks.1,up_blocks.3"))
    assert err.value.field == "scoring.visual_block" and "up_blocks.3" in str(err.value)
    with pytest.raises(ConfigError) as err:
        ScoringConfig(visual_block="up_blocks.1,up_blocks.2", reference_block="up_blocks.1")
    assert err.value.field == "scoring.reference_block"
    with pytest.raises(ConfigError) as err:
        ScoringConfig(visual_pooling="max")
    assert err.value.field == "scoring.visual_pooling" and "concat" in str(err.value)


# ------------------------------------------------------------------------------------- state words
def test_a_state_ensemble_is_one_prompt_whose_states_weigh_equally_in_m_diff_l(
        base: EvaluationResult, spec: RunSpec, tmp_path: Path) -> None:
    from cfviz.diffusion.mapdiff import language_map
    from cfviz.evaluation.scoring import diffusion_language_maps

    ensemble = replace(spec, extraction=replace(spec.extraction, state="crack damage,scratch"))
    assert ensemble.extraction.states == [["crack", "damage"], ["scratch"]]
    other = evaluate(ensemble, tmp_path, progress=False)
    image_id = base.store.ids[0]
    entry = other.store[image_id]
    assert entry.meta["metadata"]["prompt"] == "a close-up cropped png photo of a brick with crack damage, scratch"
    cache = entry.cache(blocks=[])
    assert list(cache.labels) == ["crack", "damage", "scratch"]
    per_word = {w: language_map(cache, tokens=[w], min_resolution=1)[0].numpy() for w in cache.labels}
    m = diffusion_language_maps(other.store, [image_id], spec.scoring)[0]
    np.testing.assert_allclose(m, ((per_word["crack"] + per_word["damage"]) / 2 + per_word["scratch"]) / 2,
                               rtol=1e-5, atol=1e-7)
    flat = (per_word["crack"] + per_word["damage"] + per_word["scratch"]) / 3  # not every word equally
    assert not np.allclose(m, flat, rtol=1e-5, atol=1e-7)
    # only the diffusion outputs change (the prompt is MapDiff's); CLIP's rows stay
    differ = _differing(base.store, other.store, image_id)
    assert all(k.startswith(("attn/", "feat/")) for k in differ)
    a, b = _rows(base.frame), _rows(other.frame)
    methods = a.index.get_level_values("method")
    clip_only = methods.isin(["patchclip", "winclip"])
    assert np.array_equal(a[clip_only].values, b[clip_only].values)


def test_one_state_of_several_words_keeps_every_word_equal() -> None:
    e = ExtractionConfig(state="crack damage")
    assert e.states == [["crack", "damage"]] and e.state_tokens == ["crack", "damage"]
    from cfviz.diffusion.forward import build_prompt
    from cfviz.diffusion.mapdiff import state_groups

    assert state_groups(e.states) is None  # one state: M_diff_L as before (mean over its words)
    assert build_prompt("bottle", "crack damage") == "a close-up cropped png photo of a bottle with crack damage"
    assert ExtractionConfig(state="damage, defect,scratch").state_tokens == ["damage", "defect", "scratch"]


def test_the_cli_sets_each_mapdiff_knob() -> None:
    import argparse

    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    s = spec_from_args(p.parse_args(["--noise", "per-image", "--noise-draws", "3", "--state", "damage,scratch",
                                     "--language-layers", "up_blocks.*", "--features", "up_blocks.1", "up_blocks.2",
                                     "--visual-block", "up_blocks.1,up_blocks.2", "--visual-pooling", "concat"]))
    assert (s.extraction.noise, s.extraction.noise_draws, s.extraction.state) == ("per-image", 3, "damage,scratch")
    assert (s.scoring.language_layers, s.scoring.visual_blocks, s.scoring.visual_pooling) == (
        "up_blocks.*", ["up_blocks.1", "up_blocks.2"], "concat")
    for path in ("extraction.noise", "extraction.noise_draws", "scoring.language_layers", "scoring.visual_block",
                 "scoring.visual_pooling", "scoring.reference_block"):
        assert path in FLAGS
    from cfviz.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        ExtractionConfig(noise_draws=0)
    assert err.value.field == "extraction.noise_draws"
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(noise="per_image")
    assert err.value.field == "extraction.noise" and "per-image" in str(err.value)


# ---------------------------------------------------------------------------------- design choices
def test_design_choices_sweep_layers_and_pooled_blocks_from_one_store(base: EvaluationResult, spec: RunSpec,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cfviz.analysis.ablations import design_choices
    from cfviz.evaluation.runner import open_run_dataset

    monkeypatch.setattr("cfviz.evaluation.models.load_models", lambda *a, **k: 1 / 0)  # no model runs
    t = design_choices(base.store, open_run_dataset(spec), methods=("mapdiff",), shots=(0, 1), scoring=spec.scoring,
                       metrics=("image_auroc", "pixel_auroc"))
    assert {"language_layers", "visual_block"} <= set(t.knob)
    layers = t[t.knob == "language_layers"]
    assert set(layers.setting) == {"all", "down_blocks.*", "up_blocks.*"}
    assert set(layers[layers.default].setting) == {"all"}
    blocks = t[t.knob == "visual_block"]
    assert not (blocks.shots == 0).any()  # M_diff_V only exists with references
    assert set(blocks.setting) == {"up_blocks.1", "up_blocks.0", "up_blocks.2",
                                   "up_blocks.0,up_blocks.1,up_blocks.2 (mean)",
                                   "up_blocks.0,up_blocks.1,up_blocks.2 (concat)"}
    ran = _rows(base.frame)
    for _, row in t[t.default].iterrows():  # a knob at its default is the run itself
        assert row.value == pytest.approx(ran.loc[(row.category, row.method, row.shots, row.seed, row.metric)])
    pooled = blocks[blocks.setting.str.endswith("(concat)")].value.to_numpy()
    assert not np.array_equal(pooled, blocks[blocks.default].value.to_numpy())


def test_extraction_choices_run_one_store_per_alternative(spec: RunSpec, tmp_path: Path) -> None:
    from cfviz.analysis.ablations import extraction_choices

    small = replace(spec, methods=("mapdiff",), shots=(0,), extraction=replace(spec.extraction, timesteps=(261,)))
    t = extraction_choices(small, tmp_path, knobs={"noise": ("per-image",), "state": ("damage,scratch",)})
    assert set(t.knob) == {"noise", "state"}
    assert set(t[t.default].setting) == {"shared", "damage"}
    assert sorted(p.parent.name for p in tmp_path.glob("*/store")) == ["default", "noise-per-image",
                                                                      "state-damage+scratch"]
    for knob in ("noise", "state"):
        d = t[(t.knob == knob) & t.default].set_index("metric").value
        alt = t[(t.knob == knob) & ~t.default].set_index("metric").value
        assert list(d.index) == list(alt.index) and not np.array_equal(d.values, alt.values)
