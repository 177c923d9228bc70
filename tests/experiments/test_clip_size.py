"""The CLIP input size comes from the model (issue 13): 240 for ViT-B-16-plus-240 as in the paper,
the architecture's own size for any other, refused before models load when a given size differs,
and recorded in the store's identity. Two architectures run end to end on tiny models, and the
README's AA-CLIP command runs on a tiny CLIP with ViT-L-14-336's geometry (336 px, 14 px patches).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfviz.errors import ConfigError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.config import ModelChoice, clip_input_size, resolve_clip_size


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=1, n_test_good=1,
                             n_per_defect=1, categories=["brick"], defect_kinds=["stain"])


def _spec(root: Path, arch: str, **extraction: object) -> RunSpec:
    return RunSpec(dataset="folder", root=str(root), methods=("patchclip", "winclip"), shots=(0, 1),
                   models=ModelChoice(clip="tiny", clip_arch=arch),
                   extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64, **extraction),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)


def test_the_default_size_is_the_models_own() -> None:
    assert ExtractionConfig().clip_size is None
    assert clip_input_size(ModelChoice()) == 240  # ViT-B-16-plus-240, the paper's 240 px
    assert clip_input_size(ModelChoice(clip="tiny", clip_arch="ViT-B-32")) == 224
    assert clip_input_size(ModelChoice(clip="tiny", clip_arch="ViT-L-14-336")) == 336
    assert clip_input_size(ModelChoice(clip="random", clip_arch="ViT-B-32")) == 224
    assert resolve_clip_size(RunSpec()).extraction.clip_size == 240
    assert resolve_clip_size(RunSpec(models=ModelChoice(clip_arch="ViT-L-14-336"))).extraction.clip_size == 336
    from cfviz.evaluation.runner import store_identity

    # the store records the resolved size: unset and the model's own size are the same store
    assert store_identity(RunSpec())["extraction"]["clip_size"] == 240
    assert store_identity(RunSpec()) == store_identity(RunSpec(extraction=ExtractionConfig(clip_size=240)))


def test_a_tiny_clip_takes_the_geometry_of_its_arch() -> None:
    from cfviz.models import tiny_clip

    b = tiny_clip(seed=0, like="ViT-L-14-336")
    assert (b.image_size, b.patch_size, b.grid_size) == (336, 14, (24, 24))
    assert tiny_clip(seed=0, like="ViT-B-32").grid_size == (7, 7)
    assert tiny_clip(seed=0, like="ViT-B-16-plus-240").name == tiny_clip(seed=0).name == "cfviz-tiny-clip"


def test_a_size_that_is_not_the_models_is_refused_before_models_load(small_root: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the size was checked")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    with pytest.raises(ConfigError, match="takes 224 px") as err:
        evaluate(_spec(small_root, "ViT-B-32", clip_size=240), tmp_path / "run", progress=False)
    assert err.value.field == "extraction.clip_size"
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(clip_size=0)
    assert err.value.field == "extraction.clip_size"


def test_the_cli_names_the_flag(small_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import main

    code = main(["evaluate", "--dataset", "folder", "--root", str(small_root), "--clip-arch", "ViT-B-32",
                 "--clip-size", "240", "--out", str(tmp_path / "run")])
    assert code == 1
    err = capsys.readouterr().err
    assert "--clip-size" in err and "224" in err


@pytest.mark.parametrize("arch, size, grid", [("ViT-B-16-plus-240", 240, 15), ("ViT-B-32", 224, 7)])
def test_two_architectures_run_and_the_store_records_the_size(small_root: Path, tmp_path: Path, arch: str,
                                                              size: int, grid: int) -> None:
    result = evaluate(_spec(small_root, arch), tmp_path / "run", progress=False)
    identity = json.loads((result.store.path / "store.json").read_text())["config"]
    assert identity["extraction"]["clip_size"] == size
    entry = result.store[result.store.ids[0]]
    assert tuple(entry.load(["clip/map/language"])["clip/map/language"].shape) == (grid, grid)
    assert set(result.frame["method"]) == {"patchclip", "winclip"}
    assert result.frame["value"].notna().all()
    # an explicit size equal to the model's is the same store (the resolved size is what is recorded)
    again = evaluate(_spec(small_root, arch, clip_size=size), tmp_path / "run2", store_dir=result.store.path,
                     progress=False)
    assert again.extraction.new == 0


def test_the_readme_aaclip_command_runs_at_336_px(small_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`cfviz train-aaclip ... --clip-arch ViT-L-14-336` then `cfviz evaluate ... --aaclip ... --method aaclip
    clipfusion --clip-branch aaclip`, with the tiny CLIP of ViT-L-14-336's geometry and the tiny inpainting model."""
    from cfviz.cli import main

    arch = ["--clip", "tiny", "--clip-arch", "ViT-L-14-336"]
    assert main(["train-aaclip", "--dataset", "folder", "--root", str(small_root), "--shots", "1",
                 "--stage1-epochs", "1", "--stage2-epochs", "1", "--max-batches", "1", *arch,
                 "--out", str(tmp_path / "aa"), "--no-progress"]) == 0
    code = main(["evaluate", "--dataset", "folder", "--root", str(small_root), *arch,
                 "--aaclip", str(tmp_path / "aa" / "aaclip.safetensors"), "--method", "aaclip", "clipfusion",
                 "--clip-branch", "aaclip", "--diffusion-size", "64", "--timesteps", "100", "--min-resolution", "1",
                 "--eval-size", "32", "--out", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert '"clip_size": 336' in json.dumps(run)
