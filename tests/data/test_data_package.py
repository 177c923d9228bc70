"""cfviz.data as a package: light import, lazy names, open_dataset, doctests."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
import tempfile

import pytest

import cfviz.data
from cfviz.errors import DatasetError

MODULES = ["cfviz.data", "cfviz.data.images", "cfviz.data.samples", "cfviz.data.mvtec", "cfviz.data.visa",
           "cfviz.data.textures", "cfviz.data.conformal", "cfviz.data.transforms"]


def test_import_is_light():
    code = ("import sys, json, cfviz.data; from cfviz.data import MVTecAD, VisA, TexturesDataset, "
            "ConformalTextiles, open_dataset, read_image; "
            "print(json.dumps(sorted(m for m in ('torch', 'matplotlib', 'pandas', 'diffusers', 'open_clip', "
            "'skimage') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_lazy_names_resolve():
    for name in cfviz.data.__all__:
        assert getattr(cfviz.data, name) is not None
    with pytest.raises(AttributeError):
        cfviz.data.not_a_name  # noqa: B018


def test_open_dataset_kinds(mvtec_root, visa_root, tmp_path, monkeypatch):
    assert type(cfviz.data.open_dataset("mvtec", mvtec_root, categories=["tile"])).__name__ == "MVTecAD"
    assert len(cfviz.data.open_dataset("folder", mvtec_root, split="train")) == 6
    assert len(cfviz.data.open_dataset("VisA", visa_root, categories="pcb1")) == 4
    monkeypatch.setenv("CFVIZ_DATA_DIR", str(tmp_path))
    ds = cfviz.data.open_dataset("textures", categories=["brick"], image_size=48, n_train=1, n_test_good=1,
                                 n_per_defect=1, categories_generated=["brick"])
    assert len(ds) == 5 and ds.root == tmp_path / "textures"
    assert len(cfviz.data.open_dataset("conformal", limit_per_type=1)) == 3


def test_open_dataset_errors():
    with pytest.raises(DatasetError, match="unknown data set kind 'coco'; valid kinds: conformal, folder, mvtec, "
                                           "textures, visa"):
        cfviz.data.open_dataset("coco")
    with pytest.raises(DatasetError, match="needs root="):
        cfviz.data.open_dataset("mvtec")


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files must not depend on the working directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # their mkdtemp() folders are cleaned up too
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
