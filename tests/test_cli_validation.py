"""Every bad input ends in one clear sentence, found before any data is generated or model loads.

The CLI cases run ``cfviz.cli.main`` in-process with model loading and data-set opening
replaced by functions that fail the test, so each case also proves that the error came first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cfviz.cli import build_parser, cli_message, main
from cfviz.errors import CfvizError, ConfigError, ModelUnavailableError
from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No model may load and no data set may open or be generated; work in an empty folder, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    def refuse(what: str):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} although the input was invalid")
        return fail

    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse("a model was loaded"))
    monkeypatch.setattr("cfviz.evaluation.plan.open_run_dataset", refuse("the data set was opened"))
    monkeypatch.setattr("cfviz.data.textures.generate_textures", refuse("textures were generated"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _junk(tmp: Path) -> Path:
    path = tmp / "junk.safetensors"
    path.write_bytes(bytes(range(256)) * 16)
    return path


def _a_file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("x")
    return path


def _not_a_pipeline(tmp: Path) -> Path:
    path = tmp / "sd-folder"
    (path / "unet").mkdir(parents=True)
    return path


# (id, arguments (a callable of the temp folder gives a path), flag the message must name, other fragments)
CASES = [
    ("shots", ["--shots", "-1"], "--shots", [">= 0"]),
    ("alpha-seg", ["--alpha-seg", "2"], "--alpha-seg", ["between 0 and 1"]),
    ("alpha-cls", ["--alpha-cls", "-0.5"], "--alpha-cls", ["between 0 and 1"]),
    ("sigma", ["--sigma", "-3"], "--sigma", [">= 0"]),
    ("batch-size", ["--batch-size", "0"], "--batch-size", [">= 1"]),
    ("seeds", ["--seeds", "-1"], "--seeds", [">= 0"]),
    ("eval-size", ["--eval-size", "0"], "--eval-size", [">= 8"]),
    ("topk", ["--score-rule", "topk_mean", "--topk", "0"], "--topk", ["above 0"]),
    ("state", ["--state", ""], "--state", ["damage"]),
    ("state-stop-words", ["--state", "and the"], "--state", ["no word left"]),
    ("timesteps", ["--timesteps", "1000"], "--timesteps", ["[0, 1000)"]),
    ("diffusion-size-multiple", ["--diffusion-size", "100"], "--diffusion-size", ["multiple of 8", "96 or 104"]),
    ("diffusion-size-coarse", ["--diffusion-size", "64"], "--diffusion-size", ["--min-resolution", "128", "8x8"]),
    ("min-resolution", ["--diffusion-size", "128", "--min-resolution", "32"], "--min-resolution", ["256"]),
    ("device-cuda", ["--device", "cuda"], "--device", ["no CUDA device", "cpu"]),
    ("device-name", ["--device", "gpu"], "--device", ["not a torch device"]),
    ("clip-size", ["--clip-size", "224"], "--clip-size", ["240"]),
    ("junk-checkpoint", ["--clip", "pretrained", "--clip-pretrained", _junk], "--clip-pretrained",
     ["junk.safetensors", "not a safetensors file"]),
    ("missing-checkpoint", ["--clip", "pretrained", "--clip-pretrained", lambda t: t / "none.safetensors"],
     "--clip-pretrained", ["does not exist"]),
    ("unknown-tag", ["--clip", "pretrained", "--clip-pretrained", "laion400m_e3"], "--clip-pretrained",
     ["laion400m_e32", "laion400m_e31"]),
    ("unknown-arch", ["--clip", "random", "--clip-arch", "ViT-B-16-plu"], "--clip-arch", ["'ViT-B-16-plus-240'"]),
    ("resnet-arch", ["--clip", "random", "--clip-arch", "RN50"], "--clip-arch", ["ResNet", "ViT"]),
    ("out-proc", ["--out", "/proc/cfviz-x"], "--out", ["cannot be written"]),
    ("out-file", ["--out", _a_file], "--out", ["a_file is a file"]),
    ("out-under-file", ["--out", lambda t: _a_file(t) / "sub"], "--out", ["which is a file"]),
    ("store-file", ["--store", _a_file], "--store", ["is a file"]),
    ("textures-root", ["--root", "/proc/cfviz-textures"], "--root", ["cannot be written", "generated"]),
    ("data-root-missing", ["--dataset", "mvtec", "--root", lambda t: t / "nowhere"], "--root", ["does not exist"]),
    ("data-root-needed", ["--dataset", "visa"], "--root", ["'visa'"]),
    ("missing-masks-textures", ["--missing-masks", "warn"], "--missing-masks", ["--dataset 'textures'"]),
    ("limit-per-type", ["--limit-per-type", "0"], "--limit-per-type", [">= 1"]),
    ("diffusion-folder", ["--diffusion", _not_a_pipeline], "--diffusion", ["model_index.json"]),
    ("diffusion-not-cached", ["--diffusion", "acme/not-cached-inpainting"], "--diffusion",
     ["HF_HUB_OFFLINE", "cache"]),
    ("diffusion-bad-id", ["--diffusion", "acme/"], "--diffusion", ["hub id"]),
    ("aaclip-branch", ["--clip-branch", "aaclip"], "--aaclip", ["train-aaclip"]),
]


@pytest.mark.parametrize("args, flag, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_before_anything_loads(args, flag, fragments, guarded: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    if args[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    argv = ["evaluate", "--out", str(guarded / "out"), "--no-progress"]
    if "--dataset" not in args:  # a texture folder of its own (the default one may be in use)
        argv += ["--root", str(guarded / "tex")]
    argv += [str(a(guarded)) if callable(a) else a for a in args]  # later flags win
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 1, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cfviz evaluate: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert flag in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (guarded / "out").exists(), "a failed check left an output folder behind"


@pytest.mark.parametrize("args", [["--shots", "x"], ["--normalization", "reference"], ["--missing-masks", "maybe"],
                                  ["--shard", "3/2"], ["--dtype", "float64"]])
def test_argparse_errors_exit_2_with_one_usage_error(args, guarded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cfviz evaluate: error: ")


@pytest.mark.parametrize("make, field", [
    (lambda: RunSpec(shots=(-1,)), "shots"),
    (lambda: RunSpec(seeds=(0, -1)), "seeds"),
    (lambda: RunSpec(batch_size=0), "batch_size"),
    (lambda: RunSpec(methods=("patchcore",)), "methods"),
    (lambda: RunSpec(dataset="imagenet"), "dataset"),
    (lambda: ScoringConfig(alpha_seg=2.0), "scoring.alpha_seg"),
    (lambda: ScoringConfig(alpha_cls=-0.5), "scoring.alpha_cls"),
    (lambda: ScoringConfig(sigma=-3), "scoring.sigma"),
    (lambda: ScoringConfig(sigma=float("nan")), "scoring.sigma"),
    (lambda: ScoringConfig(eval_size=0), "scoring.eval_size"),
    (lambda: ScoringConfig(topk=1.5), "scoring.topk"),
    (lambda: ScoringConfig(normalization="zscore"), "scoring.normalization"),
    (lambda: ScoringConfig(score_rule="median"), "scoring.score_rule"),
    (lambda: ScoringConfig(clip_branch="winclip"), "scoring.clip_branch"),
    (lambda: ExtractionConfig(state=""), "extraction.state"),
    (lambda: ExtractionConfig(timesteps=()), "extraction.timesteps"),
    (lambda: ExtractionConfig(timesteps=(-1,)), "extraction.timesteps"),
    (lambda: ExtractionConfig(timesteps=(100, 100)), "extraction.timesteps"),
    (lambda: ExtractionConfig(diffusion_size=0), "extraction.diffusion_size"),
    (lambda: ModelChoice(clip="huge"), "models.clip"),
    (lambda: ModelChoice(dtype="float64"), "models.dtype"),
    (lambda: ModelChoice(clip="pretrained", clip_pretrained=None), "models.clip_pretrained"),
    (lambda: RunSpec(extraction=ExtractionConfig(diffusion_size=64)), "extraction.diffusion_size"),
    (lambda: RunSpec(shots=(1,), scoring=ScoringConfig(visual_timestep=999)), "scoring.visual_timestep"),
    (lambda: RunSpec(shots=(1,), scoring=ScoringConfig(visual_block="up_blocks.2")), "scoring.visual_block"),
    (lambda: RunSpec(scoring=ScoringConfig(normalization="reference")), "scoring.normalization"),
    (lambda: RunSpec(methods=("aaclip",)), "extraction.aaclip"),
])
def test_python_api_names_the_field(make, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field
    assert field in str(err.value)  # Python users read the field's name, not a CLI flag
    assert "--" not in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, CfvizError)


def test_valid_settings_pass() -> None:
    spec = RunSpec(dataset="folder", root="x", methods=("winclip",), shots=(0, 1), seeds=(0, 3),
                   extraction=ExtractionConfig(diffusion_size=64, timesteps=(100, 400)), batch_size=1)
    assert spec.validate() is spec
    # winclip alone does not read cross-attention, so a coarse diffusion size is fine
    RunSpec(methods=("mapdiff",), extraction=ExtractionConfig(diffusion_size=64),
            scoring=ScoringConfig(language_min_resolution=8))


def test_mutated_spec_is_checked_again_by_evaluate(guarded: Path) -> None:
    from cfviz.experiments import evaluate

    spec = RunSpec(root=str(guarded / "tex"))
    spec.batch_size = 0  # RunSpec is mutable: evaluate() validates again
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(spec, guarded / "out", progress=False)


def test_python_api_checks_paths_and_devices(guarded: Path) -> None:
    from cfviz.evaluation.preflight import preflight

    with pytest.raises(ConfigError) as err:
        preflight(RunSpec(root=str(guarded / "tex")), out_dir=_a_file(guarded))
    assert err.value.field == "out_dir" and "out_dir" in str(err.value)
    with pytest.raises(ConfigError) as err:
        preflight(RunSpec(root=str(guarded / "tex"), dataset_options={"missing_masks": "warn"}))
    assert err.value.field == "dataset_options.missing_masks"


@pytest.mark.parametrize("args, flag", [(["--device", "gpu"], "--device"), (["--out", "/proc/cfviz-x"], "--out"),
                                        (["--clip", "random", "--clip-arch", "ViT-B-16-plu"], "--clip-arch")])
def test_train_aaclip_checks_before_loading(args, flag, guarded: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("data or a model was loaded although the input was invalid")

    monkeypatch.setattr("cfviz.commands.train_aaclip._load_clip", refuse)
    monkeypatch.setattr("cfviz.data.open_dataset", refuse)
    code = main(["train-aaclip", "--root", str(guarded / "tex"), "--out", str(guarded / "run"), *args])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err


def test_os_errors_on_user_paths_are_one_sentence(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/results.csv")

    monkeypatch.setattr("cfviz.commands.evaluate.run", denied)
    assert main(["evaluate"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("cfviz evaluate: error: /data/results.csv: permission denied; check the path and its "
                           "permissions")


def test_cli_message_translates_python_idioms() -> None:
    from cfviz.errors import DatasetError

    msg = cli_message(DatasetError("no mask for x.png. Fix: set mask_suffix= if masks are named differently, or "
                                   "pass missing_masks='warn' to keep such images."), {})
    assert "--mask-suffix" in msg and "--missing-masks warn" in msg and "missing_masks=" not in msg


def test_reader_flags_reach_dataset_options() -> None:
    from cfviz.commands.evaluate import spec_from_args

    args = build_parser().parse_args(["evaluate", "--dataset", "folder", "--root", "x", "--missing-masks", "warn",
                                      "--mask-suffix", "_gt", "--limit-per-type", "3", "--min-resolution", "8"])
    spec = spec_from_args(args)
    assert spec.dataset_options == {"missing_masks": "warn", "mask_suffix": "_gt", "limit_per_type": 3}
    assert spec.scoring.language_min_resolution == 8
    plain = spec_from_args(build_parser().parse_args(["evaluate"]))
    assert plain.dataset_options == {}  # not given: the reader's own defaults apply


def test_junk_and_truncated_checkpoints_name_the_file(tmp_path: Path) -> None:
    from cfviz.models import load_clip, save_clip_checkpoint, tiny_clip

    junk = _junk(tmp_path)
    with pytest.raises(ModelUnavailableError, match="junk.safetensors"):
        load_clip("cfviz-tiny-clip", pretrained=junk)
    good = save_clip_checkpoint(tiny_clip(seed=0), tmp_path / "tiny.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header intact, tensors cut off
    with pytest.raises(ModelUnavailableError, match="cut.safetensors"):
        load_clip("cfviz-tiny-clip", pretrained=cut)
    torch_junk = tmp_path / "junk.pt"
    torch_junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelUnavailableError, match="junk.pt"):
        load_clip("cfviz-tiny-clip", pretrained=torch_junk)


def test_unknown_clip_names_suggest_the_closest() -> None:
    from cfviz.models import load_clip, random_clip

    with pytest.raises(ConfigError, match="ViT-B-16-plus-240"):
        random_clip("ViT-B-16-plus-24")
    with pytest.raises(ConfigError, match="did you mean 'laion400m_e32'"):
        load_clip(pretrained="laion400m_e33")


def test_damaged_diffusion_folder_names_the_folder(tmp_path: Path) -> None:
    from cfviz.models import load_inpaint_pipeline, tiny_inpaint_pipeline

    folder = tmp_path / "sd"
    tiny_inpaint_pipeline(seed=0).save_pretrained(folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelUnavailableError) as err:
        load_inpaint_pipeline(folder)
    assert str(folder) in str(err.value)


# ---------------------------------------------------------------------------------------------- help


def test_parser_builds_without_heavy_imports() -> None:
    code = ("import sys; from cfviz.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'open_clip', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = ("import sys\nfrom cfviz.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines() == [f"cfviz {__import__('cfviz').__version__}", "False"]


def _subparsers(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["demo", "evaluate", "run-notebooks", "train-aaclip"])
def test_every_flag_has_help_a_default_and_examples(command: str) -> None:
    sub = _subparsers(build_parser())[command]
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        shown = sub.formatter_class(prog="x")._get_help_string(action)
        if action.nargs == 0:  # a switch (store_true/false): its internal default is no user's choice
            assert "(default: True)" not in shown and "(default: False)" not in shown, action.option_strings
        elif action.default is not None and action.default is not False:
            assert "default" in shown, action.option_strings
    examples = text.split("examples:", 1)[1]
    assert sum(line.strip().startswith("cfviz ") for line in examples.splitlines()) >= 2


def test_switches_show_no_internal_default() -> None:
    """`--no-smoke` showed "(default: True)" (its store_false default), saying the opposite of the truth."""
    text = " ".join(_subparsers(build_parser())["run-notebooks"].format_help().split())
    assert "--no-smoke use real weights and data (see -p)" in text and "(default: True)" not in text


def test_demo_help_quotes_the_measured_time() -> None:
    """Issue 21: the help said "about a minute on a laptop CPU"; it quotes benchmarks/results/demo.md."""
    import re

    text = " ".join(_subparsers(build_parser())["demo"].format_help().split())
    assert "about a minute" not in text
    said = float(re.search(r"first run takes about (\d+) s of CPU time", text).group(1))
    results = (Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "demo.md").read_text()
    measured = float(re.search(r"\| first run[^|]*\| [\d.]+ \| ([\d.]+) \|", results).group(1))  # the latest run
    assert abs(said - measured) <= 0.25 * measured, (said, measured)


def test_demo_help_shows_only_what_the_demo_uses() -> None:
    text = _subparsers(build_parser())["demo"].format_help()
    for flag in ("--out", "--figures", "--device", "--clip"):
        assert flag in text
    for flag in ("--alpha-seg", "--shard", "--method", "--timesteps", "--dataset", "--missing-masks"):
        assert flag not in text


def test_run_notebooks_outside_a_checkout_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run-notebooks", "01"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "notebooks") in err and "--notebooks" in err


# ---------------------------------------------------------------------------------------------- a real run


def test_cli_reports_what_it_did_with_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path / "tex", seed=1, image_size=64, n_train=1, n_test_good=1, n_per_defect=1,
                             categories=["brick"], defect_kinds=["stain"])
    argv = ["evaluate", "--dataset", "folder", "--root", str(root), "--method", "winclip", "--timesteps", "100",
            "--diffusion-size", "64", "--eval-size", "32", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert "2 new, 0 already stored, 2 in all" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 new, 2 already stored, 2 in all" in capsys.readouterr().out
