"""The capture store on disk: round trip, refusal of mixed configurations, laziness, resume,
damaged entries and their repair, layer order, and stores that name no time or machine."""

import json
import subprocess
import sys

import pytest
import torch

import cfviz
from cfviz.capture.store import CaptureStore, ClipScores, StoreDamagedError
from cfviz.errors import StoreMismatchError


@pytest.fixture(scope="module")
def captured(pipe):
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    prompt = build_prompt("gravel", "damage")
    with cfviz.capture(pipe, tokens=["damage"], prompt=prompt, features=["up_blocks.1"],
                       metadata={"seed": 11}) as cap:
        mapdiff_forward(pipe, images, prompt, timesteps=[100, 400], seed=11)
    return cap.cache


def test_store_round_trip_tensors_and_metadata(tmp_path, captured):
    config = {"model": "cfviz/tiny-inpaint", "timesteps": [100, 400], "prompt": "template"}
    store = CaptureStore(tmp_path / "s", config)
    clip = ClipScores(image=0.25, patch=torch.rand(15, 15), windows={2: torch.rand(196)},
                      window_boxes={2: torch.zeros(196, 4, dtype=torch.int32)}, maps={"language": torch.rand(15, 15)})
    store.add("gravel/test/hole/000", captured.select_rows(0), clip=clip, metadata={"label": 1})
    store.add_rows(captured, ["gravel/test/good/000", "gravel/test/good/001"],
                   metadata=[{"label": 0}, {"label": 0}])

    again = CaptureStore(tmp_path / "s", readonly=True)
    assert again.ids == ["gravel/test/good/000", "gravel/test/good/001", "gravel/test/hole/000"]
    entry = again["gravel/test/hole/000"]
    cache = entry.cache()
    for name in captured.layers:
        for step in (0, 1):
            assert torch.equal(cache.attention[name][step][0], captured.attention[name][step][0])
    assert torch.equal(cache.features["up_blocks.1"][1][0], captured.features["up_blocks.1"][1][0])
    assert cache.timesteps == captured.timesteps == [100.0, 400.0]
    assert cache.labels == ["damage"] and cache.tokens.token_ids == captured.tokens.token_ids
    assert entry.metadata == {"seed": 11, "label": 1}
    got = entry.clip()
    assert torch.equal(got.patch, clip.patch) and torch.equal(got.windows[2], clip.windows[2])
    assert float(got.image) == 0.25 and set(got.maps) == {"language"}
    second = again["gravel/test/good/001"].cache()
    assert torch.equal(second.attention[captured.layers[0]][0][0], captured.attention[captured.layers[0]][0][1])
    frame = again.index()
    assert list(frame["label"]) == [0, 0, 1] and list(frame["n_steps"]) == [2, 2, 2]
    import importlib.metadata
    assert again.header["library_versions"]["torch"] == importlib.metadata.version("torch")
    assert again.config == config


def test_store_refuses_a_different_configuration(tmp_path, captured):
    CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [100]}).add("x/0", captured.select_rows(0))
    with pytest.raises(StoreMismatchError, match=r"timesteps: \[100\] -> \[200\]"):
        CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [200]})
    store = CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [100]})
    other = captured.select_rows(1)
    other.settings = {**other.settings, "heads": "all"}
    with pytest.raises(StoreMismatchError, match="capture settings"):
        store.add("x/1", other)
    assert store.ids == ["x/0"]


def test_reopening_is_lazy(tmp_path, captured, monkeypatch):
    store = CaptureStore(tmp_path / "s", {"m": 1})
    for i in range(5):
        store.add(f"img/{i}", captured.select_rows(i % 2))
    import safetensors

    opened = []
    real = safetensors.safe_open

    def counting(path, *a, **k):
        opened.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(safetensors, "safe_open", counting)
    again = CaptureStore(tmp_path / "s", readonly=True)
    assert len(again) == 5 and again["img/3"].timesteps == [100.0, 400.0]
    assert opened == []  # listing and metadata never read tensors
    name = f"attn/{captured.layers[0]}"
    one = again["img/3"].load(name)
    assert list(one) == [name] and len(opened) == 1


