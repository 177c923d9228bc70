"""AA-CLIP as its authors run it (issue 13): 518 px with interpolated position embeddings on
ViT-L-14-336, the released code's descriptive class names, and the paper's checkpoint epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cfviz.clip.aaclip import AAClip, AAClipConfig
from cfviz.clip.aaclip.checkpoint import PAPER_EPOCH, CheckpointError, checkpoint_name, load_aaclip
from cfviz.clip.aaclip.names import DESCRIPTIVE_NAMES, prompt_name
from cfviz.errors import ConfigError
from cfviz.models import tiny_clip


# ---------------------------------------------------------------------------------------- image size
def test_the_default_size_is_518_on_the_papers_backbone() -> None:
    b = tiny_clip(seed=0, like="ViT-L-14-336")
    m = AAClip(b, seed=0)
    assert m.config.image_size == 518 and m.image_size == 518 and m.grid == (37, 37)
    assert m.base_bundle is b and b.image_size == 336 and b.grid_size == (24, 24)  # the CLIP branch's model
    x = torch.randn(2, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    res = m.predict(x, "bottle")
    assert res.anomaly_map.shape == (2, 37, 37) and torch.isfinite(res.anomaly_map).all()
    with pytest.raises(ValueError, match="takes"):  # 336-px images no longer fit
        m.predict(torch.zeros(1, 3, 336, 336), "bottle")


def test_other_models_keep_their_size_and_the_size_is_an_option() -> None:
    b = tiny_clip(seed=0)
    assert AAClip(b).image_size == 240  # the released code ran 518 only on ViT-L/14 (518 is no multiple of 16)
    assert AAClip(b, AAClipConfig(image_size=320)).grid == (20, 20)
    l14 = tiny_clip(seed=0, like="ViT-L-14-336")
    assert AAClip(l14, AAClipConfig(image_size="model")).image_size == 336
    with pytest.raises(ConfigError, match="multiple of its 14 px patches"):
        AAClip(l14, AAClipConfig(image_size=500))


def test_the_size_travels_with_the_checkpoint_and_can_be_overridden(tmp_path: Path) -> None:
    b = tiny_clip(seed=0, like="ViT-L-14-336")
    path = AAClip(b, seed=2).save(tmp_path / "a.safetensors")
    assert load_aaclip(path, b).image_size == 518
    assert load_aaclip(path, b, image_size=336).image_size == 336
    # a checkpoint written before the setting existed ran at the model's own size with plain names
    old = AAClipConfig().resolve(b).to_json()
    del old["image_size"], old["class_names"]
    cfg = AAClipConfig.from_json(old)
    assert (cfg.resolve(b).image_size, cfg.class_names) == (336, "plain")


def test_aaclip_images_are_resized_from_the_originals() -> None:
    import numpy as np

    from cfviz.data.transforms import clip_batch, clip_transform
    from cfviz.evaluation.aaclip_branch import arrays

    m = AAClip(tiny_clip(seed=0, like="ViT-L-14-336"), seed=0)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (600, 600, 3), dtype=np.uint8) for _ in range(2)]
    out = arrays(m, clip_batch(pictures, 336), ["pill", "pill"], images=pictures)
    direct = m.predict(torch.stack([clip_transform(p, 518) for p in pictures]), "pill")
    assert out[0]["aaclip/map/anomaly"].shape == (37, 37)
    assert torch.allclose(out[1]["aaclip/map/anomaly"], direct.anomaly_map[1])


# ---------------------------------------------------------------------------------------- class names
def test_descriptive_names_are_the_released_ones() -> None:
    # the two examples methods.md quotes from the released dataset/constants.py
    assert prompt_name("pill") == "oval white pill with small red speckles and the letters 'FF' engraved"
    assert prompt_name("pcb1") == "dual ultrasonic distance sensor pcb module"
    from cfviz.data.mvtec import MVTEC_CATEGORIES
    from cfviz.data.visa import VISA_CATEGORIES

    from cfviz.clip.aaclip.names import BTAD_NAMES, MEDICAL_NAMES, MPDD_NAMES

    assert set(MVTEC_CATEGORIES) | set(VISA_CATEGORIES) | set(MPDD_NAMES) | set(BTAD_NAMES) | set(MEDICAL_NAMES) \
        == set(DESCRIPTIVE_NAMES)
    assert len(DESCRIPTIVE_NAMES) == 15 + 12 + 6 + 3 + 7  # no category name in two released tables
    assert prompt_name("metal nut", "plain") == prompt_name("metal_nut", "plain") == "metal nut"
    assert prompt_name("brick") == "brick"  # unknown categories keep their name


def test_the_names_flag_changes_the_anchors_and_only_for_known_categories() -> None:
    b = tiny_clip(seed=0)
    desc, plain = AAClip(b, seed=0), AAClip(b, AAClipConfig(class_names="plain"), seed=0)
    assert desc.config.class_names == "descriptive"  # the released code's default
    with torch.no_grad():
        assert not torch.allclose(desc.anchors("metal_nut"), plain.anchors("metal_nut"))
        assert torch.equal(desc.anchors("brick"), plain.anchors("brick"))
    with pytest.raises(ConfigError, match="class_names"):
        AAClip(b, AAClipConfig(class_names="fancy"))


# ---------------------------------------------------------------------------------------- checkpoint epoch
@pytest.fixture
def training_folder(tmp_path: Path) -> Path:
    """A training folder with stage-2 epochs 1, 2 and 15 (copies of one checkpoint) and the final file."""
    b = tiny_clip(seed=0)
    d = tmp_path / "aa"
    d.mkdir()
    src = AAClip(b, seed=0).save(d / "aaclip.safetensors")
    for stage, epoch in ((1, 1), (2, 1), (2, 2), (2, PAPER_EPOCH)):
        shutil.copy(src, d / checkpoint_name(stage, epoch))
    return d


def test_a_training_folder_gives_the_papers_epoch(training_folder: Path) -> None:
    from cfviz.evaluation.aaclip_branch import resolve_checkpoint

    assert PAPER_EPOCH == 15
    assert Path(resolve_checkpoint(str(training_folder))[0]).name == "stage2_epoch_015.safetensors"
    assert Path(resolve_checkpoint(str(training_folder), 2)[0]).name == "stage2_epoch_002.safetensors"
    with pytest.raises(CheckpointError, match=r"no stage-2 checkpoint of epoch 7 \(epochs 1..15 there\)"):
        resolve_checkpoint(str(training_folder), 7)
    with pytest.raises(CheckpointError, match="not a folder"):
        resolve_checkpoint(str(training_folder / "aaclip.safetensors"), 2)
    (training_folder / checkpoint_name(2, PAPER_EPOCH)).unlink()  # a shorter run: its final adapters
    assert Path(resolve_checkpoint(str(training_folder))[0]).name == "aaclip.safetensors"


def test_the_cli_takes_the_epoch(training_folder: Path) -> None:
    import argparse

    from cfviz.commands.evaluate import add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    spec = spec_from_args(p.parse_args(["--method", "aaclip", "--aaclip", str(training_folder), "--aaclip-epoch", "2",
                                        "--aaclip-size", "320", "--aaclip-names", "plain"]))
    assert Path(spec.extraction.aaclip).name == "stage2_epoch_002.safetensors"
    assert (spec.extraction.aaclip_size, spec.extraction.aaclip_names) == (320, "plain")
    with pytest.raises(CheckpointError, match="--aaclip-epoch"):
        spec_from_args(p.parse_args(["--aaclip-epoch", "2"]))


# ---------------------------------------------------------------------------------------- the README command
@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=1, n_test_good=1,
                             n_per_defect=1, categories=["brick"], defect_kinds=["stain"])


def test_the_readme_commands_run_aaclip_at_518_px(small_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`cfviz train-aaclip ... --clip-arch ViT-L-14-336` (518 px by default) then `cfviz evaluate --aaclip DIR`
    on the tiny CLIP of ViT-L-14-336's geometry: AA-CLIP maps on the 37x37 grid, the CLIP branch's on 24x24."""
    from cfviz.capture.store import CaptureStore
    from cfviz.cli import main

    arch = ["--clip", "tiny", "--clip-arch", "ViT-L-14-336"]
    assert main(["train-aaclip", "--dataset", "folder", "--root", str(small_root), "--shots", "1",
                 "--stage1-epochs", "1", "--stage2-epochs", "1", "--max-batches", "1", *arch,
                 "--out", str(tmp_path / "aa"), "--no-progress"]) == 0
    meta = json.loads(load_aaclip(tmp_path / "aa" / "aaclip.safetensors", tiny_clip(like="ViT-L-14-336"))
                      .metadata["config"])
    assert (meta["image_size"], meta["class_names"]) == (518, "descriptive")
    code = main(["evaluate", "--dataset", "folder", "--root", str(small_root), *arch,
                 "--aaclip", str(tmp_path / "aa"), "--method", "aaclip", "clipfusion",
                 "--clip-branch", "aaclip", "--diffusion-size", "64", "--timesteps", "100", "--min-resolution", "1",
                 "--eval-size", "32", "--out", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    store = CaptureStore(tmp_path / "run" / "store")
    entry = store[store.ids[0]]
    t = entry.load(["aaclip/map/anomaly", "clip/map/language"])
    assert tuple(t["aaclip/map/anomaly"].shape) == (37, 37) and tuple(t["clip/map/language"].shape) == (24, 24)


def test_the_aaclip_study_compares_a_518_px_aaclip_with_the_336_px_clip(textures) -> None:
    """Notebook 07 on the paper's backbone: plain CLIP at 336 px, AA-CLIP at 518 px, side by side."""
    from cfviz.clip.aaclip.compare import Study, compare_maps, metrics_table

    b = tiny_clip(seed=0, like="ViT-L-14-336")
    grass = textures.filter(category="grass")
    s = Study(bundle=b, before=AAClip(b, seed=0), after=AAClip(b, seed=1), report=None, eval_set=grass,
              eval_categories=["grass"], note=None)
    c = compare_maps(s)  # every grass image: normal and anomalous ones
    assert c.maps["plain CLIP"].shape[1:] == (24, 24) and c.maps["AA-CLIP after"].shape[1:] == (37, 37)
    assert metrics_table(c, eval_size=32).notna().all().all()


def test_extraction_settings_reach_the_model_and_the_store_identity(tmp_path: Path) -> None:
    from cfviz.evaluation import aaclip_branch
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec
    from cfviz.evaluation.runner import store_identity

    b = tiny_clip(seed=0, like="ViT-L-14-336")
    path, digest = aaclip_branch.resolve_checkpoint(str(AAClip(b, seed=0).save(tmp_path / "a.safetensors")))
    default = aaclip_branch.load(b, ExtractionConfig(aaclip=path, aaclip_sha256=digest))
    assert (default.image_size, default.config.class_names) == (518, "descriptive")  # the checkpoint's
    other = aaclip_branch.load(b, ExtractionConfig(aaclip=path, aaclip_sha256=digest, aaclip_size=336,
                                                   aaclip_names="plain"))
    assert (other.image_size, other.config.class_names) == (336, "plain")

    def identity(**kw: object) -> dict:
        return store_identity(RunSpec(methods=("aaclip",), models=ModelChoice(clip_arch="ViT-L-14-336"),
                                      extraction=ExtractionConfig(aaclip=path, aaclip_sha256=digest, **kw)))["extraction"]

    assert "aaclip_size" not in identity() and "aaclip_names" not in identity()  # older stores still match
    assert identity(aaclip_size=336)["aaclip_size"] == 336 and identity(aaclip_names="plain")["aaclip_names"] == "plain"
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(aaclip_names="fancy")
    assert err.value.field == "extraction.aaclip_names"


def test_an_aaclip_size_off_the_patch_grid_is_refused_before_anything_loads(
        training_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """520 px on 16-px patches: one line naming --aaclip-size with the two nearest sizes; no model is built."""
    from cfviz import models
    from cfviz.cli import main

    monkeypatch.setattr(models, "tiny_clip", lambda *a, **k: pytest.fail("a model was built"))
    root = tmp_path / "tex"
    code = main(["evaluate", "--dataset", "textures", "--root", str(root), "--method", "aaclip", "--clip-branch",
                 "aaclip", "--aaclip", str(training_folder), "--aaclip-size", "520", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--aaclip-size" in err and "512 or 528" in err and "Traceback" not in err
    assert not root.exists()
