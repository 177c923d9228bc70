"""Every error a CLI user can cause is written in CLI words (issue 19): an invariant, not a list.

The sweep sets each setting the ``cfviz evaluate`` command exposes (every path of its ``FLAGS``)
to bad values of several kinds, runs everything that happens before a model loads (the
configuration's own checks, :func:`~cfviz.evaluation.preflight.preflight`, opening the data set
and :func:`~cfviz.evaluation.datacheck.check_run_data`), and writes each error as the CLI does
(:func:`cfviz.cli.cli_message`). No message may spell a setting the Python way: no
``name=value``, no setting path (``models.clip_pretrained``), no parameter name (``missing_masks``),
no unreplaced ``{...}`` mark.

Before (cbe98a2) the mapping was a list of five phrases beside the flags table, and messages such
as ``pass a local checkpoint file as pretrained=...``, ``point model=... at a folder`` or
``leave the category out with categories=[...]`` reached CLI users as written.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from cfviz.cli import PARAMETER_SETTINGS, cli_message, cli_names
from cfviz.commands.evaluate import FLAGS
from cfviz.errors import CfvizError, DatasetError, ModelUnavailableError
from cfviz.evaluation.config import RunSpec

_KINDS: dict[type, list[Any]] = {
    bool: ["maybe", 2],
    int: [-7, 0, 10**9, "x", 2.5],
    float: [-3.0, 7.0, float("nan"), "x"],
    str: ["", "no-such-value", "tiny-nope", "owner/not-cached", "/no/such/folder"],
    tuple: [(), ("no-such-value",), (-1,), (10**6,)],
    type(None): ["no-such-value", "-1", "/no/such/file.safetensors"],  # unset settings: what a flag gives
    dict: [{"no_such_option": 1}, {"missing_masks": "bogus"}, {"limit_per_type": 0}, {"stray_files": "bogus"}],
}


def _bad_values(default: Any) -> list[Any]:
    for kind, values in _KINDS.items():
        if isinstance(default, kind) and not (kind is int and isinstance(default, bool)):
            return values
    return _KINDS[type(None)]


def _with(spec: RunSpec, path: str, value: Any) -> RunSpec:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(spec, **{head: value})
    if head == "dataset_options":
        return dataclasses.replace(spec, dataset_options={rest: value})
    return dataclasses.replace(spec, **{head: dataclasses.replace(getattr(spec, head), **{rest: value})})


def _default(spec: RunSpec, path: str) -> Any:
    obj: Any = spec
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def _before_models(spec: RunSpec, tmp: Path) -> None:
    """Everything :func:`cfviz.experiments.evaluate` does before it loads a model: its plan."""
    from cfviz.evaluation.plan import plan_run

    plan_run(spec, spec.out_dir if getattr(spec, "out_dir", None) else tmp / "out", tmp / "store")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=1, image_size=32, n_train=1, n_test_good=1,
                             n_per_defect=1, categories=["grass"], defect_kinds=["stain"])


_PYTHON_KEYWORD = re.compile(r"(?<![\w./-])[A-Za-z_][\w.]*=")


def _python_spellings(message: str) -> list[str]:
    """Python spellings of settings left in a CLI message."""
    found = _PYTHON_KEYWORD.findall(message)
    names = set(FLAGS) | {p.rsplit(".", 1)[-1] for p in FLAGS if "_" in p.rsplit(".", 1)[-1]} | set(PARAMETER_SETTINGS)
    for name in names:
        if ("_" in name or "." in name) and re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", message):
            found.append(name)
    if re.search(r"\{[a-z_]+(\.[a-z_]+)?\}", message):
        found.append("{mark}")
    return found


def test_errors_of_every_bad_setting_speak_cli(data_root: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: hub ids and tags are not there
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice

    base = RunSpec(dataset="folder", root=str(data_root))
    # real weights asked for: the CLIP name, tag and file checks run too (offline, nothing cached)
    pretrained = dataclasses.replace(base, models=ModelChoice(clip="pretrained"),
                                     extraction=ExtractionConfig(clip_size=None))
    leaks, errors = [], 0
    for path in FLAGS:
        if path in ("out_dir", "store_dir", "shard", "distributed", "recompute_changed"):  # evaluate() arguments, not RunSpec fields
            continue
        for value, spec in [(v, b) for b in (base, pretrained) if b is base or path.startswith("models.")
                            for v in _bad_values(_default(base, path))]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _before_models(_with(spec, path, value), tmp_path)
            except CfvizError as exc:
                errors += 1
                message = cli_message(exc, FLAGS)
                bad = _python_spellings(message)
                if bad:
                    leaks.append(f"{path}={value!r}: {bad} in {message!r}")
            except (TypeError, ValueError) as exc:  # a plain error would reach the CLI user as a traceback
                leaks.append(f"{path}={value!r}: {type(exc).__name__}: {exc}")
    assert errors >= 150, errors  # the sweep reaches most settings' checks
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("message", [
    # library messages a CLI run can reach at model load or data listing (cfviz/models, cfviz/data)
    ModelUnavailableError("the ViT-B-16-plus-240 CLIP weights are not in the local cache and HF_HUB_OFFLINE is set; "
                          "pass a local checkpoint file as pretrained=..., set CFVIZ_CLIP_CHECKPOINT to one"),
    ModelUnavailableError("checkpoint x.pt does not fit the ViT-B-16 architecture; pass the matching architecture "
                          "as name=..."),
    ModelUnavailableError("no pipeline; point model=... at a folder saved with pipe.save_pretrained(), or at a hub id"),
    DatasetError("category 'x' has no images in split 'all'. Fix: add the images, or leave the category out with "
                 "categories=[...]."),
    DatasetError("anomalous image a.png has no mask. Fix: set mask_suffix= if masks are named differently, or pass "
                 "missing_masks='warn' to keep such images as unannotated."),
    DatasetError("limit_per_type must be None (every image) or an int >= 1, got 0."),
    DatasetError("no recorded layer is at least 16x16; lower min_resolution"),
])
def test_library_messages_reach_cli_users_in_cli_words(message: Exception) -> None:
    text = cli_message(message, FLAGS)
    assert not _python_spellings(text), text


def test_one_table_names_every_setting() -> None:
    names = cli_names(FLAGS)
    assert all(names[path] == flag for path, flag in FLAGS.items())
    assert names["pretrained"] == "--clip-pretrained" and names["model"] == "--diffusion"
    assert all(path in FLAGS for path in PARAMETER_SETTINGS.values())


def test_warnings_reach_cli_users_in_cli_words(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from cfviz.cli import main
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path / "tex", seed=1, image_size=32, n_train=1, n_test_good=1, n_per_defect=1,
                             categories=["grass"], defect_kinds=["stain"])
    (root / "grass/test/good/009.png").symlink_to(root / "nowhere.png")
    shutil.copy(root / "grass/ground_truth/stain/000_mask.png", root / "grass/ground_truth/stain/005_mask.png")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the data set is listed (and warned about); no model needed

    monkeypatch.setattr("cfviz.evaluation.runner.CaptureStore", stop)
    main(["evaluate", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "out"), "--no-progress"])
    lines = [line for line in capsys.readouterr().err.splitlines() if ": warning: " in line]
    assert len(lines) == 2 and "009.png is a symbolic link" in lines[0] and "005_mask.png is a mask" in lines[1], lines
    assert all(line.startswith("cfviz evaluate: warning: ") and not _python_spellings(line) for line in lines), lines
    assert "--stray-files error" in lines[0]
