"""CaptureStore.to_xarray: one stored tensor of chosen images, labelled, in xarray's own type."""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

import cfviz
from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.store import CaptureStore

IDS = ["gravel/test/good/000", "gravel/test/hole/000"]


@pytest.fixture(scope="module")
def store(pipe, tmp_path_factory):
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    prompt = build_prompt("gravel", "damage")
    with cfviz.capture(pipe, tokens=["damage"], prompt=prompt, features=["up_blocks.1"]) as cap:
        mapdiff_forward(pipe, images, prompt, timesteps=[100, 400], seed=11)
    s = CaptureStore(tmp_path_factory.mktemp("xr") / "s", {"model": "cfviz/tiny-inpaint", "timesteps": [100, 400]})
    s.add_rows(cap.cache, IDS, metadata=[{"label": 0}, {"label": 1}])
    return s


def _stored(store: CaptureStore, image_id: str, name: str) -> np.ndarray:
    return store[image_id][name].float().numpy()


def test_selection_by_label_is_the_stored_tensor(store):
    xr = pytest.importorskip("xarray")
    layer = store[IDS[0]].layers[-1]
    x = store.to_xarray(f"attn/{layer}")
    assert isinstance(x, xr.DataArray) and x.dims == ("image_id", "step", "token", "h", "w")
    assert x.dtype == np.float32 and x["image_id"].values.tolist() == IDS
    assert x["token"].values.tolist() == ["damage"] and x["timestep"].values.tolist() == [100.0, 400.0]
    by_t = x.swap_dims(step="timestep")
    for image_id in IDS:  # invariant: every label selection equals the stored tensor's slice
        stored = _stored(store, image_id, f"attn/{layer}")  # (S, K, h, w)
        assert np.array_equal(x.sel(image_id=image_id).values, stored)
        for s, t in enumerate([100.0, 400.0]):
            assert np.array_equal(by_t.sel(image_id=image_id, timestep=t, token="damage").values, stored[s, 0])
    feat = store.to_xarray("feat/up_blocks.1", [IDS[1]])
    assert feat.dims == ("image_id", "step", "channel", "h", "w") and feat["image_id"].values.tolist() == [IDS[1]]
    assert np.array_equal(feat.sel(image_id=IDS[1]).values, _stored(store, IDS[1], "feat/up_blocks.1"))
    one = store.to_xarray(f"attn/{layer}", IDS[1])  # one id as a string; the order asked is kept
    assert one["image_id"].values.tolist() == [IDS[1]] and np.array_equal(one.values, x.values[1:])
    assert store.to_xarray(f"attn/{layer}", IDS[::-1])["image_id"].values.tolist() == IDS[::-1]


def test_attrs_name_the_tensor_and_the_store(store, tmp_path):
    xr = pytest.importorskip("xarray")
    x = store.to_xarray("feat/up_blocks.1")
    assert x.attrs["tensor"] == "feat/up_blocks.1" and x.attrs["store"] == str(store.path)
    assert json.loads(x.attrs["config"]) == store.config
    assert json.loads(x.attrs["capture"]) == store.header["capture"]
    assert all(isinstance(v, str) for v in x.attrs.values())  # what netCDF and Zarr writers take
    if importlib.util.find_spec("scipy") or importlib.util.find_spec("netCDF4"):
        x.to_netcdf(tmp_path / "maps.nc")
        back = xr.load_dataarray(tmp_path / "maps.nc")
        assert back.equals(x) and back.attrs == x.attrs


def test_kept_heads_get_their_own_dimension(tmp_path):
    pytest.importorskip("xarray")
    maps = torch.rand(2, 1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))  # (S, B, H, K, h, w)
    steps = [StepInfo(s, t, (0,), 1, (4, 4)) for s, t in enumerate([900.0, 500.0])]
    store = CaptureStore(tmp_path / "s", {"m": 1})
    store.add("a", CaptureCache(["up.attn2"], [], None, "all", settings={"heads": "all"}, steps=steps,
                                attention={"up.attn2": {s: maps[s] for s in range(2)}}))
    x = store.to_xarray("attn/up.attn2")
    assert x.dims == ("image_id", "step", "head", "token", "h", "w") and x["token"].values.tolist() == ["#0", "#1"]
    assert np.array_equal(x.sel(image_id="a", step=1, token="#1").values, maps[1, 0, :, 1].numpy())


def test_refusals_name_the_fix(store, monkeypatch):
    pytest.importorskip("xarray")
    with pytest.raises(ValueError, match="'attn/<layer>' or 'feat/<block>'"):
        store.to_xarray("clip/patch")
    with pytest.raises(KeyError, match="no tensors"):
        store.to_xarray("attn/no.such.layer")
    with pytest.raises(KeyError, match="is not in the store"):
        store.to_xarray("feat/up_blocks.1", ["nope"])
    with pytest.raises(ValueError, match="at least one image"):
        store.to_xarray("feat/up_blocks.1", [])
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    with pytest.raises(ImportError, match=r"CaptureStore.to_xarray needs the xarray package: pip install xarray"):
        store.to_xarray("feat/up_blocks.1")


def test_the_docstring_example_runs():
    pytest.importorskip("xarray")
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    (test,) = finder.find(CaptureStore.to_xarray, "CaptureStore.to_xarray", globs={"CaptureStore": CaptureStore})
    assert runner.run(test).failed == 0 and test.examples
