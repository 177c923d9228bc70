"""Issue 20, "defaults that follow the paper": PatchCLIP's patch form by default, CLIP's window
embeddings only when a method needs them (auto), the window forms kept as named alternatives."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.config import ModelChoice, resolve_clip_windows


def test_patchclip_defaults_to_the_patch_forms() -> None:
    s = ScoringConfig()
    assert (s.patchclip_language, s.patchclip_visual) == ("patches", "patches")
    assert ExtractionConfig().clip_windows is None  # auto


@pytest.mark.parametrize("spec, windows", [
    (RunSpec(), False),  # the default CLIPFusion run: one CLIP forward pass per image
    (RunSpec(methods=("clipfusion", "patchclip", "mapdiff"), shots=(0, 1)), False),
    (RunSpec(methods=("clipfusion", "winclip")), True),  # WinCLIP needs windows
    (RunSpec(scoring=ScoringConfig(patchclip_language="mean")), True),
    (RunSpec(methods=("patchclip",), scoring=ScoringConfig(patchclip_language="windows")), True),
    (RunSpec(shots=(0, 1), scoring=ScoringConfig(patchclip_visual="mean")), True),
    (RunSpec(shots=(0,), scoring=ScoringConfig(patchclip_visual="mean")), False),  # no visual map in zero-shot
    (RunSpec(methods=("mapdiff",), scoring=ScoringConfig(patchclip_language="mean")), False),  # no PatchCLIP
    (RunSpec(extraction=ExtractionConfig(clip_windows=True)), True),  # a given value is kept
])
def test_auto_windows_are_on_exactly_when_something_needs_them(spec: RunSpec, windows: bool) -> None:
    resolved = resolve_clip_windows(spec)
    assert resolved.extraction.clip_windows is windows
    assert bool(spec.window_needs()) == windows or spec.extraction.clip_windows is not None
    assert resolve_clip_windows(resolved) is resolved  # resolving twice changes nothing


def test_the_store_identity_records_the_resolved_value() -> None:
    from cfviz.evaluation.runner import store_identity

    assert store_identity(RunSpec())["extraction"]["clip_windows"] is False
    # on: left out, as in every store written before the setting existed (those had windows)
    assert "clip_windows" not in store_identity(RunSpec(methods=("clipfusion", "winclip")))["extraction"]
    assert "clip_windows" not in ExtractionConfig().to_json()


def test_cli_default_is_auto_and_the_forms_stay_available() -> None:
    from cfviz.commands.evaluate import add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    spec = spec_from_args(p.parse_args([]))
    assert spec.extraction.clip_windows is None and spec.scoring.patchclip_language == "patches"
    assert spec_from_args(p.parse_args(["--clip-windows", "on"])).extraction.clip_windows is True
    alt = spec_from_args(p.parse_args(["--patchclip-language", "mean", "--patchclip-visual", "windows"]))
    assert (alt.scoring.patchclip_language, alt.scoring.patchclip_visual) == ("mean", "windows")


def test_a_default_run_computes_no_windows_and_one_with_winclip_does(tmp_path: Path) -> None:
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path / "tex", seed=5, image_size=64, n_train=2, n_test_good=1, n_per_defect=1,
                             categories=["brick"], defect_kinds=["stain"])

    def spec(methods: tuple[str, ...]) -> RunSpec:
        return RunSpec(dataset="folder", root=str(root), methods=methods, shots=(0, 1),
                       models=ModelChoice(clip="tiny", diffusion="tiny"),
                       extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64),
                       scoring=ScoringConfig(eval_size=32, language_min_resolution=1), batch_size=2)

    cheap = evaluate(spec(("clipfusion",)), tmp_path / "cheap", progress=False)
    names = set(cheap.store[cheap.store.ids[0]].names)
    assert not any("window" in n for n in names) and not any(n.startswith("winclip/") for n in names)
    assert cheap.spec.extraction.clip_windows is False
    full = evaluate(spec(("clipfusion", "winclip")), tmp_path / "full", progress=False)
    assert any(n.startswith("clip_emb/window/") for n in full.store[full.store.ids[0]].names)
    # CLIPFusion's rows do not depend on whether the store also holds windows (patch forms read neither)
    a = cheap.frame.sort_values(["shots", "seed", "metric"]).reset_index(drop=True)
    b = full.frame[full.frame.method == "clipfusion"].sort_values(["shots", "seed", "metric"]).reset_index(drop=True)
    assert (a["value"] - b["value"]).abs().max() < 1e-4
    # a later run that needs no windows reuses a store that holds them (auto), instead of being refused
    again = evaluate(spec(("clipfusion",)), tmp_path / "again", store_dir=full.store.path, progress=False)
    assert again.spec.extraction.clip_windows is True and again.extraction.new == 0
    c = again.frame.sort_values(["shots", "seed", "metric"]).reset_index(drop=True)
    assert c["value"].equals(b["value"])
