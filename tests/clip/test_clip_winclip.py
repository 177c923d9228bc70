"""WinCLIP (zero-shot) and WinCLIP+ (k-shot) on the tiny random-weight CLIP.

Numbers from random weights show that the computation follows the published equations, not
how well WinCLIP detects anomalies.
"""

from __future__ import annotations

import pytest
import torch

from cfviz.capture.store import CaptureStore
from cfviz.clip.base import NotFittedError
from cfviz.clip.text import text_anchors
from cfviz.clip.winclip import WinCLIP, combine_maps
from cfviz.clip.windows import WindowEncoder

CLASS = "bottle"


def _softmax_score(emb, anchors, tau=0.07):
    """Equation (1) written as a softmax (the module uses the equivalent sigmoid)."""
    cos = torch.nn.functional.normalize(emb, dim=-1) @ anchors.T
    return torch.softmax(cos / tau, dim=-1)[..., 1]


def _harmonic_by_boxes(scores, boxes, grid=(15, 15)):
    """Independent harmonic aggregation: accumulate reciprocals box by box."""
    inv = torch.zeros(scores.shape[0], *grid, dtype=torch.float64)
    count = torch.zeros(grid, dtype=torch.float64)
    for k, (r, c, h, w) in enumerate(boxes.tolist()):
        inv[:, r:r + h, c:c + w] += 1.0 / scores[:, k:k + 1, None].double()
        count[r:r + h, c:c + w] += 1
    return torch.where(count > 0, count / inv, torch.zeros(()))


def _max_cos(queries, refs):
    q = torch.nn.functional.normalize(queries.double(), dim=-1)
    r = torch.nn.functional.normalize(refs.double(), dim=-1)
    return (q @ r.T).amax(dim=-1)


@pytest.fixture(scope="module")
def zero_shot(tiny_bundle, images):
    model = WinCLIP(tiny_bundle, class_name=CLASS)
    return model, model.predict(images)


def test_zero_shot_shapes_and_range(zero_shot, images):
    model, res = zero_shot
    assert res.image_score.shape == (3,) and res.anomaly_map.shape == (3, 15, 15)
    assert res.window_scores[2].shape == (3, 196) and res.window_scores[3].shape == (3, 169)
    assert res.boxes[2].shape == (196, 4) and res.patch_scores.shape == (3, 15, 15)
    for t in [res.image_score, res.anomaly_map, res.window_scores[2], res.window_scores[3], res.patch_scores]:
        assert torch.isfinite(t).all() and (t > 0).all() and (t < 1).all()
    assert res.few_shot_map is None and res.meta["k_shot"] == 0
    assert torch.equal(res.image_score, res.zero_shot_image) and torch.equal(res.anomaly_map, res.zero_shot_map)
    assert res.anomaly_map.std() > 0  # windows differ, so the map is not flat


def test_multiscale_formula(tiny_bundle, images, zero_shot):
    _, res = zero_shot
    emb = WindowEncoder(tiny_bundle)(images)
    anchors = text_anchors(tiny_bundle, CLASS)
    img = _softmax_score(emb.image, anchors)
    torch.testing.assert_close(res.image_score, img, rtol=1e-5, atol=1e-6)
    inv = 1.0 / img.double()[:, None, None]
    for s in (2, 3):
        ws = _softmax_score(emb.windows[s], anchors)
        torch.testing.assert_close(res.window_scores[s], ws, rtol=1e-5, atol=1e-6)
        scale_map = _harmonic_by_boxes(ws, emb.boxes[s])
        torch.testing.assert_close(res.scale_maps[s].double(), scale_map, rtol=1e-5, atol=1e-6)
        inv = inv + 1.0 / scale_map
    torch.testing.assert_close(res.anomaly_map.double(), 3.0 / inv, rtol=1e-5, atol=1e-6)


