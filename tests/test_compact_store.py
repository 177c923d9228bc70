"""The compact store form (issue 12, "Stores that fit a full benchmark").

A compact run keeps, for its test images, the M_diff_V maps of its shots, seeds and the
(timestep, block) matching grid in place of their UNet features. The tiny models, two
categories, 3 timesteps x 3 feature blocks (the grid), shots 0 and 1, two seeds:

* results.csv of a compact run equals the full run's byte for byte, and so do the matching
  tables (timestep and block) of the ablation;
* the features are gone from every test entry and every reference, and the store is smaller;
* a setting that was not kept (another seed, shots value or pair) fails with one error naming
  ``--store-form`` (and the flags that would have kept it);
* compaction cut at any point (in a rewrite, between entries) resumes to the same store, file
  for file; an entry rewrite is atomic at each of its steps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cfviz.capture.store import CaptureStore, StoreDamagedError
from cfviz.errors import StoreMismatchError
from cfviz.experiments import ExtractionConfig, RunSpec, ScoringConfig, evaluate
from cfviz.evaluation import compact
from cfviz.evaluation.runner import EvaluationResult, open_run_dataset
from cfviz.utils.io import json_bytes

BLOCKS = ("up_blocks.0", "up_blocks.1", "up_blocks.2")  # every up block of the tiny UNet
TIMESTEPS = (100, 261, 400)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> RunSpec:
    from cfviz.data.textures import generate_textures

    root = generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=3, n_test_good=1,
                             n_per_defect=1, categories=["brick", "grass"], defect_kinds=["stain", "hole"])
    return RunSpec(dataset="folder", root=str(root), methods=("clipfusion", "mapdiff", "winclip"), shots=(0, 1),
                   seeds=(0, 1), batch_size=2,
                   extraction=ExtractionConfig(timesteps=TIMESTEPS, diffusion_size=64, features=BLOCKS),
                   scoring=ScoringConfig(language_min_resolution=1, eval_size=32))


@pytest.fixture(scope="module")
def runs(spec: RunSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationResult, EvaluationResult]:
    base = tmp_path_factory.mktemp("runs")
    full = evaluate(spec, base / "full", progress=False)
    small = evaluate(replace(spec, store_form="compact"), base / "compact", progress=False)
    assert isinstance(full, EvaluationResult) and isinstance(small, EvaluationResult)
    return full, small


@pytest.fixture(scope="module")
def new_seed(spec: RunSpec) -> int:
    """A seed whose 1-shot draw of brick (the first category) differs from seeds 0 and 1."""
    dataset = open_run_dataset(spec)
    kept = compact.reference_draws(dataset, "brick", [1], [0, 1])
    return next(s for s in range(2, 100) if not set(compact.reference_draws(dataset, "brick", [1], [s])) & set(kept))


def test_compact_results_equal_the_full_results_byte_for_byte(runs) -> None:
    full, small = runs
    a, b = (full.out_dir / "results.csv").read_bytes(), (small.out_dir / "results.csv").read_bytes()
    assert b"mapdiff" in a and b",1,1," in a  # the diffusion branch at 1 shot, seed 1, is in the table
    assert a == b


def test_compact_matching_tables_equal_the_full_ones(runs, spec) -> None:
    from cfviz.analysis.ablations import matching_table

    full, small = runs
    dataset = open_run_dataset(spec)
    for kind in ("timestep", "block"):
        kw = dict(kind=kind, shots=1, seeds=(0, 1), scoring=spec.scoring, extraction=spec.extraction,
                  width_bridge="average")  # every block pair (the compact store keeps the bridged ones too)
        a, b = matching_table(full.store, dataset, **kw), matching_table(small.store, dataset, **kw)
        assert len(a) == 2 * 2 * 9 * 4  # categories x seeds x pairs x metrics
        assert a.equals(b)
    # the default grid (equal widths only: the tiny UNet's up0 and up1 are 64 wide, up2 32) from the compact
    # store, whose widths come from the shipped configuration (its features are gone)
    kw.pop("width_bridge")
    a, b = matching_table(full.store, dataset, **kw), matching_table(small.store, dataset, **kw)
    assert len(a) == 2 * 2 * 5 * 4 and a.equals(b)


def test_features_are_gone_and_the_maps_stored(runs, spec) -> None:
    full, small = runs
    dataset = open_run_dataset(spec)
    tests = [r.image_id for r in dataset.records if r.split == "test"]
    pairs = compact.visual_pairs(spec.extraction, spec.scoring)
    assert len(pairs) == 17  # 9 timestep pairs + 9 block pairs, sharing the matched default
    for image_id in full.store.ids:
        entry = small.store[image_id]
        assert not [n for n in entry.names if n.startswith("feat/")]
        assert [n for n in entry.names if n.startswith("attn/")] == [n for n in full.store[image_id].names
                                                                     if n.startswith("attn/")]
        maps = [n for n in entry.names if n.startswith("mdv/")]
        draws = compact.reference_draws(dataset, entry.metadata["category"], [1], [0, 1])
        assert len(maps) == (17 * len(draws) if image_id in tests else 0)  # every pair of every draw
    # nothing left over: one tensors file per entry, no journal
    entries = small.store.path / "entries"
    assert len(list(entries.glob("*.safetensors"))) == len(small.store) == len(full.store)
    assert not (small.store.path / compact.JOURNAL_DIR).exists()
    # what went and what came, byte for byte: the features out, float32 maps in
    for image_id in full.store.ids:
        before, after = full.store[image_id].meta["tensors"], small.store[image_id].meta["tensors"]
        feats = sum(torch.Size(t["shape"]).numel() * 2 for n, t in before.items() if n.startswith("feat/"))
        maps = sum(torch.Size(t["shape"]).numel() * 4 for n, t in after.items() if n.startswith("mdv/"))
        assert all(t["dtype"] == "float32" for n, t in after.items() if n.startswith("mdv/"))
        assert small.store[image_id].meta["nbytes"] == full.store[image_id].meta["nbytes"] - feats + maps
    size = {s: sum(p.stat().st_size for p in (r.store.path / "entries").iterdir()) for s, r in
            (("full", full), ("compact", small))}
    assert size["compact"] < size["full"]  # at 64 px CLIP's embeddings weigh most; 512 px: bench_store_size.py


def test_a_setting_that_was_not_kept_names_the_flag(runs, spec) -> None:
    from cfviz.evaluation.scoring import diffusion_features, diffusion_visual_maps, predict

    full, small = runs
    dataset = open_run_dataset(spec)
    ids = [r.image_id for r in dataset.records if r.category == "brick" and r.split == "test"]
    stored = sorted({r for d in compact.reference_draws(dataset, "brick", [1], [0, 1]).values()
                     for r in d["references"]})
    other_draw = [*stored, stored[0]]  # references no (shots, seed) of the run drew
    with pytest.raises(compact.CompactStoreError) as err:
        diffusion_visual_maps(small.store, ids, other_draw, spec.scoring, spec.extraction)
    assert diffusion_visual_maps(full.store, ids, other_draw, spec.scoring, spec.extraction).shape[0] == len(ids)
    message = err.value.phrase({"store_form": "--store-form", "shots": "--shots", "seeds": "--seeds",
                                "extraction.timesteps": "--timesteps", "extraction.features": "--features"})
    assert "--store-form full" in message and "--shots/--seeds" in message and "(1, 0), (1, 1)" in message
    # a pair outside the grid: query and reference differ in both timestep and block
    odd = replace(spec.scoring, visual_timestep=100, reference_timestep=400, visual_block="up_blocks.0",
                  reference_block="up_blocks.2")
    with pytest.raises(compact.CompactStoreError, match="query timestep 100 of up_blocks.0, reference timestep 400"):
        predict(small.store, dataset, "brick", "mapdiff", shots=1, seed=0, scoring=odd, extraction=spec.extraction)
    predict(full.store, dataset, "brick", "mapdiff", shots=1, seed=0, scoring=odd, extraction=spec.extraction)
    with pytest.raises(compact.CompactStoreError, match="keeps no UNet features"):
        diffusion_features(small.store, small.store.ids[:1], "up_blocks.1", 100)


def test_the_cli_says_which_flag_would_have_kept_it(runs, spec, new_seed, capsys, tmp_path) -> None:
    from cfviz.cli import main

    _, small = runs
    store = shutil.copytree(small.store.path, tmp_path / "store")  # the shared one stays as the run left it
    argv = ["evaluate", "--dataset", "folder", "--root", spec.root, "--method", "mapdiff", "--shots", "1",
            "--seeds", "0", str(new_seed), "--batch-size", "2", "--timesteps", *map(str, TIMESTEPS), "--features", *BLOCKS,
            "--diffusion-size", "64", "--min-resolution", "1", "--eval-size", "32", "--store-form", "compact",
            "--store", str(store), "--out", str(tmp_path / "out"), "--no-progress"]
    before = _files(store)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "--store-form full" in err and "--shots/--seeds" in err and "store_form" not in err
    # refused before any model ran: the new seed's references were not extracted, nothing was touched
    assert _files(store) == before


def test_the_store_identity_keeps_the_forms_apart(runs, spec) -> None:
    from cfviz.evaluation.runner import store_identity

    full, small = runs
    with pytest.raises(StoreMismatchError, match=r"store_form: \(absent\) -> \"compact\""):
        CaptureStore(full.store.path, store_identity(replace(spec, store_form="compact")))
    assert "store_form" not in store_identity(spec)  # full stores written before the setting keep matching


def test_compaction_cut_anywhere_resumes_to_the_same_store(runs, spec, tmp_path, monkeypatch) -> None:
    full, small = runs
    work = tmp_path / "cut"
    shutil.copytree(full.store.path, work / "store")
    compact_spec = replace(spec, store_form="compact")
    header = CaptureStore(small.store.path, readonly=True).header
    (work / "store" / "store.json").write_text((small.store.path / "store.json").read_text())  # the compact identity
    for meta_path in (work / "store" / "entries").glob("*.json"):  # which each entry records too, as a compact run's
        meta = json.loads(meta_path.read_text())
        meta["identity"] = CaptureStore(small.store.path, readonly=True).identity()
        meta_path.write_bytes(json_bytes(meta))
    assert CaptureStore(work / "store", readonly=True).header == header
    dataset = open_run_dataset(spec)
    import cfviz.capture.store as store_module

    real, real_json = CaptureStore.rewrite, store_module.atomic_write_json
    calls = {"n": 0}

    def rewrite(self, image_id, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] < 3:
            return real(self, image_id, **kw)

        def killed(*a, **k):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt("killed")
        store_module.atomic_write_json = killed  # the 3rd rewrite dies after its new tensors file, before the JSON
        try:
            return real(self, image_id, **kw)
        finally:
            store_module.atomic_write_json = real_json

    monkeypatch.setattr(CaptureStore, "rewrite", rewrite)
    cuts = 0
    while True:  # each pass rewrites two entries, then dies in the third rewrite
        calls["n"] = 0
        try:
            done = evaluate(compact_spec, work / "out", store_dir=work / "store", progress=False)
            break
        except KeyboardInterrupt:
            cuts += 1
        store = CaptureStore(work / "store", readonly=True)  # every entry readable: old or new, never a mix
        assert len(store) == len(full.store)
        for entry in store:
            entry.load()
        if cuts == 1:  # brick's first two test images compacted, the third not: scoring says so
            from cfviz.evaluation.scoring import predict

            assert (work / "store" / compact.JOURNAL_DIR).is_dir()
            with pytest.raises(compact.CompactStoreError, match="cut short.*store_form compact"):
                predict(store, dataset, "brick", "mapdiff", shots=1, seed=0, scoring=spec.scoring,
                        extraction=spec.extraction)
    assert cuts >= 3 and isinstance(done, EvaluationResult)
    assert _files(work / "store") == _files(small.store.path)
    assert (work / "out" / "results.csv").read_bytes() == (small.out_dir / "results.csv").read_bytes()


def test_rewrite_is_atomic_at_each_step(tmp_path, monkeypatch) -> None:
    import cfviz.capture.store as store_module

    store = CaptureStore(tmp_path / "s", {"m": 1})
    store.add("img/0", arrays={"feat/b": torch.ones(4, 8, 8, dtype=torch.float16), "attn/l": torch.zeros(2, 2)})
    old = _files(tmp_path / "s")

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("disk full")
    # cut before the JSON: the old entry stands (a stray new tensors file is cleaned up by the next rewrite)
    monkeypatch.setattr(store_module, "atomic_write_json", boom)
    with pytest.raises(OSError):
        store.rewrite("img/0", drop=["feat/"], arrays={"mdv/x": torch.ones(8, 8)})
    monkeypatch.undo()
    again = CaptureStore(tmp_path / "s", {"m": 1})
    assert again["img/0"].names == ["attn/l", "feat/b"] and again["img/0"]["feat/b"].shape == (4, 8, 8)
    assert set(_files(tmp_path / "s")) - set(old)  # the stray file
    # cut after the JSON, before the old file is deleted: the new entry stands, the old file is an orphan
    monkeypatch.setattr(CaptureStore, "remove_orphans", boom)
    with pytest.raises(OSError):
        again.rewrite("img/0", drop=["feat/"], arrays={"mdv/x": torch.ones(8, 8)})
    monkeypatch.undo()
    third = CaptureStore(tmp_path / "s", {"m": 1})
    assert third["img/0"].names == ["attn/l", "mdv/x"]
    assert len(list((tmp_path / "s" / "entries").glob("*.safetensors"))) == 2
    assert third.remove_orphans(["img/0"]) == [f"{third['img/0'].meta['key']}.safetensors"]
    assert [p.name for p in (tmp_path / "s" / "entries").glob("*.safetensors")] == [third["img/0"].path.name]
    # a damaged rewritten entry is named and repaired like any other
    third["img/0"].path.write_bytes(b"garbage")
    with pytest.raises(StoreDamagedError, match=r"img__0-\w+\.[0-9a-f]{12}\.safetensors has 7 bytes"):
        CaptureStore(tmp_path / "s", {"m": 1}).ids
    repaired = CaptureStore(tmp_path / "s", {"m": 1}, repair=True)
    assert repaired.ids == [] and not list((tmp_path / "s" / "entries").iterdir())


def test_zero_shot_compaction_keeps_no_maps_and_is_idempotent(tmp_path) -> None:
    from types import SimpleNamespace as R

    store = CaptureStore(tmp_path / "s", {"m": 1})
    dataset = R(name="x", categories=["c"], records=[R(image_id="c/test/0", category="c", split="test", label=0),
                                                     R(image_id="c/train/0", category="c", split="train", label=0)])
    store.add("c/test/0", arrays={"feat/up_blocks.1": torch.zeros(3, 4, 2, 2, dtype=torch.float16),
                                  "attn/l": torch.zeros(3, 1, 2, 2)})
    kw = dict(shots=[0], seeds=[0], extraction=ExtractionConfig(), scoring=ScoringConfig())
    assert compact.compact_category(store, dataset, "c", **kw) == 1
    assert store["c/test/0"].names == ["attn/l"] and compact.is_compacted(store["c/test/0"].meta)
    files = _files(tmp_path / "s")
    assert compact.compact_category(store, dataset, "c", **kw) == 0 and _files(tmp_path / "s") == files


def test_shards_extract_and_the_merging_run_compacts(runs, spec, tmp_path) -> None:
    _, small = runs
    compact_spec = replace(spec, store_form="compact")
    for i in range(2):  # --shard i/2 (what each accelerate process runs before the barrier): no compaction
        evaluate(compact_spec, tmp_path / "out", store_dir=tmp_path / "store", shard=(i, 2), progress=False)
    shards = CaptureStore(tmp_path / "store", readonly=True)
    assert len(shards) == len(small.store) and not any(compact.is_compacted(e.meta) for e in shards)
    merged = evaluate(compact_spec, tmp_path / "out", store_dir=tmp_path / "store", progress=False)
    assert isinstance(merged, EvaluationResult)
    assert _files(tmp_path / "store") == _files(small.store.path)
    assert (tmp_path / "out" / "results.csv").read_bytes() == (small.out_dir / "results.csv").read_bytes()


def test_a_compacted_store_on_a_read_only_mount_is_scorable(runs, spec, tmp_path, monkeypatch, read_only) -> None:
    """Scoring a compacted store writes nothing to it (issue 19: a store on a read-only mount)."""
    full, small = runs
    store = tmp_path / "ro_store"
    shutil.copytree(small.store.path, store)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a model was loaded")
    monkeypatch.setattr("cfviz.evaluation.models.load_models", refuse)
    with read_only(store):
        evaluate(replace(spec, store_form="compact"), tmp_path / "out", store_dir=store, progress=False)
    assert (tmp_path / "out" / "results.csv").read_bytes() == (small.out_dir / "results.csv").read_bytes()
