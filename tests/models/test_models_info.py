"""model_info: provenance for everything cfviz loads, JSON-ready."""

from __future__ import annotations

import json

import pytest

from cfviz.models import make_info, model_info
from cfviz.models.info import INFO_KEYS


def test_clip_bundle_info(tiny_clip0) -> None:
    info = model_info(tiny_clip0)
    assert set(INFO_KEYS) <= set(info)
    assert (info["kind"], info["library"], info["name"]) == ("clip", "open_clip", "cfviz-tiny-clip")
    assert (info["weights"], info["seed"], info["revision"], info["source"]) == ("random", 0, None, "config")
    assert info == tiny_clip0.info() == {**tiny_clip0.model.cfviz_info, **info}
    json.dumps(info)  # stores write it as JSON


def test_pipeline_and_unet_info(tiny_pipe) -> None:
    for obj, kind in ((tiny_pipe, "inpaint_pipeline"), (tiny_pipe.unet, "unet")):
        info = model_info(obj)
        assert set(INFO_KEYS) <= set(info) and info["kind"] == kind
        json.dumps(info)
    info = model_info(tiny_pipe)
    info["seed"] = 99  # a copy: callers cannot corrupt the attached record
    assert model_info(tiny_pipe)["seed"] == 0


def test_foreign_objects() -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, layers_per_block=1, attention_head_dim=2, sample_size=8)
    unet.register_to_config(_name_or_path="someone/some-unet")
    info = model_info(unet)
    assert (info["name"], info["weights"], info["kind"]) == ("someone/some-unet", "unknown", "UNet2DConditionModel")
    with pytest.raises(TypeError, match="ClipBundle"):
        model_info(object())


def test_make_info_validates() -> None:
    common = dict(kind="unet", library="diffusers", name="x", revision=None, source="config", dtype="float32",
                  device="cpu")
    with pytest.raises(ValueError, match="weights"):
        make_info(weights="trained", seed=None, **common)
    with pytest.raises(ValueError, match="seed"):
        make_info(weights="random", seed=None, **common)
    with pytest.raises(ValueError, match="seed"):
        make_info(weights="pretrained", seed=3, **common)
    assert make_info(weights="random", seed=3, extra_field=1, **common)["extra_field"] == 1
