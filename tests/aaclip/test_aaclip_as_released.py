"""AA-CLIP computes what the authors' released code computes (issue 23), each released behaviour
checked against an independent re-statement of the released code (github.com/Mwxinnn/AA-CLIP at
53db195f), with cfviz's earlier behaviour kept as a named alternative.

Tiny random-weight CLIPs: the numbers show that the computations agree, not detection quality.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cfviz.clip.aaclip import AAClip, AAClipConfig, TrainConfig
from cfviz.models import tiny_clip


def released_metrics_eval_scores(pixel_preds: np.ndarray, image_preds: np.ndarray) -> np.ndarray:
    """The image scores of the released ``metrics_eval`` (industrial domain), restated."""
    if pixel_preds.max() != 1:
        pixel_preds = (pixel_preds - pixel_preds.min()) / (pixel_preds.max() - pixel_preds.min())
    if image_preds.max() != 1:
        image_preds = (image_preds - image_preds.min()) / (image_preds.max() - image_preds.min())
    return pixel_preds.max(axis=(1, 2)) * 0.5 + image_preds * 0.5


# ---------------------------------------------------------------------------------------- 1. image score
def test_the_image_score_normalises_over_all_pixels_the_minimal_case() -> None:
    """Issue 23's case: cfviz min-max normalised the per-image peaks ([.5, .5, .464])."""
    from cfviz.clip.aaclip.model import released_image_scores
    from cfviz.evaluation.aaclip_branch import image_scores

    maps = np.array([[[0.0, 1.0]], [[0.5, 0.6]], [[0.1, 0.8]]])
    scores = np.array([0.2, 0.9, 0.5])
    assert np.allclose(released_image_scores(maps, scores), [0.5, 0.8, 0.614], atol=5e-4)
    assert np.allclose(image_scores(maps, scores), [0.5, 0.8, 0.614], atol=5e-4)  # --clip-branch aaclip / aaclip


def test_the_image_score_is_the_released_rule_on_any_maps() -> None:
    """Invariant: equal to the released metrics_eval on random pixel maps, and on patch-grid maps given a
    size, to metrics_eval of the maps upsampled as the release does (bilinear, align_corners=True)."""
    from cfviz.clip.aaclip.model import released_image_scores

    rng = np.random.default_rng(0)
    for n, h in ((5, 7), (40, 3)):  # 40 images: more than one chunk of 16
        maps = rng.normal(size=(n, h, h)) * rng.uniform(0.5, 3, size=(n, 1, 1)) + rng.normal(size=(n, 1, 1))
        scores = rng.uniform(size=n)
        want = released_metrics_eval_scores(maps.copy(), scores.copy())
        assert np.allclose(released_image_scores(maps, scores), want, atol=1e-6)
        up = F.interpolate(torch.from_numpy(maps).float()[:, None], size=(29, 29), mode="bilinear",
                           align_corners=True)[:, 0].double().numpy()
        want_up = released_metrics_eval_scores(up, scores.copy())
        assert np.allclose(released_image_scores(maps, scores, size=29), want_up, atol=1e-6)
    # as released, maps whose maximum is exactly 1 count as normalised already
    maps = np.array([[[0.2, 1.0]], [[0.4, 0.6]]])
    assert np.allclose(released_image_scores(maps, np.array([0.0, 1.0])), [0.5, 0.8], atol=1e-6)  # not .75
    assert np.allclose(released_metrics_eval_scores(maps, np.array([0.0, 1.0])), [0.5, 0.8])
    assert released_image_scores(np.zeros((0, 2, 2)), np.zeros(0)).shape == (0,)


# ---------------------------------------------------------------------------------------- 2. map upsampling
def test_maps_are_upsampled_with_aligned_corners_unless_told_otherwise() -> None:
    from cfviz.clip.aaclip.model import upsample_maps
    from cfviz.errors import ConfigError

    maps = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(maps[:, None], size=(37, 37), mode="bilinear", align_corners=True)[:, 0]
    ours = F.interpolate(maps[:, None], size=(37, 37), mode="bilinear", align_corners=False)[:, 0]
    assert np.allclose(upsample_maps(maps.numpy(), 37), want.numpy(), atol=1e-6)
    assert np.allclose(upsample_maps(maps.numpy(), 37, "half_pixel"), ours.numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="align_corners"):
        upsample_maps(maps.numpy(), 37, "nearest")


