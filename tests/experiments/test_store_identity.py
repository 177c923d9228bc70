"""A result is a function of the bytes of the data, the models and the settings (issue 19).

No file name, lost store header, earlier run or failure may change it, and no failure may destroy
an earlier complete result:

* same names, other pixels -> refused naming the image, or recomputed (``recompute_changed``);
  the same bytes under another folder -> the same results, byte for byte, without a model;
* ``store.json`` lost -> another ``--timesteps`` is still refused (each entry carries its identity);
* ``results.csv``/``summary.md``/``run.json`` are replaced only when complete;
* a full disk or file-size limit names the file, its folder and the bytes written; the store stays valid;
* a scoring-only run ignores how models would run (threads, device type) and reads a read-only store.

One generated category (64 px), two test images, zero-shot CLIPFusion, one timestep: the tiny
random-weight models show the pipeline, not detection quality.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cfviz.capture.store import CaptureStore
from cfviz.errors import CfvizError, ConfigError, StoreMismatchError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.runner import EvaluationResult


def _textures(root: Path, seed: int) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(root, seed=seed, image_size=64, n_train=2, n_test_good=1, n_per_defect=1,
                             categories=["grass"], defect_kinds=["stain"])


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("data")
    a, b = _textures(base / "A", seed=3), _textures(base / "B", seed=4)
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def spec(roots: dict[str, Path]) -> RunSpec:
    return RunSpec(dataset="folder", root=str(roots["A"]), methods=("clipfusion",), shots=(0,), seeds=(0,),
                   extraction=ExtractionConfig(timesteps=(100,), diffusion_size=64),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=64), batch_size=2)


@pytest.fixture(scope="module")
def run_a(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    result = evaluate(spec, tmp_path_factory.mktemp("a"), progress=False)
    assert isinstance(result, EvaluationResult) and result.extraction.new == 2
    return result


@pytest.fixture(scope="module")
def run_b(spec: RunSpec, roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    """Data set B (same file names, other pixels) in a fresh folder: what B's numbers are."""
    return evaluate(replace(spec, root=str(roots["B"])), tmp_path_factory.mktemp("b"), progress=False)


def _copy_run(run: EvaluationResult, to: Path) -> Path:
    shutil.copytree(run.out_dir, to)
    return to


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)


# ------------------------------------------------------------------------------------------ inputs


