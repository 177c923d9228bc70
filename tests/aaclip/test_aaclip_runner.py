"""AA-CLIP in the evaluation runner: extraction stores its maps, scoring reads them, the CLI wires it."""

from __future__ import annotations

import numpy as np
import pytest


def test_runner_stores_and_scores_aaclip(textures, tmp_path, monkeypatch):
    import importlib
    from dataclasses import replace

    from cfviz.clip.aaclip import AAClip
    from cfviz.evaluation import aaclip_branch
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig
    from cfviz.models import tiny_clip

    ckpt = AAClip(tiny_clip(seed=0), seed=0).save(tmp_path / "aaclip.safetensors")
    path, digest = aaclip_branch.resolve_checkpoint(str(ckpt))
    brick = textures.filter(category="brick")
    spec = RunSpec(dataset="textures", methods=("aaclip", "patchclip"), categories=("brick",),
                   models=ModelChoice(clip="tiny", diffusion="tiny"),
                   extraction=ExtractionConfig(timesteps=(500,), aaclip=path, aaclip_sha256=digest),
                   scoring=ScoringConfig(clip_branch="aaclip", eval_size=32))
    ev = importlib.import_module("cfviz.evaluation.runner")
    monkeypatch.setattr(ev, "open_run_dataset", lambda s: brick)  # the small session set, not data/textures
    result = ev.evaluate(spec, tmp_path / "run", progress=False)
    entry = result.store[brick.records[0].image_id]
    assert {"aaclip/map/anomaly", "aaclip/image", "aaclip/map/level_4"} <= set(entry.names)
    assert set(result.frame["method"]) == {"aaclip", "patchclip"}
    assert np.isfinite(result.frame["value"]).all()
    # with clip_branch="aaclip", PatchCLIP's language branch is AA-CLIP's map: the two rankings agree
    from cfviz.evaluation.scoring import predict

    # both unsmoothed (smoothing "shared", the default since issue 20, smooths AA-CLIP's map too)
    a = predict(result.store, brick, "brick", "aaclip", scoring=replace(spec.scoring, sigma=0),
                extraction=spec.extraction)
    p = predict(result.store, brick, "brick", "patchclip", scoring=ScoringConfig(clip_branch="aaclip", sigma=0,
                eval_size=32), extraction=spec.extraction)
    assert np.allclose(np.argsort(a.maps.reshape(-1)), np.argsort(p.maps.reshape(-1))) or \
        np.corrcoef(a.maps.reshape(-1), p.maps.reshape(-1))[0, 1] > 0.99


def test_evaluate_cli_needs_a_checkpoint_for_aaclip(tmp_path):
    import argparse

    from cfviz.clip.aaclip.checkpoint import CheckpointError
    from cfviz.commands.evaluate import add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    with pytest.raises(CheckpointError, match="need --aaclip"):
        spec_from_args(p.parse_args(["--method", "aaclip"]))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        spec_from_args(p.parse_args(["--method", "aaclip", "--aaclip", str(tmp_path / "none.safetensors")]))