@pytest.fixture(scope="module")
def aaclip_run(tmp_path_factory: pytest.TempPathFactory):
    """A run with AA-CLIP adapters on the tiny CLIP: its store, spec and the brick data set."""
    from cfviz.data import open_dataset
    from cfviz.evaluation import aaclip_branch
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig

    tmp = tmp_path_factory.mktemp("aaclip-run")
    brick = open_dataset("textures", tmp / "tex", image_size=64, n_train=1, n_test_good=2, n_per_defect=1,
                         categories_generated=("brick",))
    path, digest = aaclip_branch.resolve_checkpoint(str(AAClip(tiny_clip(seed=0), seed=0).save(tmp / "a.safetensors")))
    spec = RunSpec(dataset="textures", methods=("aaclip",), categories=("brick",),
                   models=ModelChoice(clip="tiny", diffusion="tiny"),
                   extraction=ExtractionConfig(timesteps=(500,), aaclip=path, aaclip_sha256=digest),
                   scoring=ScoringConfig(eval_size=32, smoothing="own", image_score="own"))  # AA-CLIP as released: its own rule
    ev = importlib.import_module("cfviz.evaluation.runner")
    mp = pytest.MonkeyPatch()
    mp.setattr(ev, "open_run_dataset", lambda s: brick)
    try:
        result = ev.evaluate(spec, tmp / "run", progress=False)
    finally:
        mp.undo()
    return result.store, spec, brick


def test_scoring_upsamples_aaclip_as_released_and_scores_its_pixel_maps(aaclip_run) -> None:
    """Method aaclip and --clip-branch aaclip: the map is F.interpolate(..., align_corners=True) of the stored
    patch-grid map, and the image score is the released rule over those pixel maps."""
    from dataclasses import replace

    from cfviz.evaluation import aaclip_branch
    from cfviz.evaluation.scoring import predict

    store, spec, brick = aaclip_run
    ids = [r.image_id for r in brick.records if r.split == "test"]
    grid, det = aaclip_branch.stored(store, ids)
    up = F.interpolate(torch.from_numpy(grid)[:, None], size=(32, 32), mode="bilinear",
                       align_corners=True)[:, 0].numpy()
    a = predict(store, brick, "brick", "aaclip", scoring=spec.scoring, extraction=spec.extraction)
    assert np.allclose(a.maps, up, atol=1e-6)
    assert np.allclose(a.scores, released_metrics_eval_scores(up.astype(np.float64), det.astype(np.float64)),
                       atol=1e-6)
    # the CLIP branch of patchclip/clipfusion takes the same image score
    p = predict(store, brick, "brick", "patchclip", scoring=replace(spec.scoring, clip_branch="aaclip"),
                extraction=spec.extraction)
    assert np.allclose(p.component_scores["clip"], (a.scores - a.scores.min()) / np.ptp(a.scores), atol=1e-6)
    # ours, as a named choice: align_corners=False
    h = predict(store, brick, "brick", "aaclip", scoring=replace(spec.scoring, aaclip_upsample="half_pixel"),
                extraction=spec.extraction)
    ours = F.interpolate(torch.from_numpy(grid)[:, None], size=(32, 32), mode="bilinear",
                         align_corners=False)[:, 0].numpy()
    assert np.allclose(h.maps, ours, atol=1e-6) and not np.allclose(h.maps, a.maps, atol=1e-4)


def test_the_upsampling_flag_reaches_the_scoring_settings() -> None:
    import argparse

    from cfviz.commands.evaluate import add_run_arguments, spec_from_args
    from cfviz.errors import ConfigError
    from cfviz.evaluation.config import ScoringConfig

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    assert spec_from_args(p.parse_args([])).scoring.aaclip_upsample == "align_corners"
    assert spec_from_args(p.parse_args(["--aaclip-upsample", "half_pixel"])).scoring.aaclip_upsample == "half_pixel"
    with pytest.raises(ConfigError) as err:
        ScoringConfig(aaclip_upsample="bicubic")
    assert err.value.field == "scoring.aaclip_upsample"


