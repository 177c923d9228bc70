"""Cheap extraction (issue 13): with extraction.clip_windows off, no window embeddings are computed; the
store says so in its identity, and runs that need windows are refused naming the setting."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from cfviz.errors import ConfigError, StoreMismatchError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.config import ModelChoice

PATCHES = ScoringConfig(patchclip_language="patches", patchclip_visual="patches", eval_size=32,
                        language_min_resolution=1)


def test_embed_skips_the_windows() -> None:
    from cfviz.evaluation import clip_branch
    from cfviz.models import tiny_clip

    b = tiny_clip(seed=0)
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    full = clip_branch.embed(b, x, ExtractionConfig())
    cheap = clip_branch.embed(b, x, ExtractionConfig(clip_windows=False))
    assert {"clip_emb/window/2", "clip_emb/window/3"} <= set(full)
    assert not any("window" in k for k in cheap)
    for k in cheap:  # the rest is the same computation
        assert torch.allclose(cheap[k], full[k], atol=1e-5), k
    # PatchCLIP's patch map is the same; WinCLIP is not run
    e0 = ExtractionConfig(clip_windows=False)
    pc0, win0 = clip_branch.zero_shot_scores(b, {k: v[:1] for k, v in cheap.items()}, "screw", e0)
    pc1, win1 = clip_branch.zero_shot_scores(b, {k: v[:1] for k, v in full.items()}, "screw", ExtractionConfig())
    assert win0 == {} and win1
    assert torch.allclose(pc0.patch, pc1.patch, atol=1e-5) and torch.allclose(pc0.image, pc1.image, atol=1e-5)
    assert not pc0.windows


@pytest.mark.parametrize("methods, shots, scoring, named", [
    (("winclip",), (0,), PATCHES, "methods 'winclip'"),
    (("patchclip",), (0,), ScoringConfig(patchclip_language="mean"), "patchclip_language 'mean'"),
    (("clipfusion",), (0, 1), ScoringConfig(patchclip_visual="mean"), "patchclip_visual 'mean'"),
])
def test_runs_that_need_windows_are_refused_naming_the_setting(methods, shots, scoring, named) -> None:
    with pytest.raises(ConfigError, match=named) as err:
        RunSpec(methods=methods, shots=shots, extraction=ExtractionConfig(clip_windows=False), scoring=scoring)
    assert err.value.field == "extraction.clip_windows"
    # what does not need windows is accepted: mapdiff alone, PatchCLIP's patch forms, AA-CLIP's language branch
    RunSpec(methods=("mapdiff", "patchclip"), shots=(0, 1), extraction=ExtractionConfig(clip_windows=False),
            scoring=PATCHES)


def test_the_cli_names_the_flag() -> None:
    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    with pytest.raises(ConfigError) as err:
        spec_from_args(p.parse_args(["--clip-windows", "off", "--method", "winclip"]))
    assert FLAGS[err.value.field] == "--clip-windows"
    spec = spec_from_args(p.parse_args(["--clip-windows", "off", "--method", "patchclip", "--patchclip-language",
                                        "patches"]))
    assert spec.extraction.clip_windows is False


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=5, image_size=64, n_train=2, n_test_good=1,
                             n_per_defect=1, categories=["brick"], defect_kinds=["stain"])


def _spec(root: Path, windows: bool, methods: tuple[str, ...] = ("patchclip",)) -> RunSpec:
    return RunSpec(dataset="folder", root=str(root), methods=methods, shots=(0, 1),
                   models=ModelChoice(clip="tiny", diffusion="tiny"),
                   extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64, clip_windows=windows),
                   scoring=PATCHES, batch_size=2)


def test_a_windowless_store_scores_patchclip_alike_and_refuses_a_run_that_needs_windows(small_root: Path,
                                                                                         tmp_path: Path) -> None:
    from cfviz.evaluation.runner import store_identity

    cheap = evaluate(_spec(small_root, False), tmp_path / "cheap", progress=False)
    full = evaluate(_spec(small_root, True), tmp_path / "full", progress=False)
    assert store_identity(_spec(small_root, False))["extraction"]["clip_windows"] is False
    assert "clip_windows" not in store_identity(_spec(small_root, True))["extraction"]  # older stores still match
    names = set(cheap.store[cheap.store.ids[0]].names)
    assert not any("window" in n for n in names) and not any(n.startswith("winclip/") for n in names)
    assert any(n.startswith("clip_emb/window/") for n in full.store[full.store.ids[0]].names)
    # PatchCLIP's patch forms give the same rows from either store
    a = cheap.frame.sort_values(["shots", "seed", "metric"]).reset_index(drop=True)
    b = full.frame.sort_values(["shots", "seed", "metric"]).reset_index(drop=True)
    assert np.allclose(a["value"].to_numpy(), b["value"].to_numpy(), atol=1e-4)
    # notebook 08's sweep on the windowless store: PatchCLIP's window forms are left out, the rest runs
    from cfviz.analysis.ablations import design_choices

    from cfviz.evaluation.runner import open_run_dataset

    table = design_choices(cheap.store, open_run_dataset(_spec(small_root, False)), methods=("patchclip",), shots=(0, 1), scoring=PATCHES)
    forms = set(table[table.knob.isin(["patchclip_language", "patchclip_visual"])].setting)
    assert forms == {"patches"} and {"normalization", "sigma"} <= set(table.knob)
    # a later run that needs windows on the windowless store: refused, naming the setting
    with pytest.raises(StoreMismatchError, match="clip_windows"):
        evaluate(_spec(small_root, True, ("patchclip", "winclip")), tmp_path / "again", store_dir=cheap.store.path,
                 progress=False)
