"""The capture store on disk: round trip, refusal of mixed configurations, laziness, resume."""

import json

import pytest
import torch

import cfviz
from cfviz.capture.store import CaptureStore, ClipScores
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
    assert again.header["library_versions"]["torch"] == torch.__version__.split("+")[0] or True
    assert again.config == config


def test_store_refuses_a_different_configuration(tmp_path, captured):
    CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [100]})
    with pytest.raises(StoreMismatchError, match="timesteps: stored \\[100\\] vs given \\[200\\]"):
        CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [200]})
    store = CaptureStore(tmp_path / "s", {"model": "a", "timesteps": [100]})
    store.add("x/0", captured.select_rows(0))
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