# ---------------------------------------------------------------------------------------- 3. training losses
def _manual_seg_loss(logits: torch.Tensor, masks: torch.Tensor, align_corners: bool) -> torch.Tensor:
    from cfviz.clip.aaclip.losses import dice_loss, focal_loss

    probs = F.interpolate(logits, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=align_corners)
    probs = probs.softmax(dim=1)
    m = (masks > 0.5).float()
    return focal_loss(probs, m) + dice_loss(probs[:, 0], 1 - m) + dice_loss(probs[:, 1], m)


def test_the_losses_upsample_with_aligned_corners(textures, bundle) -> None:
    from cfviz.clip.aaclip.data import load_batch, training_records
    from cfviz.clip.aaclip.losses import disentangle_loss, segmentation_loss
    from cfviz.clip.aaclip.train import frozen_patch_features, stage1_loss, stage2_loss

    g = torch.Generator().manual_seed(0)
    logits, masks = torch.randn(2, 2, 5, 5, generator=g) * 3, (torch.rand(2, 40, 40, generator=g) > 0.7).float()
    released = _manual_seg_loss(logits, masks, True)
    assert torch.allclose(segmentation_loss(logits, masks), released, atol=1e-6)
    assert torch.allclose(segmentation_loss(logits, masks, align_corners=False), _manual_seg_loss(logits, masks, False))
    assert not torch.allclose(released, _manual_seg_loss(logits, masks, False), atol=1e-5)

    images, masks, labels, names = load_batch(textures, training_records(textures, shots=2, seed=0), 240)
    model = AAClip(bundle, seed=0)
    with torch.no_grad():
        train = TrainConfig()
        anchors = model.anchors(names, cache=False)
        feats = frozen_patch_features(model, images, train)
        want1 = _manual_seg_loss(model.similarity(feats[-1], anchors), masks, True) + train.gamma * \
            disentangle_loss(anchors)
        assert torch.allclose(stage1_loss(model, images, masks, labels, names, train, features=feats)[0], want1,
                              atol=1e-5)
        logits2, det = model.forward(images, anchors)
        seg2 = sum(_manual_seg_loss(s, masks, True) for s in logits2)
        cls2 = F.cross_entropy(torch.einsum("bd,bkd->bk", det, anchors), labels)
        assert torch.allclose(stage2_loss(model, images, masks, labels, anchors)[0], seg2 + cls2, atol=1e-5)
        ours = stage1_loss(model, images, masks, labels, names, TrainConfig(align_corners=False), features=feats)[0]
        assert not torch.allclose(ours, want1, atol=1e-7)


