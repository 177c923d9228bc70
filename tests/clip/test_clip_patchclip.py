"""PatchCLIP (CLIPFusion's CLIP branch) on the tiny random-weight CLIP.

Numbers from random weights show that the maps follow the documented rules, not how well
PatchCLIP detects anomalies.
"""

from __future__ import annotations

import pytest
import torch

from cfviz.capture.store import CaptureStore
from cfviz.clip.base import NotFittedError
from cfviz.clip.patchclip import PatchCLIP
from cfviz.clip.windows import harmonic_aggregation, mean_aggregation
from cfviz.clip.winclip import WinCLIP

CLASS = "bottle"


@pytest.fixture(scope="module")
def fitted(tiny_bundle, references):
    return PatchCLIP(tiny_bundle, class_name=CLASS).fit(references)


def test_zero_shot_outputs(tiny_bundle, images):
    res = PatchCLIP(tiny_bundle, class_name=CLASS).predict(images)
    assert res.language_map.shape == (3, 15, 15) and res.visual_map is None
    assert res.image_score.shape == (3,) and res.patch_scores.shape == (3, 15, 15)
    assert res.window_maps[2].shape == (3, 15, 15) and res.window_scores[3].shape == (3, 169)
    assert ((res.language_map > 0) & (res.language_map < 1)).all()
    # default rule: arithmetic mean of the patch map and each scale's harmonic map
    expected = (res.patch_scores + harmonic_aggregation(res.window_scores[2], res.boxes[2], 15)
                + harmonic_aggregation(res.window_scores[3], res.boxes[3], 15)) / 3
    torch.testing.assert_close(res.language_map, expected)
    assert len(res.clip_scores) == 3 and "visual" not in res.clip_scores[0].maps


def test_shares_window_and_text_code_with_winclip(tiny_bundle, images):
    pc = PatchCLIP(tiny_bundle, class_name=CLASS).predict(images[:1])
    wc = WinCLIP(tiny_bundle, class_name=CLASS).predict(images[:1])
    for s in (2, 3):
        torch.testing.assert_close(pc.window_scores[s], wc.window_scores[s])
        torch.testing.assert_close(pc.window_maps[s], wc.scale_maps[s])
    torch.testing.assert_close(pc.zero_shot_image, wc.zero_shot_image)
    torch.testing.assert_close(pc.patch_scores, wc.patch_scores)


def test_combination_options(tiny_bundle, images):
    res = PatchCLIP(tiny_bundle, class_name=CLASS, aggregation="mean", combine="harmonic",
                    scales=(3,)).predict(images[:1])
    w3 = mean_aggregation(res.window_scores[3], res.boxes[3], 15)
    torch.testing.assert_close(res.window_maps[3], w3)
    torch.testing.assert_close(res.language_map, 2 / (1 / res.patch_scores + 1 / w3))
    patches_only = PatchCLIP(tiny_bundle, class_name=CLASS, scales=()).predict(images[:1])
    torch.testing.assert_close(patches_only.language_map, patches_only.patch_scores)
    windows_only = PatchCLIP(tiny_bundle, class_name=CLASS, scales=(2,), use_patches=False).predict(images[:1])
    torch.testing.assert_close(windows_only.language_map, windows_only.window_maps[2])


def test_visual_map(fitted, images, references):
    res = fitted.predict(torch.cat([references[:1], images[:2]]))
    assert res.visual_map.shape == (3, 15, 15)
    assert res.visual_map[0].abs().max() < 1e-5  # a reference image is at distance 0
    assert res.visual_map[1:].min() > 0 and res.visual_map.max() <= 1
    expected = (res.patch_distance + harmonic_aggregation(res.window_distance[2], res.boxes[2], 15)
                + harmonic_aggregation(res.window_distance[3], res.boxes[3], 15)) / 3
    torch.testing.assert_close(res.visual_map, expected)
    torch.testing.assert_close(res.image_score, (res.zero_shot_image + res.visual_map.flatten(1).amax(1)) / 2)
    assert fitted.banks["patch"].dim == 32  # "embeds": projected patch embeddings
    torch.testing.assert_close(fitted.visual_map(images[:2]), res.visual_map[1:])
    torch.testing.assert_close(fitted.language_map(images[:2]), res.language_map[1:])


def test_image_score_without_visual(tiny_bundle, references, images):
    model = PatchCLIP(tiny_bundle, class_name=CLASS, image_from_visual=False).fit(references)
    res = model.predict(images[:1])
    assert res.visual_map is not None and torch.equal(res.image_score, res.zero_shot_image)


def test_clip_scores_round_trip(tmp_path, fitted, images):
    scores = fitted.clip_scores(images)
    store = CaptureStore(tmp_path / "store", config=fitted.config())
    for i, cs in enumerate(scores):
        store.add(f"img{i}", clip=cs, metadata={"label": i % 2})
    again = CaptureStore(tmp_path / "store", config=fitted.config())  # same config reopens
    for i, cs in enumerate(scores):
        back = again[f"img{i}"].clip()
        assert float(back.image) == float(cs.image)
        assert torch.equal(back.patch, cs.patch)
        assert {s: v.tolist() for s, v in back.windows.items()} == {s: v.tolist() for s, v in cs.windows.items()}
        assert {s: v.tolist() for s, v in back.window_boxes.items()} == \
            {s: v.tolist() for s, v in cs.window_boxes.items()}
        assert set(back.maps) == set(cs.maps) >= {"language", "visual", "visual_patch", "language_window_3"}
        assert all(torch.equal(back.maps[k], cs.maps[k]) for k in cs.maps)


def test_bad_inputs(tiny_bundle, images):
    with pytest.raises(ValueError, match="class_name"):
        PatchCLIP(tiny_bundle, class_name=None)
    with pytest.raises(ValueError, match="use_patches"):
        PatchCLIP(tiny_bundle, class_name=CLASS, scales=(), use_patches=False)
    with pytest.raises(ValueError, match="combine"):
        PatchCLIP(tiny_bundle, class_name=CLASS, combine="max")
    with pytest.raises(ValueError, match="aggregation"):
        PatchCLIP(tiny_bundle, class_name=CLASS, aggregation="median")
    model = PatchCLIP(tiny_bundle, class_name=CLASS)
    with pytest.raises(NotFittedError, match="fit"):
        model.visual_map(images[:1])
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(images[:1], few_shot=True)
    with pytest.raises(ValueError, match=r"\(batch, 3, 240, 240\)"):
        model.predict(torch.zeros(1, 1, 240, 240))
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(images[:1], batch_size=0)
