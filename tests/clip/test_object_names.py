"""Issue 20: readable object names in both prompts (``--object-names readable``, the default), the
folder names kept as ``folder``; the choice is part of the store's identity."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from cfviz.clip.object_names import MVTEC_READABLE, READABLE_NAMES, VISA_READABLE, object_name
from cfviz.errors import ConfigError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.config import ModelChoice


def test_visa_folder_names_become_words_and_the_folder_form_stays() -> None:
    assert object_name("pcb1") == "printed circuit board"
    assert object_name("chewinggum") == "chewing gum" and object_name("macaroni2") == "macaroni"
    assert object_name("pipe_fryum") == "pipe fryum" and object_name("cashew") == "cashew nut"
    assert object_name("pcb1", "folder") == "pcb1" and object_name("metal_nut", "folder") == "metal nut"
    assert object_name("brick") == object_name("brick", "folder") == "brick"  # unknown: its folder name
    with pytest.raises(ValueError, match="readable, folder"):
        object_name("pcb1", "pretty")


def test_the_tables_cover_both_data_sets_and_follow_aa_clips_class_names() -> None:
    from cfviz.clip.aaclip.names import DESCRIPTIVE_NAMES, MVTEC_NAMES, VISA_NAMES

    assert set(MVTEC_READABLE) == set(MVTEC_NAMES) and set(VISA_READABLE) == set(VISA_NAMES)
    assert set(READABLE_NAMES) == set(MVTEC_NAMES) | set(VISA_NAMES)  # AA-CLIP also names BTAD, MPDD, medical sets
    for category, name in MVTEC_READABLE.items():  # MVTec-AD's folder names are words already
        assert name == category.replace("_", " ")
    ours = {"pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"}  # documented as ours in cfviz.clip.object_names
    for category, name in VISA_READABLE.items():
        if category not in ours:  # the object noun of AA-CLIP's released description
            assert name in DESCRIPTIVE_NAMES[category], (category, name)
    assert all(not any(ch.isdigit() for ch in n) for n in READABLE_NAMES.values())


def test_the_setting_reaches_both_prompts_the_tokens_and_the_store_identity() -> None:
    from cfviz.evaluation import clip_branch
    from cfviz.evaluation.runner import store_identity
    from cfviz.models import tiny_clip

    e = ExtractionConfig()
    assert e.object_names == "readable"
    assert ExtractionConfig(language_tokens="object").tokens_for("chewinggum") == ["chewing", "gum"]
    patchclip, winclip = clip_branch._models(tiny_clip(seed=0), "pcb1", ExtractionConfig(clip_windows=True))
    assert patchclip.class_name == winclip.class_name == "printed circuit board"
    folder, _ = clip_branch._models(tiny_clip(seed=0), "pcb1", ExtractionConfig(object_names="folder"))
    assert folder.class_name == "pcb1"
    assert store_identity(RunSpec())["extraction"]["object_names"] == "readable"
    # folder: left out, so stores written before the setting (folder names) still match it
    assert "object_names" not in store_identity(RunSpec(extraction=ExtractionConfig(object_names="folder")))["extraction"]
    with pytest.raises(ConfigError) as err:
        ExtractionConfig(object_names="pretty")
    assert err.value.field == "extraction.object_names"


def test_the_cli_flag() -> None:
    from cfviz.commands.evaluate import FLAGS, add_run_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    assert spec_from_args(p.parse_args([])).extraction.object_names == "readable"
    assert spec_from_args(p.parse_args(["--object-names", "folder"])).extraction.object_names == "folder"
    assert FLAGS["extraction.object_names"] == "--object-names"


def test_a_visa_category_gets_its_readable_name_in_the_mapdiff_prompt(tmp_path: Path) -> None:
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path / "tex", seed=5, image_size=64, n_train=1, n_test_good=1, n_per_defect=1,
                             categories=["brick"], defect_kinds=["stain"])
    shutil.move(str(root / "brick"), str(root / "chewinggum"))  # a folder named like VisA's

    def run(mode: str) -> str:
        spec = RunSpec(dataset="folder", root=str(root), methods=("clipfusion",), shots=(0,),
                       models=ModelChoice(clip="tiny", diffusion="tiny"),
                       extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64, object_names=mode),
                       scoring=ScoringConfig(eval_size=32, language_min_resolution=1), batch_size=2)
        result = evaluate(spec, tmp_path / mode, progress=False)
        return result.store[result.store.ids[0]].metadata["prompt"]

    assert run("readable") == "a close-up cropped png photo of a chewing gum with damage"
    assert run("folder") == "a close-up cropped png photo of a chewinggum with damage"