def test_resume_and_atomicity(tmp_path, captured):
    store = CaptureStore(tmp_path / "s", {"m": 1})
    ids = [f"img/{i}" for i in range(4)]
    store.add(ids[0], captured.select_rows(0))
    # an interrupted write leaves a tensors file without its JSON: not an entry, redone on resume
    (tmp_path / "s" / "entries" / "orphan.safetensors").write_bytes(b"partial")
    again = CaptureStore(tmp_path / "s", {"m": 1})
    assert again.missing(ids) == ids[1:]
    with pytest.raises(FileExistsError):
        again.add(ids[0], captured.select_rows(0))
    again.add(ids[0], captured.select_rows(1), overwrite=True)
    assert not list((tmp_path / "s" / "entries").glob("*.tmp"))
    meta = json.loads(next((tmp_path / "s" / "entries").glob("img__0-*.json")).read_text())
    assert meta["image_id"] == "img/0" and meta["nbytes"] > 0


def test_store_rejects_batched_cache_and_foreign_folder(tmp_path, captured):
    store = CaptureStore(tmp_path / "s", {})
    with pytest.raises(ValueError, match="one image per entry"):
        store.add("a", captured)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "store.json").write_text('{"format": "other"}')
    with pytest.raises(StoreMismatchError, match="not a cfviz capture store"):
        CaptureStore(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="no capture store"):
        CaptureStore(tmp_path / "nothing", readonly=True)


def test_refusal_names_only_the_differing_settings_old_to_new(tmp_path, captured):
    config = {"models": {"clip": "tiny", "seed": 0, "dtype": "float32"}, "batch_size": 1,
              "extraction": {"timesteps": list(range(0, 1000, 10)), "prompt": "a photo of a {object}"}}
    CaptureStore(tmp_path / "s", config).add("x/0", captured.select_rows(0))
    other = {**config, "batch_size": 3, "models": {**config["models"], "dtype": "float16"}}
    with pytest.raises(StoreMismatchError) as err:
        CaptureStore(tmp_path / "s", other)
    message = str(err.value)
    assert "batch_size: 1 -> 3" in message and 'models.dtype: "float32" -> "float16"' in message
    assert message.count("->") == 2 and "timesteps" not in message and "--store" in message


def test_header_is_written_with_the_first_entry(tmp_path, captured):
    """Opening a store claims nothing: a run that fails before its first entry leaves no header."""
    CaptureStore(tmp_path / "s", {"model": "a"})
    assert not (tmp_path / "s" / "store.json").exists()
    store = CaptureStore(tmp_path / "s", {"model": "b"})  # not refused: nothing was written
    store.add("x/0", captured.select_rows(0))
    assert json.loads((tmp_path / "s" / "store.json").read_text())["config"] == {"model": "b"}
    assert CaptureStore(tmp_path / "s", readonly=True).ids == ["x/0"]


def test_files_hold_no_time_or_machine_and_rebuild_byte_identical(tmp_path, captured):
    def build(folder):
        store = CaptureStore(folder, {"model": "a"})
        store.add("x/1", captured.select_rows(1), metadata={"label": 1})
        store.add("x/0", captured.select_rows(0), metadata={"label": 0})
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert a == b
    text = b"".join(v for k, v in a.items() if k.endswith(".json"))
    assert str(tmp_path).encode() not in text and b"written" not in text and b"created" not in text


def test_reopened_store_keeps_capture_order_of_layers_and_blocks(tmp_path, captured):
    row = captured.select_rows(0)
    # capture order is whatever the cache says; use one that is surely not alphabetical
    row.layers = sorted(row.layers, reverse=True)
    store = CaptureStore(tmp_path / "s", {})
    store.add("x/0", row)
    entry = CaptureStore(tmp_path / "s", readonly=True)["x/0"]
    assert len(row.layers) > 1
    assert entry.cache().layers == row.layers and entry.cache().blocks == row.blocks
    assert entry.layers == row.layers