def test_same_names_other_pixels_are_refused_naming_the_image(spec: RunSpec, roots: dict[str, Path],
                                                              run_a: EvaluationResult, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: "0 new, 2 already stored" and B's table held A's image scores."""
    out = _copy_run(run_a, tmp_path / "out")
    before = (out / "results.csv").read_bytes()
    _no_models(monkeypatch)
    with pytest.raises(StoreMismatchError) as err:
        evaluate(replace(spec, root=str(roots["B"])), out, progress=False)
    message = str(err.value)
    assert "grass/test/good/000" in message and str(roots["B"]) in message
    assert "recompute_changed=True" in message and "out_dir" in message
    assert (out / "results.csv").read_bytes() == before  # the earlier result stands


def test_recompute_changed_gives_the_results_of_a_fresh_run(spec: RunSpec, roots: dict[str, Path],
                                                            run_a: EvaluationResult, run_b: EvaluationResult,
                                                            tmp_path: Path) -> None:
    out = _copy_run(run_a, tmp_path / "out")
    result = evaluate(replace(spec, root=str(roots["B"])), out, progress=False, recompute_changed=True)
    assert result.extraction.new == 2
    assert (out / "results.csv").read_bytes() == (run_b.out_dir / "results.csv").read_bytes()
    assert _files(out / "store") == _files(run_b.store.path)  # the store a fresh run of B writes


def test_the_same_bytes_elsewhere_give_the_same_results_without_a_model(spec: RunSpec, roots: dict[str, Path],
                                                                        run_a: EvaluationResult, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariant: a result is a function of the bytes, not of where the files lie."""
    moved = tmp_path / "renamed_folder"
    shutil.copytree(roots["A"], moved)
    out = _copy_run(run_a, tmp_path / "out")
    (out / "results.csv").unlink()
    _no_models(monkeypatch)
    result = evaluate(replace(spec, root=str(moved)), out, progress=False)
    assert result.extraction.new == 0
    assert (out / "results.csv").read_bytes() == (run_a.out_dir / "results.csv").read_bytes()


def test_entries_record_the_digest_of_their_image(run_a: EvaluationResult, roots: dict[str, Path]) -> None:
    import hashlib

    entry = run_a.store["grass/test/stain/000"]
    expected = hashlib.sha256((roots["A"] / "grass/test/stain/000.png").read_bytes()).hexdigest()
    assert entry.inputs == {"image": f"sha256:{expected}"}
    assert entry.identity == {"config": run_a.store.config, "weights_resolved": {}}


def test_an_entry_without_a_fingerprint_is_refused_with_the_fix(spec: RunSpec, run_a: EvaluationResult,
                                                                tmp_path: Path) -> None:
    """Entries of older stores (no fingerprint) are refused with how to fix it; the option recomputes them."""
    out = _copy_run(run_a, tmp_path / "out")
    meta_path = next((out / "store" / "entries").glob("grass__test__good__000-*.json"))
    meta = json.loads(meta_path.read_text())
    del meta["inputs"], meta["identity"]  # as cfviz wrote entries before
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    with pytest.raises(StoreMismatchError, match="older cfviz that recorded no fingerprint.*recompute_changed=True"):
        evaluate(spec, out, progress=False)
    result = evaluate(spec, out, progress=False, recompute_changed=True)
    assert result.extraction.new == 1
    assert _files(out / "store") == _files(run_a.store.path)


def test_cli_speaks_cli_and_offers_recompute_changed(spec: RunSpec, roots: dict[str, Path], run_a: EvaluationResult,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import main

    out = _copy_run(run_a, tmp_path / "out")
    argv = ["evaluate", "--dataset", "folder", "--root", str(roots["B"]), "--method", "clipfusion",
            "--timesteps", "100", "--diffusion-size", "64", "--min-resolution", "1", "--eval-size", "64",
            "--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "grass/test/good/000" in err and "--recompute-changed" in err and "--out" in err
    assert "recompute_changed" not in err and "True" not in err  # CLI words only (cfviz.cli.cli_message)
    assert len(err.strip().splitlines()) == 1
    assert main([*argv, "--recompute-changed"]) == 0


# ---------------------------------------------------------------------------------------- identity


def test_lost_store_json_still_refuses_other_timesteps(spec: RunSpec, run_a: EvaluationResult, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: entries captured at t=100 were scored as t=300."""
    out = _copy_run(run_a, tmp_path / "out")
    (out / "store" / "store.json").unlink()
    other = replace(spec, extraction=replace(spec.extraction, timesteps=(300,)))
    _no_models(monkeypatch)
    with pytest.raises(StoreMismatchError) as err:
        evaluate(other, out, progress=False)
    message = str(err.value)
    assert "extraction.timesteps: [100] -> [300]" in message and "store.json" in message
    assert (out / "results.csv").read_bytes() == (run_a.out_dir / "results.csv").read_bytes()
    # the same settings still score it, byte for byte
    evaluate(spec, out, progress=False)
    assert (out / "results.csv").read_bytes() == (run_a.out_dir / "results.csv").read_bytes()


def test_lost_store_json_and_images_to_compute_name_the_setting_to_use(spec: RunSpec, run_a: EvaluationResult,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a header the entries still refuse another thread count when models must run, saying how to match."""
    import torch

    out = _copy_run(run_a, tmp_path / "out")
    (out / "store" / "store.json").unlink()
    next((out / "store" / "entries").glob("*.json")).unlink()
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    _no_models(monkeypatch)
    with pytest.raises(StoreMismatchError) as err:
        evaluate(spec, out, progress=False)
    assert f"cpu_threads: {threads} -> {threads + 1}" in str(err.value)
    assert f"OMP_NUM_THREADS={threads}" in str(err.value) and "store.json" in str(err.value)


def test_a_store_never_mixes_identities_header_or_no_header(run_a: EvaluationResult, tmp_path: Path) -> None:
    """An entry of another identity copied in (or left by a lost header's rerun) is refused, naming it."""
    store = tmp_path / "store"
    shutil.copytree(run_a.store.path, store)
    meta_path = next((store / "entries").glob("grass__test__stain__000-*.json"))
    meta = json.loads(meta_path.read_text())
    meta["identity"]["config"]["extraction"]["timesteps"] = [300]
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    with pytest.raises(StoreMismatchError, match=r"'grass/test/stain/000'.*timesteps: \[300\] -> \[100\]"):
        len(CaptureStore(store, readonly=True))
    (store / "store.json").unlink()
    with pytest.raises(StoreMismatchError, match="grass/test"):
        len(CaptureStore(store, readonly=True))  # no header: the entries must agree among themselves


# ----------------------------------------------------------------------------------------- results


def test_a_failed_run_leaves_the_earlier_results(spec: RunSpec, run_a: EvaluationResult, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: results.csv was replaced, then summary.md failed (an empty category: KeyError 'category')."""
    out = _copy_run(run_a, tmp_path / "out")
    for name in ("results.csv", "summary.md", "run.json"):  # an earlier run's results (other than this run's)
        (out / name).write_text(f"earlier {name}\n")
    before = {n: (out / n).read_bytes() for n in ("results.csv", "summary.md", "run.json")}

    def broken(*args, **kwargs):
        raise KeyError("category")
    monkeypatch.setattr("cfviz.evaluation.report.summary_markdown", broken)
    with pytest.raises(KeyError):
        evaluate(spec, out, progress=False)
    assert {n: (out / n).read_bytes() for n in before} == before
    monkeypatch.undo()

    monkeypatch.setattr("cfviz.evaluation.runner._score", lambda *a, **k: [])  # nothing scored
    with pytest.raises(CfvizError, match="no results were written"):
        evaluate(spec, out, progress=False)
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_while_writing_results_keeps_the_earlier_ones(spec: RunSpec, run_a: EvaluationResult,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cfviz.errors import WriteError

    out = _copy_run(run_a, tmp_path / "out")
    before = _files(out)
    real = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        if self.name.startswith(".summary.md"):
            real(self, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(WriteError) as err:
        evaluate(spec, out, progress=False)
    assert f"summary.md in {out}" in str(err.value) and "10 of" in str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert _files(out) == before  # results.csv, summary.md and run.json: all old, none half-new


# ----------------------------------------------------------------------------- file-size limit


FSIZE_CHILD = r"""
import resource, sys, torch
from cfviz.capture.store import CaptureStore
store = CaptureStore(sys.argv[1], config={"m": 1})
store.add("small/0", arrays={"x/y": torch.zeros(8)})
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
store.add("big/0", arrays={"x/y": torch.zeros(100_000)})  # 400 kB: over the limit
"""


def test_file_size_limit_names_file_folder_and_bytes_and_keeps_the_store(tmp_path: Path) -> None:
    """Before: ``OSError: [Errno 27] File too large`` with no path."""
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(store)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cfviz.errors.WriteError: the capture store")
    assert "'big/0'" in last and f"in {store / 'entries'}" in last and ".safetensors" in last
    assert "200,000 of 400," in last and "file-size limit" in last and "ulimit -f" in last
    reopened = CaptureStore(store, readonly=True)  # valid: the earlier entry reads, the failed one is absent
    assert reopened.ids == ["small/0"] and float(reopened["small/0"]["x/y"].sum()) == 0.0
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------- scoring-only


def test_a_read_only_store_is_scorable(spec: RunSpec, run_a: EvaluationResult, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, read_only) -> None:
    """Before: refused by the preflight check that the store folder can be written."""
    store = tmp_path / "ro_store"
    shutil.copytree(run_a.store.path, store)
    before = _files(store)
    with read_only(store):
        with pytest.raises(OSError):  # the simulation holds
            (store / "probe").write_bytes(b"")
        _no_models(monkeypatch)
        result = evaluate(spec, tmp_path / "out", store_dir=store, progress=False)
    assert result.extraction.new == 0 and result.store.readonly
    assert (tmp_path / "out" / "results.csv").read_bytes() == (run_a.out_dir / "results.csv").read_bytes()
    assert _files(store) == before


def test_a_read_only_store_with_images_to_compute_names_the_store_folder(spec: RunSpec, run_a: EvaluationResult,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         read_only) -> None:
    store = tmp_path / "ro_store"
    shutil.copytree(run_a.store.path, store)
    next((store / "entries").glob("*.json")).unlink()
    with read_only(store):
        _no_models(monkeypatch)
        with pytest.raises(ConfigError) as err:
            evaluate(spec, tmp_path / "out", store_dir=store, progress=False)
    assert err.value.field == "store_dir" and "cannot be written" in str(err.value)
    assert "1 of the run's images" in str(err.value)


def _as_if_made_on(store: Path, device_type: str) -> None:
    """Rewrite a store's identity (header and entries) as if its maps came from another device type."""
    header = json.loads((store / "store.json").read_text())
    header["config"]["models"]["device_type"] = device_type
    header["config"].pop("cpu_threads")
    (store / "store.json").write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    for meta_path in (store / "entries").glob("*.json"):
        meta = json.loads(meta_path.read_text())
        meta["identity"]["config"] = header["config"]
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def test_scoring_a_gpu_store_on_a_cpu_needs_no_gpu_but_adding_to_it_does(spec: RunSpec, run_a: EvaluationResult,
                                                                         roots: dict[str, Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Device type and thread count matter only when models run; then the refusal names the flag."""
    from cfviz.cli import main

    store = tmp_path / "gpu_store"
    shutil.copytree(run_a.store.path, store)
    _as_if_made_on(store, "cuda")
    _no_models(monkeypatch)
    result = evaluate(spec, tmp_path / "out", store_dir=store, progress=False)
    assert (tmp_path / "out" / "results.csv").read_bytes() == (run_a.out_dir / "results.csv").read_bytes()
    assert result.store.config["models"]["device_type"] == "cuda"

    next((store / "entries").glob("*.json")).unlink()  # now an image must be computed: on the store's device
    code = main(["evaluate", "--dataset", "folder", "--root", str(roots["A"]), "--method", "clipfusion",
                 "--timesteps", "100", "--diffusion-size", "64", "--min-resolution", "1", "--eval-size", "64",
                 "--batch-size", "2", "--out", str(tmp_path / "out2"), "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and 'models.device_type: "cuda" -> "cpu"' in err and "--device cuda" in err