# ---------------------------------------------------------------------------------------- 4. surgery attention
def _released_surgery_block(block, x_bf: torch.Tensor) -> torch.Tensor:
    """The released DPAM block, restated: its Attention gets (L, N, D) tokens and reads them as (B, N, C)."""
    x = x_bf.transpose(0, 1)  # the released VisionTransformer permutes NLD -> LND before the blocks
    attn = block.attn
    h = block.ln_1(x)
    b, n, c = h.shape  # b = tokens, n = images
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).reshape(b, n, 3, heads, c // heads)
    v = qkv.permute(2, 0, 3, 1, 4)[2]  # (tokens, heads, images, d)
    a = ((v @ v.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    y = attn.out_proj((a @ v).transpose(1, 2).reshape(b, n, c))
    x = x + y
    x = x + block.mlp(block.ln_2(x))
    return x.transpose(0, 1)


def test_surgery_attention_mixes_the_batch_as_released_and_per_image_is_a_choice(bundle) -> None:
    from cfviz.clip.aaclip.encoders import vv_block
    from cfviz.clip.aaclip.train import frozen_patch_features

    block = bundle.model.visual.transformer.resblocks[-1]
    x = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        released = _released_surgery_block(block, x)
        assert torch.allclose(vv_block(block, x), released, atol=1e-5)  # the default axis is the released one
        per_image = vv_block(block, x, axis="tokens")
        assert not torch.allclose(per_image, released, atol=1e-3)  # a batch of 2 where the two forms differ
        assert torch.allclose(vv_block(block, x[:1], axis="tokens"), per_image[:1], atol=1e-5)

    model = AAClip(bundle, seed=0)
    images = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1))
    train = TrainConfig(surgery_blocks=2)
    assert train.surgery_attention == "released"
    pair = frozen_patch_features(model, images, train)
    alone = frozen_patch_features(model, images[:1], train)
    assert not torch.allclose(pair[-1][:1], alone[-1], atol=1e-4)  # released: image 0 depends on image 1
    mine = TrainConfig(surgery_blocks=2, surgery_attention="per-image")
    assert torch.allclose(frozen_patch_features(model, images, mine)[-1][:1],
                          frozen_patch_features(model, images[:1], mine)[-1], atol=1e-5)
    with pytest.raises(ValueError, match="surgery_attention"):
        TrainConfig(surgery_attention="tokens").validate()


# ---------------------------------------------------------------------------------------- 5. activation
def _with_quick_gelu(bundle):
    """The bundle as open_clip builds it from the `openai` tag: the same weights, QuickGELU in every MLP."""
    from open_clip.transformer import QuickGELU

    for tower in (bundle.model.visual.transformer, bundle.model.transformer):
        for blk in tower.resblocks:
            blk.mlp.gelu = QuickGELU()
    return bundle


def test_aaclip_runs_exact_gelu_however_the_clip_was_built() -> None:
    gelu, quick = tiny_clip(seed=0), _with_quick_gelu(tiny_clip(seed=0))
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    a, b = AAClip(gelu, seed=0).predict(x, "brick"), AAClip(quick, seed=0).predict(x, "brick")
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.image_score, b.image_score)

    from cfviz.clip.aaclip.encoders import model_activation
    from cfviz.evaluation.aaclip_branch import identity

    assert model_activation(quick.model) == "quick_gelu"  # the CLIP itself is left as it was built
    own = AAClip(quick, AAClipConfig(activation="model"), seed=0)
    assert not torch.allclose(own.predict(x, "brick").anomaly_map, a.anomaly_map, atol=1e-5)
    assert identity(AAClip(quick, seed=0)) == {"activation": "gelu"} and identity(own) == {"activation": "quick_gelu"}
    assert torch.allclose(AAClip(gelu, AAClipConfig(activation="quick_gelu"), seed=0).predict(x, "brick").anomaly_map,
                          own.predict(x, "brick").anomaly_map)
    # checkpoints written before the setting ran with the CLIP's own activation, and keep doing so
    old = AAClipConfig().resolve(gelu).to_json()
    del old["activation"]
    assert AAClipConfig.from_json(old).activation == "model"
    from cfviz.errors import ConfigError

    with pytest.raises(ConfigError, match="activation"):
        AAClip(gelu, AAClipConfig(activation="relu"))


def test_the_store_records_the_activation_aaclip_ran_with(aaclip_run) -> None:
    store, _, _ = aaclip_run
    header = json.loads((Path(store.path) / "store.json").read_text())
    assert header["aaclip"] == {"activation": "gelu"}


# ---------------------------------------------------------------------------------------- 6. smaller
def test_augmentation_resamples_images_by_nearest_neighbour_as_released() -> None:
    from cfviz.clip.aaclip.data import augment

    g = torch.Generator().manual_seed(0)
    images, masks = torch.randn(8, 3, 16, 16, generator=g), (torch.rand(8, 16, 16, generator=g) > 0.5).float()
    out, out_mask = augment(images, masks, torch.Generator().manual_seed(1), p=1.0)
    values = set(images.reshape(-1).tolist()) | {0.0}
    assert set(out.reshape(-1).tolist()) <= values  # nearest: only input values (or the zero fill)
    assert set(out_mask.reshape(-1).tolist()) <= {0.0, 1.0}
    bil, _ = augment(images, masks, torch.Generator().manual_seed(1), p=1.0, interpolation="bilinear")
    assert not set(bil.reshape(-1).tolist()) <= values
    with pytest.raises(ValueError, match="interpolation"):
        augment(images, masks, g, interpolation="bicubic")


