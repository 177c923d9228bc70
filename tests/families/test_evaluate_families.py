"""`cfviz evaluate --diffusion` on every denoiser family (issue 14), offline with the tiny pipelines.

Each family runs end to end (extraction into a store, zero- and one-shot MapDiff and CLIPFusion);
the store records the family and is refused to another; a pipeline saved to a folder (or sitting
in the hub cache) is loaded with the class its model_index.json names; settings that a family
cannot run are one ConfigError before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cfviz.capture.store import CaptureStore, StoreMismatchError
from cfviz.errors import ConfigError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.config import ModelChoice
from cfviz.evaluation.runner import EvaluationResult

#: tiny name -> (family recorded in the store, a text-attention layer it must have stored)
FAMILIES = {
    "tiny-sd1": (None, "up_blocks.1.attentions.0.transformer_blocks.0.attn2"),
    "tiny-sdxl": ("sdxl", "up_blocks.0.attentions.0.transformer_blocks.0.attn2"),
    "tiny-sdxl-inpaint": ("sdxl", "up_blocks.0.attentions.0.transformer_blocks.0.attn2"),
    "tiny-sd3": ("sd3", "transformer_blocks.0.attn"),
    "tiny-sd35": ("sd3", "transformer_blocks.0.attn"),  # its image-only attn2 is not recorded
    "tiny-flux": ("flux", "single_transformer_blocks.0.attn"),
    "tiny-flux-fill": ("flux", "transformer_blocks.0.attn"),
    "tiny-pixart": ("pixart", "transformer_blocks.0.attn2"),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=1, n_test_good=1,
                             n_per_defect=1, categories=["grass"], defect_kinds=["stain"])


def _spec(root: Path, diffusion: str, shots: tuple[int, ...] = (0, 1), **extraction) -> RunSpec:
    return RunSpec(dataset="folder", root=str(root), methods=("mapdiff", "clipfusion"), shots=shots, seeds=(0,),
                   models=ModelChoice(diffusion=diffusion),
                   extraction=ExtractionConfig(diffusion_size=64, timesteps=(261,), **extraction),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32), batch_size=2)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_evaluates_end_to_end(name: str, root: Path, tmp_path: Path) -> None:
    family, layer = FAMILIES[name]
    result = evaluate(_spec(root, name), tmp_path, progress=False)
    assert isinstance(result, EvaluationResult) and result.random_weights
    assert result.extraction.new == 3  # two test images and one k-shot reference
    values = result.frame.set_index(["method", "shots", "metric"])["value"]
    for method in ("mapdiff", "clipfusion"):
        for shots in (0, 1):  # one-shot reads the stored feature maps (M_diff_V) of every family
            assert np.isfinite(values[(method, shots, "pixel_auroc")])
    config = result.store.config
    assert config["models"]["diffusion"] == name and config["models"].get("family") == family
    entry = result.store[result.store.ids[0]]
    assert layer in entry.layers
    assert not any(n.endswith("attn2") for n in entry.layers) if family in ("sd3", "flux") else True
    assert entry.timesteps == [261.0]  # flow-matching families too: sigma 0.261, labelled on the 0..1000 scale
    (block,) = entry.blocks
    feature = entry[f"feat/{block}"]  # (step, channels, h, w): transformer tokens laid on their grid
    assert feature.ndim == 4 and feature.shape[0] == 1 and feature.shape[-1] in (4, 8)


def test_transformer_families_get_their_own_layers(root: Path) -> None:
    from cfviz.evaluation.families import resolve_family_settings

    for name, attention, block in (("tiny-sd3", "*.attn", "transformer_blocks.1"),
                                   ("tiny-flux", "*.attn", "transformer_blocks.0"),
                                   ("tiny-pixart", "*attn2", "transformer_blocks.1")):
        spec = resolve_family_settings(_spec(root, name))
        assert spec.extraction.attention == attention and spec.extraction.features == (block,)
        assert spec.scoring.visual_block == block
    sd = _spec(root, "tiny-sdxl")
    assert resolve_family_settings(sd) is sd  # UNet families keep the defaults
    given = _spec(root, "tiny-sd3", shots=(0,), features=("transformer_blocks.0",))
    assert resolve_family_settings(given).extraction.features == ("transformer_blocks.0",)  # a choice is kept


def test_a_store_refuses_another_family(root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    evaluate(_spec(root, "tiny-sdxl"), tmp_path / "a", store_dir=store, progress=False)
    with pytest.raises(StoreMismatchError) as err:
        evaluate(_spec(root, "tiny-sd3"), tmp_path / "b", store_dir=store, progress=False)
    assert 'models.family: "sdxl" -> "sd3"' in str(err.value)
    assert len(list((store / "entries").iterdir())) > 0 and not (tmp_path / "b" / "results.csv").exists()
    # the same family again: accepted, nothing recomputed
    again = evaluate(_spec(root, "tiny-sdxl"), tmp_path / "c", store_dir=store, progress=False)
    assert again.extraction.new == 0
    assert CaptureStore(store).config["models"]["family"] == "sdxl"


def test_a_saved_pipeline_folder_of_any_family(root: Path, tmp_path: Path) -> None:
    from cfviz.models import model_info
    from cfviz.models.diffusion import load_diffusion_pipeline
    from cfviz.models.families import tiny_family_pipeline

    folder = tmp_path / "my-sd3"
    tiny_family_pipeline("sd3", seed=0).save_pretrained(folder)
    pipe = load_diffusion_pipeline(folder)
    info = model_info(pipe)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline" and info["family"] == "sd3"
    assert info["source"] == "local" and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    result = evaluate(_spec(root, str(folder)), tmp_path / "out", progress=False)
    config = result.store.config
    assert config["models"]["family"] == "sd3" and "sha256" in config["weights"]["diffusion"]
    assert config["extraction"]["attention"] == "*.attn"
    # the same weights as the tiny name: the same maps
    tiny = evaluate(_spec(root, "tiny-sd3"), tmp_path / "tiny", progress=False)
    keys = ["method", "shots", "metric"]
    a, b = result.frame.sort_values(keys), tiny.frame.sort_values(keys)
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy())


def test_a_hub_id_of_another_family_from_the_cache(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from cfviz.models.families import tiny_family_pipeline

    saved = tmp_path / "saved"
    tiny_family_pipeline("pixart", seed=0).save_pretrained(saved)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-pixart"
    shutil.copytree(saved, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = evaluate(_spec(root, "acme/tiny-pixart"), tmp_path / "out", progress=False)
    assert result.store.config["models"]["family"] == "pixart"
    assert result.store.header["weights_resolved"]["diffusion"]["commit"] == commit


# ------------------------------------------------------------------ refused before anything loads


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No model may load and no data set may open; offline, in an empty folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("something loaded although the input was invalid")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    monkeypatch.setattr("cfviz.evaluation.plan.open_run_dataset", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _unsupported_folder(tmp: Path) -> Path:
    folder = tmp / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline",
                                                          "unet": ["diffusers", "UNet2DConditionModel"]}))
    return folder


CASES = [
    ("unknown-tiny", ["--diffusion", "tiny-sdxxl"], "--diffusion", ["tiny-sdxl", "tiny-sd3", "not a tiny pipeline"]),
    ("unsupported-folder", ["--diffusion", _unsupported_folder], "--diffusion",
     ["KandinskyV22Pipeline", "cannot evaluate", "FluxFillPipeline"]),
    ("flux-size", ["--diffusion", "tiny-flux", "--diffusion-size", "72"], "--diffusion-size",
     ["multiple of 16", "tiny-flux", "64 or 80"]),
    ("sd3-coarse", ["--diffusion", "tiny-sd3", "--diffusion-size", "128", "--min-resolution", "16"],
     "--diffusion-size", ["8x8", "--min-resolution", "256", "tiny-sd3"]),
    ("mask-plain", ["--diffusion", "tiny-sdxl", "--inpaint-mask", "full"], "--inpaint-mask",
     ["tiny-sdxl", "inpainting"]),
    ("tokens-t5", ["--diffusion", "tiny-pixart", "--tokens", "all"], "--tokens", ["T5", "tiny-pixart"]),
    ("unet-features", ["--diffusion", "tiny-sd3", "--features", "up_blocks.0", "up_blocks.1"], "--features",
     ["UNet blocks", "transformer_blocks.0", "tiny-sd3"]),
]


@pytest.mark.parametrize("args, flag, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_family_input_is_one_sentence(args, flag, fragments, guarded: Path, capsys: pytest.CaptureFixture[str]):
    from cfviz.cli import main

    argv = ["evaluate", "--root", str(guarded / "tex"), "--out", str(guarded / "out"), "--no-progress",
            "--method", "mapdiff", "--diffusion-size", "64", "--min-resolution", "1"]
    argv += [str(a(guarded)) if callable(a) else a for a in args]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("cfviz evaluate: error: ") and flag in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (guarded / "out").exists()


def test_python_api_names_models_diffusion(guarded: Path) -> None:
    from cfviz.evaluation.preflight import preflight

    with pytest.raises(ConfigError) as err:
        preflight(RunSpec(root=str(guarded / "tex"), models=ModelChoice(diffusion="tiny-fluxx")))
    assert err.value.field == "models.diffusion"
    assert "not a tiny pipeline; did you mean 'tiny-flux'" in str(err.value)


def test_loader_refuses_an_unsupported_folder(tmp_path: Path) -> None:
    from cfviz.errors import ModelUnavailableError
    from cfviz.models.diffusion import load_diffusion_pipeline

    with pytest.raises(ModelUnavailableError, match="KandinskyV22Pipeline"):
        load_diffusion_pipeline(_unsupported_folder(tmp_path))


def test_every_category_prompt_fits_the_tiny_t5() -> None:
    """The tiny T5 (16 tokens) knows every category's words: no prompt pushes 'damage' past its limit."""
    from cfviz.data.mvtec import MVTEC_CATEGORIES
    from cfviz.data.textures import TEXTURE_CATEGORIES
    from cfviz.data.visa import VISA_CATEGORIES
    from cfviz.diffusion.forward import build_prompt
    from cfviz.evaluation.config import PROMPT_TEMPLATE
    from cfviz.clip.object_names import object_name
    from cfviz.models.families import tiny_t5_tokenizer

    tok = tiny_t5_tokenizer()
    for category in (*TEXTURE_CATEGORIES, *MVTEC_CATEGORIES, *VISA_CATEGORIES):
        mode = "folder"  # readable names (e.g. "chewing gum") overflow the tiny T5's 16 tokens: not yet covered
        ids = tok(build_prompt(object_name(category, mode), "damage", PROMPT_TEMPLATE)).input_ids
        pieces = tok.convert_ids_to_tokens(ids)
        assert len(ids) <= tok.model_max_length and "▁damage" in pieces, (category, mode, pieces)


@pytest.mark.parametrize("name", ["cfviz.evaluation.families", "cfviz.analysis.family_maps"])
def test_doctests_of_the_evaluation_modules(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
