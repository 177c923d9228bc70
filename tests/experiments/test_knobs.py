"""Each design choice is a named setting that changes what it says and nothing else (issue 13).

Scoring knobs (PatchCLIP's language and visual map forms, normalisation, score rule, sigma)
are recomputed from one store: no model loads, the store is not touched, and only the rows of
the methods the knob concerns change. The extraction knob (WinCLIP's prompt averaging) is part
of the store's identity and changes only WinCLIP's stored outputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
                   extraction=ExtractionConfig(timesteps=(100, 400), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)


@pytest.fixture(scope="module")
def base(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    result = evaluate(spec, tmp_path_factory.mktemp("base"), progress=False)
    assert isinstance(result, EvaluationResult)
    return result


def _store_files(store: CaptureStore) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store.path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(store.path.rglob("*")) if p.is_file()}


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS).set_index(KEYS)["value"]


SCORING_KNOBS = [
    # (setting, value, rows that must change: (method, shots) pairs; every other row must not)
    ("patchclip_language", "mean", {("clipfusion", 0), ("clipfusion", 1), ("patchclip", 0), ("patchclip", 1)}),
    ("patchclip_language", "windows", {("clipfusion", 0), ("clipfusion", 1), ("patchclip", 0), ("patchclip", 1)}),
    ("patchclip_visual", "mean", {("clipfusion", 1), ("patchclip", 1)}),
    ("patchclip_visual", "windows", {("clipfusion", 1), ("patchclip", 1)}),
    # smoothing "shared" (the default since issue 20): sigma reaches WinCLIP's maps too
    ("sigma", 0.0, {(m, k) for m in ("clipfusion", "patchclip", "mapdiff", "winclip") for k in (0, 1)}),
    ("smoothing", "own", {("winclip", 0), ("winclip", 1)}),  # WinCLIP unsmoothed, as published
    ("normalization", "image", {(m, k) for m in ("clipfusion", "patchclip", "mapdiff") for k in (0, 1)}),
    ("normalization", "inductive", {(m, k) for m in ("clipfusion", "patchclip", "mapdiff") for k in (0, 1)}),
]  # image_score: tests/experiments/test_comparison_rule.py (on the scores: 4 test images tie metrics)


@pytest.mark.parametrize("name, value, changed", SCORING_KNOBS, ids=[f"{n}={v}" for n, v, _ in SCORING_KNOBS])
def test_a_scoring_knob_changes_only_its_methods_and_never_the_store(base: EvaluationResult, spec: RunSpec,
                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     name: str, value: object,
                                                                     changed: set[tuple[str, int]]) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a scoring setting loaded a model")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    before = _store_files(base.store)
    other = evaluate(replace(spec, scoring=replace(spec.scoring, **{name: value})), tmp_path, store_dir=base.store.path,
                     progress=False)
    assert _store_files(base.store) == before  # nothing rewritten, nothing added
    a, b = _rows(base.frame), _rows(other.frame)
    assert list(a.index) == list(b.index)
    for (method, shots), group in a.groupby(level=["method", "shots"]):
        same = np.allclose(group.values, b.loc[group.index].values, rtol=0, atol=0)
        if (method, shots) in changed:
            assert not same, f"{name}={value!r} left {method} {shots}-shot unchanged"
        else:
            assert same, f"{name}={value!r} changed {method} {shots}-shot"


def test_the_score_rule_changes_only_image_scores(base: EvaluationResult, spec: RunSpec, tmp_path: Path) -> None:
    other = evaluate(replace(spec, scoring=replace(spec.scoring, score_rule="mean")), tmp_path,
                     store_dir=base.store.path, progress=False)
    a, b = _rows(base.frame), _rows(other.frame)
    pixel = a.index.get_level_values("metric").str.startswith("pixel")
    assert np.array_equal(a[pixel].values, b[pixel].values)  # maps untouched
    methods = a.index.get_level_values("method")
    assert not np.array_equal(a[~pixel & (methods == "mapdiff")].values, b[~pixel & (methods == "mapdiff")].values)
    # every method's image scores move: tests/experiments/test_comparison_rule.py (metrics of 4 images tie)


def test_patchclip_map_forms_are_what_they_say(base: EvaluationResult, spec: RunSpec) -> None:
    """The stored language map is the mean of [patch map, scale-2 map, scale-3 map]: 'patches' is the
    patch map alone, 'windows' the mean of the scale maps; the same holds for the k-shot visual map."""
    from cfviz.evaluation import clip_branch
    from cfviz.evaluation.scoring import clip_embeddings

    store, ext = base.store, base.spec.extraction
    ids = store.ids[:3]
    forms = {f: clip_branch.stored_language(store, ids, f)[0] for f in ("mean", "patches", "windows")}
    n = len(ext.scales)
    np.testing.assert_allclose(forms["mean"], (forms["patches"] + n * forms["windows"]) / (n + 1), atol=1e-6)
    patch = store[ids[0]].load(["clip/patch"])["clip/patch"].float().numpy()
    np.testing.assert_array_equal(forms["patches"][0], patch.reshape(forms["patches"][0].shape))
    emb, ref = clip_embeddings(store, ids), clip_embeddings(store, [store.ids[-1]])
    vis = {f: clip_branch.visual(emb, ref, ext, f)[0] for f in ("mean", "patches", "windows")}
    np.testing.assert_allclose(vis["mean"], (vis["patches"] + n * vis["windows"]) / (n + 1), atol=1e-6)
    assert not np.allclose(vis["patches"], vis["windows"])


def test_winclip_prompt_averaging_is_an_extraction_setting_that_changes_only_winclip(
        base: EvaluationResult, spec: RunSpec, tmp_path: Path) -> None:
    raw = replace(spec, extraction=replace(spec.extraction, winclip_prompts="raw"))
    assert "winclip_prompts" not in spec.extraction.to_json()  # older stores keep matching
    assert raw.extraction.to_json()["winclip_prompts"] == "raw"
    with pytest.raises(StoreMismatchError):
        evaluate(raw, tmp_path / "same", store_dir=base.store.path, progress=False)
    other = evaluate(raw, tmp_path / "new", progress=False)
    a, b = _rows(base.frame), _rows(other.frame)
    methods = a.index.get_level_values("method")
    assert np.array_equal(a[methods != "winclip"].values, b[methods != "winclip"].values)
    assert not np.array_equal(a[methods == "winclip"].values, b[methods == "winclip"].values)
    image_id = base.store.ids[0]
    old, new = base.store[image_id].load(), other.store[image_id].load()
    assert old.keys() == new.keys()
    differ = sorted(k for k in old if not np.array_equal(old[k].float().numpy(), new[k].float().numpy()))
    assert differ and all(k.startswith("winclip/") for k in differ), differ


DIFFUSION_KNOBS = [("language_tokens", "object", ("attn/",)), ("language_tokens", "all", ("attn/",)),
                   ("mask", "full", ("attn/", "feat/"))]


@pytest.mark.parametrize("name, value, prefixes", DIFFUSION_KNOBS, ids=[f"{n}={v}" for n, v, _ in DIFFUSION_KNOBS])
def test_a_diffusion_extraction_knob_changes_only_the_diffusion_outputs(
        base: EvaluationResult, spec: RunSpec, tmp_path: Path, name: str, value: str,
        prefixes: tuple[str, ...]) -> None:
    other = evaluate(replace(spec, extraction=replace(spec.extraction, **{name: value})), tmp_path, progress=False)
    image_id = base.store.ids[0]
    old, new = base.store[image_id], other.store[image_id]
    if name == "language_tokens":
        recorded = set(new.cache(blocks=[]).tokens.labels)
        assert "brick" in recorded and ("damage" in recorded) == (value == "all")
        assert set(old.cache(blocks=[]).tokens.labels) == {"damage"}
    a_t, b_t = old.load(), new.load()
    assert a_t.keys() == b_t.keys()
    differ = sorted(k for k in a_t if a_t[k].shape != b_t[k].shape
                    or not np.array_equal(a_t[k].float().numpy(), b_t[k].float().numpy()))
    assert differ and all(k.startswith(prefixes) for k in differ), differ
    a, b = _rows(base.frame), _rows(other.frame)
    methods = a.index.get_level_values("method")
    clip_only = methods.isin(["patchclip", "winclip"])
    assert np.array_equal(a[clip_only].values, b[clip_only].values)
    assert not np.array_equal(a[methods == "mapdiff"].values, b[methods == "mapdiff"].values)


def test_design_choices_defaults_are_the_runs_rows(base: EvaluationResult, spec: RunSpec) -> None:
    from cfviz.analysis.ablations import design_choices

    t = design_choices(base.store, open_dataset(spec), shots=(0, 1), seeds=(0,), scoring=spec.scoring,
                       metrics=("image_auroc", "pixel_auroc"))
    assert set(t.knob) == {"patchclip_language", "patchclip_visual", "normalization", "score_rule", "sigma",
                           "language_layers", "image_score", "smoothing"}  # and visual_block with several blocks
    assert not (t[t.knob == "patchclip_visual"].shots == 0).any()
    ran = _rows(base.frame)
    for _, row in t[t.default].iterrows():  # a knob at its default is the run itself
        assert row.value == pytest.approx(ran.loc[(row.category, row.method, row.shots, row.seed, row.metric)])


def open_dataset(spec: RunSpec):  # the run's data set (the same reader the runner opens)
    from cfviz.evaluation.runner import open_run_dataset

    return open_run_dataset(spec)


def test_the_cli_sets_each_knob() -> None:
    import argparse

    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    s = spec_from_args(p.parse_args(["--patchclip-language", "patches", "--patchclip-visual", "windows",
                                     "--winclip-prompts", "raw", "--language-tokens", "object",
                                     "--inpaint-mask", "full"]))
    assert (s.scoring.patchclip_language, s.scoring.patchclip_visual, s.extraction.winclip_prompts,
            s.extraction.language_tokens, s.extraction.mask) == ("patches", "windows", "raw", "object", "full")
    for path in ("scoring.patchclip_language", "scoring.patchclip_visual", "extraction.winclip_prompts",
                 "extraction.language_tokens", "extraction.mask"):
        assert path in FLAGS
    from cfviz.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        ScoringConfig(patchclip_language="patch")
    assert err.value.field == "scoring.patchclip_language" and "patches" in str(err.value)
