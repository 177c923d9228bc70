"""LabelledMaps.to_xarray: the same dims, coords and values in xarray's own type."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from cfviz.capture.labelled import LabelledMaps


def _maps() -> LabelledMaps:
    data = torch.randn(2, 3, 2, 4, 5, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    return LabelledMaps(data, ("step", "layer", "token", "h", "w"),
                        {"step": [0, 1], "layer": ["down.0", "mid", "up.1"], "token": ["damage", "crack"]},
                        {"timestep": ("step", [900, 261])})


def test_to_xarray_keeps_dims_coords_and_values():
    xr = pytest.importorskip("xarray")
    m = _maps()
    x = m.to_xarray()
    assert isinstance(x, xr.DataArray) and x.dims == m.dims and dict(x.sizes) == m.shape
    assert x.dtype == np.float32 and np.array_equal(x.values, m.numpy())
    for name, labels in m.coords.items():
        assert x[name].values.tolist() == labels
    assert x["timestep"].dims == ("step",) and x["timestep"].values.tolist() == [900, 261]
    # invariant: selecting by label then converting equals converting then selecting, for every coordinate
    for sel in ({"token": "crack"}, {"layer": ["up.1", "down.0"]}, {"step": 1}):
        want, got = m.sel(**sel).to_xarray(), x.sel(**sel)
        assert want.dims == got.dims and np.array_equal(want.values, got.values)
    by_t = x.swap_dims(step="timestep").sel(timestep=261)
    assert np.array_equal(by_t.values, m.sel(timestep=261).to_xarray().values)


def test_to_xarray_without_xarray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    with pytest.raises(ImportError, match="pip install xarray"):
        _maps().to_xarray()
