"""``extraction.batch_timesteps`` / ``--batch-timesteps``: the batched MapDiff forward as a run setting.

It reaches the extraction from a RunSpec and the CLI, enters the store's identity (a store of
one form refuses the other), is refused before anything loads where it cannot run, and gives the
per-timestep run's numbers to float tolerance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from cfviz.errors import ConfigError, StoreMismatchError
from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec
from cfviz.evaluation.runner import evaluate, store_identity


def _parser() -> argparse.ArgumentParser:
    from cfviz.commands.evaluate import add_run_arguments

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p


@pytest.mark.parametrize("argv, value", [([], False), (["--batch-timesteps"], True),
                                         (["--batch-timesteps", "on"], True), (["--batch-timesteps", "6"], 6)])
def test_the_cli_sets_it(argv: list[str], value: object) -> None:
    from cfviz.commands.evaluate import spec_from_args

    assert spec_from_args(_parser().parse_args(argv)).extraction.batch_timesteps == value


@pytest.mark.parametrize("argv, says", [(["--batch-timesteps", "0"], "number of UNet rows"),
                                        (["--batch-timesteps", "many"], "number of UNet rows"),
                                        (["--diffusion", "tiny-sd3", "--batch-timesteps"], "SD 1.x/2.x inpainting")])
def test_bad_values_are_one_line_before_anything_runs(argv: list[str], says: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import main

    root = tmp_path / "tex"
    assert main(["evaluate", "--root", str(root), "--out", str(tmp_path / "out"), "--no-progress", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert "--batch-timesteps" in err and says in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not root.exists()  # the textures were not even generated


def test_identity_only_when_set() -> None:
    assert "batch_timesteps" not in store_identity(RunSpec())["extraction"]  # older stores still match
    assert store_identity(RunSpec(extraction=ExtractionConfig(batch_timesteps=4)))["extraction"]["batch_timesteps"] == 4
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(batch_timesteps=-1)
    assert err.value.field == "extraction.batch_timesteps"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=2, image_size=64, n_train=1, n_test_good=2,
                             n_per_defect=1, categories=["brick"], defect_kinds=["stain"])


def _spec(root: Path, batched: bool | int) -> RunSpec:
    from cfviz.evaluation.config import ScoringConfig

    return RunSpec(dataset="folder", root=str(root), methods=("mapdiff", "clipfusion"), shots=(0, 1),
                   models=ModelChoice(clip="tiny", diffusion="tiny"), batch_size=2,
                   extraction=ExtractionConfig(timesteps=(100, 261, 400), diffusion_size=64, batch_timesteps=batched),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32))


def test_a_batched_run_scores_like_the_per_timestep_run_and_stores_stay_apart(small_root: Path,
                                                                              tmp_path: Path) -> None:
    plain = evaluate(_spec(small_root, False), tmp_path / "plain", progress=False)
    batched = evaluate(_spec(small_root, True), tmp_path / "batched", progress=False)
    entry = batched.store[batched.store.ids[0]]
    assert entry.meta["capture"]["timesteps_batched"] is True
    assert entry.timesteps == plain.store[plain.store.ids[0]].timesteps
    a = plain.frame.sort_values(["method", "shots", "seed", "metric"])["value"].to_numpy()
    b = batched.frame.sort_values(["method", "shots", "seed", "metric"])["value"].to_numpy()
    assert np.allclose(a, b, atol=1e-3)
    with pytest.raises(StoreMismatchError, match="batch_timesteps"):  # one store, one form
        evaluate(_spec(small_root, True), tmp_path / "mixed", store_dir=plain.store.path, progress=False)