def test_the_released_names_of_mpdd_btad_and_the_medical_sets() -> None:
    from cfviz.clip.aaclip.names import prompt_name

    assert prompt_name("bracket_white") == "white, elongated triangular metal bracket with a smooth, matte finish"
    assert prompt_name("metal plate") == "blue rectangular metal plate with a notch on one side"
    assert prompt_name("02") == "vertical fabric lines in warm, dusty pink and beige tones"
    assert prompt_name("Brain") == "scan" and prompt_name("CVC-300") == "colon endoscopy image"
    assert prompt_name("Colon_clinicDB") == "colon endoscopy image" and prompt_name("02", "plain") == "02"


def test_training_settings_default_to_the_release_and_older_runs_keep_theirs() -> None:
    t = TrainConfig()
    assert (t.surgery_attention, t.align_corners, t.augment_interpolation) == ("released", True, "nearest")
    old = {k: v for k, v in t.to_json().items() if k not in ("surgery_attention", "align_corners",
                                                              "augment_interpolation")}
    legacy = TrainConfig.from_json(old)
    assert (legacy.surgery_attention, legacy.align_corners, legacy.augment_interpolation) == \
        ("per-image", False, "bilinear")


def test_the_cli_takes_the_released_alternatives(textures, tmp_path) -> None:
    from cfviz.clip.aaclip.checkpoint import read_checkpoint
    from cfviz.commands.train_aaclip import main

    rc = main(["--dataset", "folder", "--root", str(textures.root), "--categories", "brick", "--shots", "2",
               "--stage1-epochs", "1", "--stage2-epochs", "0", "--max-batches", "1", "--surgery-attention",
               "per-image", "--half-pixel-upsampling", "--augment-interpolation", "bilinear", "--activation", "model",
               "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    _, meta = read_checkpoint(tmp_path / "run" / "aaclip.safetensors")
    train, config = json.loads(meta["train_config"]), json.loads(meta["config"])
    assert (train["surgery_attention"], train["align_corners"], train["augment_interpolation"]) == \
        ("per-image", False, "bilinear")
    assert config["activation"] == "model"


def test_a_run_written_before_these_settings_resumes_only_with_the_settings_it_trained_with(textures, tmp_path):
    from cfviz.clip.aaclip.checkpoint import CheckpointError, read_checkpoint
    from cfviz.clip.aaclip.train import train_aaclip
    from cfviz.utils.io import save_safetensors

    small = dict(shots=2, stage1_epochs=1, stage2_epochs=0, stage1_batch_size=2, max_batches=1, seed=3)
    old = dict(surgery_attention="per-image", align_corners=False, augment_interpolation="bilinear")
    first = train_aaclip(tiny_clip(seed=0), textures, tmp_path / "run", config=AAClipConfig(activation="model"),
                         train=TrainConfig(**small, **old), progress=False)
    path = first.checkpoints[0]
    tensors, meta = read_checkpoint(path)
    train, config = json.loads(meta["train_config"]), json.loads(meta["config"])
    for key in old:
        del train[key]
    del config["activation"]
    save_safetensors(path, tensors, {**meta, "train_config": json.dumps(train), "config": json.dumps(config)})
    more = {**small, "stage1_epochs": 2}
    with pytest.raises(CheckpointError, match="align_corners, augment_interpolation, surgery_attention"):
        train_aaclip(tiny_clip(seed=0), textures, tmp_path / "run", config=AAClipConfig(activation="model"),
                     train=TrainConfig(**more), progress=False)
    with pytest.raises(CheckpointError, match="another AA-CLIP config"):
        train_aaclip(tiny_clip(seed=0), textures, tmp_path / "run", train=TrainConfig(**more, **old), progress=False)
    resumed = train_aaclip(tiny_clip(seed=0), textures, tmp_path / "run", config=AAClipConfig(activation="model"),
                           train=TrainConfig(**more, **old), progress=False)
    assert resumed.resumed_from == path and resumed.epochs_run == 1