def test_chunk_size_does_not_change_scores(tiny_bundle, images, zero_shot):
    _, res = zero_shot
    small = WinCLIP(tiny_bundle, class_name=CLASS, chunk_size=33).predict(images)
    torch.testing.assert_close(small.anomaly_map, res.anomaly_map, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(small.image_score, res.image_score)


def test_batch_composition_does_not_change_scores(tiny_bundle, images, zero_shot):
    _, res = zero_shot
    one = WinCLIP(tiny_bundle, class_name=CLASS).predict(images[1:2])
    torch.testing.assert_close(one.anomaly_map[0], res.anomaly_map[1], rtol=1e-5, atol=1e-6)


def test_few_shot_identical_query_has_zero_vas(tiny_bundle, images):
    model = WinCLIP(tiny_bundle, class_name=CLASS).fit(images[:2])
    assert model.is_fitted and model.k_shot == 2
    assert len(model.banks["patch"]) == 2 * 225 and len(model.banks[2]) == 2 * 196 and len(model.banks[3]) == 2 * 169
    res = model.predict(images)
    for t in [res.patch_vas[:2], res.window_vas[2][:2], res.window_vas[3][:2], res.few_shot_map[:2]]:
        assert t.abs().max() < 1e-5
    assert res.few_shot_map[2].min() > 1e-4  # a query not in the bank
    torch.testing.assert_close(res.anomaly_map[:2], res.zero_shot_map[:2] / 2, atol=1e-5, rtol=0)
    assert res.meta["k_shot"] == 2


def test_few_shot_formula(tiny_bundle, images, references):
    model = WinCLIP(tiny_bundle, class_name=CLASS).fit(references)
    res = model.predict(images)
    q, r = WindowEncoder(tiny_bundle)(images), WindowEncoder(tiny_bundle)(references)
    patch_vas = 0.5 * (1 - _max_cos(q.patch_tokens, r.patch_tokens.reshape(-1, r.patch_tokens.shape[-1])))
    torch.testing.assert_close(res.patch_vas.double(), patch_vas.reshape(3, 15, 15), rtol=1e-4, atol=1e-6)
    layers = [patch_vas.reshape(3, 15, 15)]
    for s in (2, 3):
        vas = 0.5 * (1 - _max_cos(q.windows[s], r.windows[s].reshape(-1, r.windows[s].shape[-1])))
        torch.testing.assert_close(res.window_vas[s].double(), vas, rtol=1e-4, atol=1e-6)
        layers.append(_harmonic_by_boxes(vas, q.boxes[s]))
    few = torch.stack(layers).mean(dim=0)
    torch.testing.assert_close(res.few_shot_map.double(), few, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.anomaly_map, (res.zero_shot_map + res.few_shot_map) / 2)
    torch.testing.assert_close(res.image_score, (res.zero_shot_image + res.few_shot_map.flatten(1).amax(1)) / 2)
    # zero-shot part is unchanged by fitting; few_shot=False gives it back
    zs = model.predict(images, few_shot=False)
    assert zs.few_shot_map is None
    torch.testing.assert_close(zs.anomaly_map, res.zero_shot_map)


def test_combinations():
    z, f = torch.tensor([0.2, 0.5, 0.4]), torch.tensor([0.6, 0.5, 0.0])
    torch.testing.assert_close(combine_maps(z, f), torch.tensor([0.4, 0.5, 0.2]))
    torch.testing.assert_close(combine_maps(z, f, "sum"), torch.tensor([0.8, 1.0, 0.4]))
    torch.testing.assert_close(combine_maps(z, f, "reciprocal"), torch.tensor([0.15, 0.25, 0.0]))
    with pytest.raises(ValueError, match="combination"):
        combine_maps(z, f, "max")


def test_fit_none_resets_and_predict_before_fit(tiny_bundle, images):
    model = WinCLIP(tiny_bundle, class_name=CLASS)
    with pytest.raises(NotFittedError, match=r"\.fit\(reference_images\)"):
        model.predict(images[:1], few_shot=True)
    model.fit(images[:1])
    assert model.predict(images[:1]).few_shot_map is not None
    model.fit(None)
    assert not model.is_fitted and model.predict(images[:1]).few_shot_map is None


def test_bad_arguments(tiny_bundle, images):
    with pytest.raises(ValueError, match="class_name"):
        WinCLIP(tiny_bundle, class_name=None)
    with pytest.raises(ValueError, match="class_name"):
        WinCLIP(tiny_bundle, class_name="  ")
    with pytest.raises(ValueError, match="temperature"):
        WinCLIP(tiny_bundle, class_name=CLASS, temperature=0)
    with pytest.raises(ValueError, match="combination"):
        WinCLIP(tiny_bundle, class_name=CLASS, combination="avg")
    with pytest.raises(ValueError, match="patch_features"):
        WinCLIP(tiny_bundle, class_name=CLASS, patch_features="raw")
    model = WinCLIP(tiny_bundle, class_name=CLASS)
    with pytest.raises(ValueError, match=r"images has shape \(1, 3, 224, 224\).*240"):
        model.predict(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="reference_images"):
        model.fit(torch.zeros(2, 3, 120, 120))
    assert not model.is_fitted


def test_clip_scores_round_trip(tmp_path, tiny_bundle, images, references):
    model = WinCLIP(tiny_bundle, class_name=CLASS).fit(references)
    scores = model.clip_scores(images[:2])
    assert len(scores) == 2
    store = CaptureStore(tmp_path / "store", config=model.config())
    for i, cs in enumerate(scores):
        store.add(f"bottle/test/x/{i:03d}", clip=cs)
    reopened = CaptureStore(tmp_path / "store", readonly=True)
    for i, cs in enumerate(scores):
        back = reopened[f"bottle/test/x/{i:03d}"].clip()
        assert float(back.image) == pytest.approx(float(cs.image))
        assert torch.equal(back.patch, cs.patch)
        assert set(back.windows) == {2, 3} and all(torch.equal(back.windows[s], cs.windows[s]) for s in (2, 3))
        assert all(torch.equal(back.window_boxes[s].long(), cs.window_boxes[s]) for s in (2, 3))
        assert set(back.maps) == set(cs.maps) >= {"anomaly", "zero_shot", "few_shot", "vas_patch", "window_2"}
        assert all(torch.equal(back.maps[k], cs.maps[k]) for k in cs.maps)
    assert reopened.config["class_name"] == CLASS and reopened.config["scales"] == [2, 3]


def test_upsample(zero_shot):
    _, res = zero_shot
    up = res.upsample(240)
    assert up.shape == (3, 240, 240)
    assert up.min() >= res.anomaly_map.min() - 1e-6 and up.max() <= res.anomaly_map.max() + 1e-6
