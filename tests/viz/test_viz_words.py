"""Every prompt token in the store, and per-word grids on one colour scale (issue 11, item 3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.prompt_tokens import END_LABEL, EVERY_TOKEN, START_LABEL
from cfviz.viz.grids import word_block_grid, word_timestep_grid

KEYS = ["category", "method", "shots", "seed", "metric"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """The same two-category run with the language words only and with every prompt token."""
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=1, n_test_good=1,
                             n_per_defect=1, categories=["brick", "grass"], defect_kinds=["stain"])
    spec = RunSpec(dataset="folder", root=str(root), methods=("mapdiff",), shots=(0,), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64,
                                               features=("up_blocks.1", "up_blocks.2")),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)
    language = evaluate(spec, tmp_path_factory.mktemp("language"), progress=False)
    every = evaluate(replace(spec, extraction=replace(spec.extraction, tokens="all")),
                     tmp_path_factory.mktemp("all"), progress=False)
    return language, every


def test_tokens_all_stores_every_prompt_token_with_start_and_end_labels(runs) -> None:
    language, every = runs
    for image_id in every.store.ids:  # both categories share the store (their prompts differ in length)
        entry = every.store[image_id]
        labels = entry.cache(blocks=[]).tokens.labels
        category = entry.metadata["category"]
        assert labels[0] == "damage"  # the language word first, under its own label
        assert labels[1] == START_LABEL and labels[-1] == END_LABEL
        words = [lab.split(":", 1)[1] for lab in labels[2:-1]]
        prompt = entry.metadata["prompt"]
        assert category in prompt and "damage" in words and category in words
        # every token of the prompt, in order, without word-end marks or padding
        assert "".join(words) == "".join(prompt.lower().split())
        assert [int(lab[1:].split(":")[0]) for lab in labels[2:-1]] == list(range(1, len(words) + 1))
        assert entry[f"attn/{entry.layers[0]}"].shape[1] == len(labels)  # (steps, tokens, h, w)
        assert language.store[image_id].cache(blocks=[]).tokens.labels == ("damage",)
    assert every.store.config["extraction"]["tokens"] == "all"
    assert "tokens" not in language.store.config["extraction"]  # the default keeps older stores' identity
    assert every.store.config != language.store.config
    assert every.store.header["capture"]["tokens"] == [EVERY_TOKEN]  # the same for every category


def test_tokens_all_leaves_m_diff_l_and_the_scores_alone(runs) -> None:
    language, every = runs
    a = language.frame.sort_values(KEYS).set_index(KEYS)["value"]
    b = every.frame.sort_values(KEYS).set_index(KEYS)["value"]
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    image_id = every.store.ids[0]
    old = language.store[image_id].load()
    new = every.store[image_id].load()
    for name in language.store[image_id].layers:  # the language word's maps are the same maps
        np.testing.assert_allclose(new[f"attn/{name}"][:, :1].float().numpy(), old[f"attn/{name}"].float().numpy(),
                                   atol=1e-3)


def _heatmaps(fig):
    return [im for ax in fig.axes for im in ax.get_images() if im.get_gid() == "cfviz-heatmap"]


@pytest.mark.parametrize("kind", ["timestep", "block"])
def test_word_grids_share_one_colour_scale(runs, kind: str, figs) -> None:
    _, every = runs
    entry = every.store[every.store.ids[-1]]
    draw = word_timestep_grid if kind == "timestep" else word_block_grid
    fig = draw(entry)
    labels = entry.cache(blocks=[]).tokens.labels[1:]  # the prompt's tokens (not "damage" again before them)
    ims = _heatmaps(fig)
    from cfviz.capture.naming import block_of, short_names, unet_order

    blocks = short_names(unet_order(dict.fromkeys(block_of(n) for n in entry.layers)))
    n_cols = 2 if kind == "timestep" else len(blocks)  # two timesteps; every block with cross-attention
    assert len(ims) == len(labels) * n_cols
    limits = {(im.norm.vmin, im.norm.vmax) for im in ims}
    assert len(limits) == 1  # one shared scale
    lo, hi = limits.pop()
    data = np.concatenate([np.asarray(im.get_array()).ravel() for im in ims])
    assert lo == pytest.approx(data.min()) and hi == pytest.approx(data.max())
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() and ax.get_label() != "<colorbar>"]
    assert rows[0] == START_LABEL and rows[-1] == END_LABEL and "damage (" in rows[-2] and "damage" not in rows
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == (["t = 100", "t = 400"] if kind == "timestep" else blocks)
    assert kind == "timestep" or (blocks[0], blocks[-1]) == ("down0", "up2")  # in UNet order
    assert figs.overlapping_text(fig) == []
    fig.savefig(f"/tmp/cfviz_g_word_{kind}.png", dpi=150)


def test_word_grid_subset_fixed_limits_and_bad_input(runs) -> None:
    _, every = runs
    entry = every.store[every.store.ids[0]]
    fig = word_timestep_grid(entry.cache(blocks=[]), tokens=["damage", END_LABEL], vmin=0.0, vmax=1.0, steps=[1])
    ims = _heatmaps(fig)
    assert len(ims) == 2 and {(im.norm.vmin, im.norm.vmax) for im in ims} == {(0.0, 1.0)}
    with pytest.raises(TypeError, match="CaptureCache"):
        word_block_grid(np.zeros((2, 8, 8)))
    with pytest.raises(KeyError, match="was not recorded"):
        word_timestep_grid(entry, tokens=["scratch"])


def test_the_cli_flag_and_a_bad_value() -> None:
    import argparse

    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args
    from cfviz.errors import ConfigError

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    assert spec_from_args(p.parse_args(["--tokens", "all"])).extraction.tokens == "all"
    assert spec_from_args(p.parse_args([])).extraction.tokens == "language"
    assert FLAGS["extraction.tokens"] == "--tokens"
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(tokens="every")
    assert err.value.field == "extraction.tokens" and "language, all" in str(err.value)


# ---------------------------------------------------------------------------------- two runs side by side
def test_compare_maps_one_shared_scale_and_the_difference(figs) -> None:
    from cfviz.viz.compare import compare_maps

    rng = np.random.default_rng(0)
    a = {"t = 100": rng.random((8, 8)), "t = 400": rng.random((8, 8))}
    b = {"t = 100": 3 * rng.random((8, 8)), "t = 400": rng.random((16, 16))}  # another scale and size
    fig = compare_maps(a, b, labels=("k = 0", "k = 1"), mask=np.eye(16))
    maps = _heatmaps(fig)
    assert len(maps) == 4
    limits = {(im.norm.vmin, im.norm.vmax) for im in maps}
    assert len(limits) == 1
    lo, hi = limits.pop()
    assert lo == pytest.approx(min(float(np.min(im.get_array())) for im in maps))
    assert hi == pytest.approx(max(float(np.max(im.get_array())) for im in maps))
    diffs = [im for ax in fig.axes for im in ax.get_images() if im.get_gid() == "cfviz-difference"]
    assert len(diffs) == 2
    np.testing.assert_allclose(diffs[0].get_array(), maps[1].get_array() - maps[0].get_array())
    assert diffs[0].norm.vmin == -diffs[0].norm.vmax and diffs[0].norm.vcenter == 0
    assert [ax.get_title() for ax in fig.axes[:3]] == ["k = 0", "k = 1", "k = 1 − k = 0"]
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 2
    assert figs.overlapping_text(fig) == []
    fig.savefig("/tmp/cfviz_g_compare_maps.png", dpi=150)
    with pytest.raises(ValueError, match="same rows"):
        compare_maps(a, {"t = 100": a["t = 100"]})


def test_compare_store_maps_reads_the_same_image_from_two_stores(runs, figs) -> None:
    from cfviz.viz.compare import compare_store_maps

    language, every = runs
    image_id = language.store.ids[-1]
    fig = compare_store_maps(language.store, every.store, image_id)
    a, b = (np.asarray(im.get_array()) for im in _heatmaps(fig))
    np.testing.assert_allclose(a, b, atol=1e-3)  # every token stored: M_diff_L is the same map
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles[0] != titles[1]  # the two stores are told apart by their folders
    assert figs.overlapping_text(fig) == []
    fig.savefig("/tmp/cfviz_g_compare_stores.png", dpi=150)
    fig = compare_store_maps(language.store, every.store, image_id, what="clip/map/language", labels=("x", "y"))
    assert [ax.get_title() for ax in fig.axes[:3]] == ["x", "y", "y − x"]
    with pytest.raises(KeyError, match="not in store a"):
        compare_store_maps(language.store, every.store, "nope/test/good/999")


def test_tokens_all_with_object_words_over_two_categories(runs, tmp_path: Path) -> None:
    """Categories' language words differ (language_tokens="object"); one store still takes both."""
    from cfviz.evaluation.prompt_tokens import language_words

    _, every = runs
    spec = every.spec
    spec = replace(spec, extraction=replace(spec.extraction, timesteps=(100,), language_tokens="object"))
    result = evaluate(spec, tmp_path, progress=False)
    for image_id in result.store.ids:
        entry = result.store[image_id]
        category = entry.metadata["category"]
        assert language_words(entry) == [category]
        labels = entry.cache(blocks=[]).tokens.labels
        assert labels[:2] == (category, START_LABEL) and labels[-1] == END_LABEL
    assert set(result.frame["category"]) == {"brick", "grass"}


def test_object_words_over_two_categories_share_one_store(runs, tmp_path: Path) -> None:
    """language_tokens="object" records each category's own words; one store takes every category."""
    language, _ = runs
    spec = replace(language.spec, extraction=replace(language.spec.extraction, timesteps=(100,),
                                                     language_tokens="object"))
    result = evaluate(spec, tmp_path, progress=False)
    for image_id in result.store.ids:
        entry = result.store[image_id]
        assert entry.cache(blocks=[]).tokens.labels == (entry.metadata["category"],)
    assert set(result.frame["category"]) == {"brick", "grass"}
    assert result.store.header["capture"]["tokens"] == ["<object words of each category>"]
