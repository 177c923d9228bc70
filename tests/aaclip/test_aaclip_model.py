"""AA-CLIP model: plain-CLIP equivalence at lambda 0, save/load round trip, config validation."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.aaclip import AAClip, AAClipConfig
from cfviz.clip.aaclip.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))


def test_lambda_zero_reproduces_plain_clip(bundle, images):
    """With lambda = 0 and CLIP-initialised projections the adapted model is plain CLIP."""
    from cfviz.clip.scores import class_scores
    from cfviz.clip.text import text_anchors
    from cfviz.clip.windows import WindowEncoder

    cfg = AAClipConfig(text_lambda=0.0, image_lambda=0.0, init="clip", text_proj_relu=False, blur_sigma=0.0)
    model = AAClip(bundle, cfg, seed=5)
    seg, _ = model.encode_image(images)
    plain = WindowEncoder(bundle, scales=()).encode(images).patches
    assert torch.allclose(seg[-1], torch.nn.functional.normalize(plain, dim=-1), atol=1e-5)
    prompts = cfg.prompts.sentences("brick")
    ours = model.anchors("brick")[0]
    assert torch.allclose(ours, text_anchors(bundle, prompts=prompts, cache=False), atol=1e-5)
    # the last level map is a monotone transform of PatchCLIP's patch class score with the same anchors
    res = model.predict(images, "brick")
    p = res.level_maps[:, -1]
    expected = class_scores(plain, ours).reshape(p.shape)
    assert torch.allclose(torch.sigmoid((2 * p - 1) / cfg.logit_scale / 0.07), expected, atol=1e-4)
    # the same adapters at the paper's lambda change the maps (so the check above can fail)
    mixed = AAClip(bundle, AAClipConfig(init="clip", text_proj_relu=False), seed=5).predict(images, "brick")
    assert not torch.allclose(mixed.level_maps[:, 0], res.level_maps[:, 0], atol=1e-4)


def test_save_and_load_give_identical_maps(bundle, images, tmp_path):
    model = AAClip(bundle, seed=1)
    with torch.no_grad():  # move away from the seeded init so that a silent re-init would show
        for p in model.adapters.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    before = model.predict(images, ["brick", "grass"])
    path = model.save(tmp_path / "a.safetensors", metadata={"note": "test"})
    from cfviz.models import tiny_clip

    loaded = AAClip.load(path, tiny_clip(seed=0))
    after = loaded.predict(images, ["brick", "grass"])
    assert torch.equal(before.anomaly_map, after.anomaly_map)
    assert torch.equal(before.level_maps, after.level_maps)
    assert torch.equal(before.image_score, after.image_score)
    assert loaded.metadata["note"] == "test" and loaded.config == model.config
    with pytest.raises(CheckpointError, match="another CLIP"):
        AAClip.load(path, tiny_clip(seed=1))
    with pytest.raises(CheckpointError, match="no AA-CLIP checkpoint"):
        AAClip.load(tmp_path / "missing.safetensors", bundle)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        AAClip.load(tmp_path / "bad.safetensors", bundle)


def test_config_defaults_fit_the_model_and_bad_values_are_named(bundle):
    cfg = AAClipConfig().resolve(bundle)
    assert (cfg.text_adapter_blocks, cfg.image_adapter_blocks, cfg.levels) == (1, 1, (1, 2, 3, 4))
    with pytest.raises(ValueError, match="image_adapter_blocks=6 .* 4 blocks"):
        AAClip(bundle, AAClipConfig(image_adapter_blocks=6))
    with pytest.raises(ValueError, match="levels"):
        AAClip(bundle, AAClipConfig(levels=(2, 5)))
    with pytest.raises(ValueError, match="text_lambda"):
        AAClip(bundle, AAClipConfig(text_lambda=1.5))
    assert AAClipConfig.from_json(cfg.to_json()) == cfg


def test_predict_checks_class_names_and_images(bundle, images):
    model = AAClip(bundle)
    with pytest.raises(ValueError, match="one per image"):
        model.predict(images, ["brick"])
    with pytest.raises(ValueError, match="240"):
        model.predict(torch.zeros(1, 3, 64, 64), "brick")