def test_damaged_entries_are_named_and_repair_deletes_them(tmp_path, captured):
    store = CaptureStore(tmp_path / "s", {"m": 1})
    for i in range(3):
        store.add(f"img/{i}", captured.select_rows(i % 2))
    entries = tmp_path / "s" / "entries"
    truncated = next(entries.glob("img__2-*.json"))
    truncated.write_text(truncated.read_text()[:30])
    with pytest.raises(StoreDamagedError, match=r"img__2-.*\.json is not valid JSON.*--repair"):
        len(CaptureStore(tmp_path / "s", {"m": 1}))
    garbage = next(entries.glob("img__0-*.safetensors"))
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(StoreDamagedError, match=r"'img/0' is damaged: .*img__0-.*\.safetensors has 22 bytes.*--repair"):
        CaptureStore(tmp_path / "s", {"m": 1}).missing(["img/0"])

    repaired = CaptureStore(tmp_path / "s", {"m": 1}, repair=True)
    assert repaired.missing(["img/0", "img/1", "img/2"]) == ["img/0", "img/2"]
    assert sorted(repaired.repaired) == sorted([garbage.name, garbage.with_suffix(".json").name,
                                                truncated.name, truncated.with_suffix(".safetensors").name])
    assert sorted(p.name[:6] for p in entries.iterdir()) == ["img__1", "img__1"]
    repaired.add("img/0", captured.select_rows(0))  # recomputed
    assert len(CaptureStore(tmp_path / "s", {"m": 1})) == 2


def test_same_size_damage_is_caught_when_reading_and_by_repair(tmp_path, captured):
    store = CaptureStore(tmp_path / "s", {"m": 1})
    store.add("img/0", captured.select_rows(0))
    path = next((tmp_path / "s" / "entries").glob("*.safetensors"))
    path.write_bytes(b"\xff" * path.stat().st_size)  # same size: only reading (or a digest) shows it
    with pytest.raises(StoreDamagedError, match=r"'img/0' is damaged: .*cannot be read.*--repair"):
        CaptureStore(tmp_path / "s", {"m": 1})["img/0"].cache()
    assert CaptureStore(tmp_path / "s", {"m": 1}, repair=True).ids == []


def test_temporary_files_of_killed_writers_are_removed(tmp_path, captured):
    store = CaptureStore(tmp_path / "s", {"m": 1})
    store.add("img/0", captured.select_rows(0))
    entries = tmp_path / "s" / "entries"
    code = ("import os, sys; from cfviz.utils.io import atomic_path\n"
            "tmp = atomic_path(sys.argv[1]).__enter__(); tmp.write_bytes(b'partial'); os._exit(1)")
    subprocess.run([sys.executable, "-c", code, str(entries / "img__1-x.json")], check=False)
    assert len(list(entries.glob(".*.tmp"))) == 1
    # a live writer's temporary file (this process) is left alone: shards share the folder
    from cfviz.utils.io import atomic_path

    with atomic_path(entries / "live.json") as live:
        live.write_bytes(b"in progress")
        CaptureStore(tmp_path / "s", {"m": 1})
        assert list(entries.glob(".*.tmp")) == [live]
    assert not list(entries.glob(".*.tmp"))
    CaptureStore(tmp_path / "s", readonly=True)  # read-only opens never delete


def test_reopened_entry_keeps_the_text_stream_labels(tmp_path, captured):
    """SD3/FLUX selections record which text stream (CLIP, T5) each word came from; a store keeps it."""
    from dataclasses import replace

    row = captured.select_rows(0)
    labelled = replace(row, tokens=replace(row.tokens, streams=(("clip", "t5"),)))
    store = CaptureStore(tmp_path / "s", {"model": "x"})
    store.add("gravel/test/hole/000", labelled)
    tokens = CaptureStore(tmp_path / "s", readonly=True)["gravel/test/hole/000"].cache().tokens
    assert tokens.streams == (("clip", "t5"),)
    assert tokens == labelled.tokens
