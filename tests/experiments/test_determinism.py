"""A run's store and results.csv are pure functions of data, models and settings.

However a run is cut — killed by SIGKILL and resumed, split into shards, or repaired after
damage — the capture store (every entry file and the header) and ``results.csv`` are the bytes
of one uninterrupted run. A store refuses another batch size or other weights, naming only what
differs, and a run that fails before its first entry leaves no store behind.

One small generated texture category (64 px, 2 timesteps), batch size 2: five images in three
planned batches. The CLIP weights are a local checkpoint file, so that rewriting it can be tested.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cfviz.capture.store import CaptureStore, StoreDamagedError
from cfviz.errors import ModelUnavailableError, StoreMismatchError
from cfviz.experiments import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation.runner import EvaluationResult, store_identity

BATCH = 2

# the same spec in this process and in a child process (built from plain JSON in both)
CHILD = r"""
import json, sys
from cfviz.experiments import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig, evaluate

def tuples(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

kw = tuples(json.loads(sys.argv[1]))
spec = RunSpec(models=ModelChoice(**tuples(kw.pop("models"))),
               extraction=ExtractionConfig(**tuples(kw.pop("extraction"))),
               scoring=ScoringConfig(**tuples(kw.pop("scoring"))), **kw)
evaluate(spec, sys.argv[2], progress=False)
"""


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _spec(kw: dict) -> RunSpec:
    kw = _tuples(json.loads(json.dumps(kw)))
    return RunSpec(models=ModelChoice(**_tuples(kw.pop("models"))),
                   extraction=ExtractionConfig(**_tuples(kw.pop("extraction"))),
                   scoring=ScoringConfig(**_tuples(kw.pop("scoring"))), **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """File digests are cached in CFVIZ_CACHE_DIR: keep them out of the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("cfviz_cache")))
        yield


@pytest.fixture(scope="module")
def spec_kw(env, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from cfviz.data.textures import generate_textures
    from cfviz.models import tiny_clip
    from cfviz.models.clip import TINY_CLIP, save_clip_checkpoint

    base = tmp_path_factory.mktemp("determinism")
    root = generate_textures(base / "tex", seed=3, image_size=64, n_train=3, n_test_good=2, n_per_defect=1,
                             categories=["grass"], defect_kinds=["stain", "hole"])
    ckpt = save_clip_checkpoint(tiny_clip(seed=0), base / "clip.safetensors")
    return {"dataset": "folder", "root": str(root), "methods": ["clipfusion"], "shots": [0, 1], "seeds": [0],
            "batch_size": BATCH,
            "models": {"clip": "pretrained", "clip_arch": TINY_CLIP, "clip_pretrained": str(ckpt)},
            "extraction": {"timesteps": [100, 400], "diffusion_size": 64},
            # 64 px images give coarse attention grids: use every recorded resolution
            "scoring": {"language_min_resolution": 1, "eval_size": 64}}


@pytest.fixture(scope="module")
def spec(spec_kw: dict) -> RunSpec:
    return _spec(spec_kw)


@pytest.fixture(scope="module")
def reference(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    """One uninterrupted run: what every other way of cutting the run must reproduce."""
    result = evaluate(spec, tmp_path_factory.mktemp("reference"), progress=False)
    assert isinstance(result, EvaluationResult) and result.extraction.new == 5
    return result


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_bytes(store: Path, out: Path, reference: EvaluationResult) -> None:
    expected, got = _files(reference.store.path), _files(store)
    assert sorted(got) == sorted(expected)  # no leftover .tmp, no missing or extra entry
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, f"files differ from the uninterrupted run: {differ}"
    assert (out / "results.csv").read_bytes() == (reference.out_dir / "results.csv").read_bytes()


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although every image is in the store")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)


def test_sigkill_mid_extraction_then_resume_is_byte_identical(spec_kw: dict, spec: RunSpec,
                                                              reference: EvaluationResult, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    entries = out / "store" / "entries"
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec_kw), str(out)],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not list(entries.glob("*.json")) and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            log_text = (tmp_path / "child.log").read_text
            assert child.poll() is None, f"the run ended before it could be killed:\n{log_text()}"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert 1 <= len(list(entries.glob("*.json"))) < 5 and not (out / "results.csv").exists()

    resumed = evaluate(spec, out, progress=False)
    assert resumed.extraction.total == 5 and resumed.extraction.new >= 1
    assert resumed.extraction.new + resumed.extraction.already == 5
    assert_same_bytes(out / "store", out, reference)


def test_shards_then_merge_is_byte_identical(spec: RunSpec, reference: EvaluationResult, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "shared_store"
    reports = [evaluate(spec, tmp_path / "out", store_dir=store, shard=(i, 3), progress=False) for i in range(3)]
    # whole batches per shard: [a, b], [c, d], [e]
    assert [r.new for r in reports] == [2, 2, 1] and all(r.already == 0 for r in reports)
    assert str(reports[0]).startswith("2 new, 0 already stored, 2 in all")
    _no_models(monkeypatch)
    merged = evaluate(spec, tmp_path / "out", store_dir=store, progress=False)
    assert str(merged.extraction).startswith("0 new, 5 already stored, 5 in all")
    assert_same_bytes(store, tmp_path / "out", reference)


def test_other_batch_size_is_refused_naming_only_it(spec: RunSpec, reference: EvaluationResult,
                                                    tmp_path: Path) -> None:
    with pytest.raises(StoreMismatchError) as err:
        evaluate(replace(spec, batch_size=3), tmp_path, store_dir=reference.store.path, progress=False)
    message = str(err.value)
    assert f"batch_size: {BATCH} -> 3" in message and message.count("->") == 1
    assert "timesteps" not in message and len(message) < 400  # not two dumps of the whole configuration
    assert "--store" in message


def test_a_subset_of_test_images_needs_its_own_store(spec: RunSpec, reference: EvaluationResult,
                                                    tmp_path: Path) -> None:
    """--limit-per-type drops images, so the others get other batch neighbours: never mixed."""
    with pytest.raises(StoreMismatchError) as err:
        evaluate(replace(spec, dataset_options={"limit_per_type": 1}), tmp_path, store_dir=reference.store.path,
                 progress=False)
    assert "test_subset" in str(err.value) and "limit_per_type" in str(err.value)
    # options that keep every image leave the identity alone
    assert store_identity(replace(spec, dataset_options={"missing_masks": "warn"})) == \
        store_identity(spec)


def test_another_cpu_thread_count_is_refused_only_when_models_run(spec: RunSpec, reference: EvaluationResult,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread counts change the last bits of CPU results (launchers set OMP_NUM_THREADS=1): a run
    that adds entries must use the store's count (the refusal says how); a run that only scores
    stored entries loads no model, so its thread count does not matter."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    _no_models(monkeypatch)
    scored = evaluate(spec, tmp_path / "scored", store_dir=reference.store.path, progress=False)
    assert scored.extraction.new == 0
    assert (tmp_path / "scored" / "results.csv").read_bytes() == (reference.out_dir / "results.csv").read_bytes()
    # the store's identity, not this process's threads, is what run.json says computed the maps
    assert json.loads((tmp_path / "scored" / "run.json").read_text())["store_identity"]["config"]["cpu_threads"] \
        == threads

    partial = tmp_path / "partial"
    shutil.copytree(reference.store.path, partial)
    next((partial / "entries").glob("*.json")).unlink()  # one image to compute: models would run
    with pytest.raises(StoreMismatchError, match=f"cpu_threads: {threads} -> {threads + 1}") as err:
        evaluate(spec, tmp_path / "out", store_dir=partial, progress=False)
    assert f"OMP_NUM_THREADS={threads}" in str(err.value)


def test_run_failing_before_its_first_entry_leaves_no_store(spec: RunSpec, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_loader(choice):
        raise ModelUnavailableError("no such weights (a typo)")

    monkeypatch.setattr("cfviz.evaluation.models.load_models", broken_loader)
    typo = replace(spec, models=replace(spec.models, seed=7))
    with pytest.raises(ModelUnavailableError):
        evaluate(typo, tmp_path, progress=False)
    assert not (tmp_path / "store" / "store.json").exists()
    # the corrected run (other settings) is not refused by what the failed run left
    assert store_identity(typo) != store_identity(spec)
    CaptureStore(tmp_path / "store", store_identity(spec))


def test_changed_weights_file_is_refused(spec: RunSpec, reference: EvaluationResult, tmp_path: Path) -> None:
    from cfviz.models import tiny_clip
    from cfviz.models.clip import save_clip_checkpoint

    ckpt = Path(spec.models.clip_pretrained)
    original = ckpt.read_bytes()
    try:
        save_clip_checkpoint(tiny_clip(seed=1), ckpt)  # same name, other weights
        with pytest.raises(StoreMismatchError, match=r"weights\.clip\.sha256\.clip\.safetensors: \"[0-9a-f]+") as err:
            evaluate(spec, tmp_path, store_dir=reference.store.path, progress=False)
        assert str(err.value).count("->") == 1
    finally:
        ckpt.write_bytes(original)
    CaptureStore(reference.store.path, store_identity(spec))  # the same bytes again: accepted


def test_damaged_entries_are_named_and_repaired(spec: RunSpec, reference: EvaluationResult, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(reference.store.path, store)
    entries = store / "entries"
    tensors = sorted(entries.glob("*.safetensors"))
    metas = sorted(entries.glob("*.json"))
    tensors[0].write_bytes(b"garbage, not safetensors")
    metas[3].write_text(metas[3].read_text()[:40])  # truncated
    # a writer killed inside an atomic write leaves its temporary file
    code = ("import os, sys; from cfviz.utils.io import atomic_path\n"
            "tmp = atomic_path(sys.argv[1]).__enter__(); tmp.write_bytes(b'partial'); os._exit(1)")
    subprocess.run([sys.executable, "-c", code, str(entries / "x.json")], check=False)
    assert len(list(entries.glob(".*.tmp"))) == 1

    with pytest.raises(StoreDamagedError) as err:
        evaluate(spec, tmp_path, store_dir=store, progress=False)
    message = str(err.value)
    assert str(tensors[0]) in message or str(metas[3]) in message
    assert "--repair" in message and "grass" in message

    repaired = evaluate(spec, tmp_path, store_dir=store, progress=False, repair=True)
    assert repaired.extraction.new == 2 and repaired.extraction.already == 3
    assert_same_bytes(store, tmp_path, reference)


def test_an_images_batch_does_not_depend_on_what_else_a_run_asks_for() -> None:
    """Runs sharing a store (one category at a time, more shots or seeds later) compute each image
    with the neighbours a single fresh run gives it, so their entries are the same bytes."""
    from types import SimpleNamespace

    from cfviz.evaluation.extraction import run_batches

    def rec(image_id: str) -> SimpleNamespace:
        category, split = image_id.split("/")[:2]
        return SimpleNamespace(image_id=image_id, category=category, split=split)

    tests = [f"{c}/test/{d}/{i:03d}" for c in ("brick", "grass", "wood") for d in ("good", "hole") for i in range(3)]
    train = [f"{c}/train/good/{i:03d}" for c in ("brick", "grass", "wood") for i in range(5)]
    full = run_batches([rec(i) for i in tests + train], 4)

    def neighbours(plan: list[list[str]]) -> dict[str, list[str]]:
        return {i: b for b in plan for i in b}

    whole = neighbours(full)
    cuts = {"one category": [i for i in tests if i.startswith("grass")] + ["grass/train/good/003"],
            "other references": tests + train[::2], "zero-shot": tests, "two categories": tests[6:] + train[7:9]}
    for name, ids in cuts.items():
        for image_id, batch in neighbours(run_batches([rec(i) for i in ids], 4)).items():
            assert batch == whole[image_id], f"{name}: {image_id} computed with {batch}, not {whole[image_id]}"
    # shards take whole batches of the one plan, and together take all of it
    shards = [run_batches([rec(i) for i in tests + train], 4, shard=(k, 3)) for k in range(3)]
    assert sorted(b for s in shards for b in s) == sorted(full)


def test_weights_identity_hashes_local_files_once_per_version(env, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import cfviz.models.fingerprint as fp
    from cfviz.evaluation.models import weights_identity

    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights v1")
    choice = ModelChoice(diffusion=str(folder))
    first = weights_identity(choice)["diffusion"]["sha256"]
    assert sorted(first) == ["model_index.json", "unet/diffusion_pytorch_model.safetensors"]

    hashed: list[str] = []
    real = fp.sha256_file
    monkeypatch.setattr(fp, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    assert weights_identity(choice)["diffusion"]["sha256"] == first and hashed == []  # cached: no file read
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat()
    weights.write_bytes(b"weights v2")  # same size, same inode
    # a later write has a later time stamp; say so explicitly rather than wait for the clock to tick
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    second = weights_identity(choice)["diffusion"]["sha256"]
    assert hashed == ["diffusion_pytorch_model.safetensors"]  # only the changed file is read again
    assert second["model_index.json"] == first["model_index.json"]
    assert second["unet/diffusion_pytorch_model.safetensors"] != first["unet/diffusion_pytorch_model.safetensors"]
    # random weights are named by their seed; hub ids by id and revision (the commit is confirmed once loaded)
    assert weights_identity(ModelChoice(seed=4))["clip"] == {"random_seed": 4}
    assert weights_identity(ModelChoice(diffusion="org/model", revision="v2"))["diffusion"] == {
        "hub": "org/model", "revision": "v2"}


def test_hub_commit_is_recorded_with_the_first_entry_and_must_match(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from cfviz.capture.store import ClipScores
    from cfviz.evaluation.models import LoadedModels, resolved_weights

    def loaded(commit: str) -> LoadedModels:
        info = {"kind": "inpaint_pipeline", "name": "org/model", "source": "hub", "commit": commit}
        pipe = SimpleNamespace(cfviz_info=info)
        clip = SimpleNamespace(cfviz_info={"kind": "clip", "name": "tiny", "source": "config"})
        return LoadedModels(clip=clip, pipe=pipe, choice=ModelChoice(diffusion="org/model"))

    assert resolved_weights(loaded("abc")) == {"diffusion": {"commit": "abc"}}
    store = CaptureStore(tmp_path / "s", {"m": 1})
    store.confirm("weights_resolved", resolved_weights(loaded("abc")))
    assert not (tmp_path / "s" / "store.json").exists()  # still nothing claimed
    store.add("x/0", clip=ClipScores(image=0.5, patch=torch.zeros(2, 2)))
    again = CaptureStore(tmp_path / "s", {"m": 1})
    again.confirm("weights_resolved", resolved_weights(loaded("abc")))
    with pytest.raises(StoreMismatchError, match=r'weights_resolved\.diffusion\.commit: "abc" -> "def"'):
        again.confirm("weights_resolved", resolved_weights(loaded("def")))
