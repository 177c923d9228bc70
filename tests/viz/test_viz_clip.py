"""CLIP window and patch scores: aggregation against a plain loop, rectangles in image coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.viz.clipviz import clip_scores_figure, plot_patch_scores, plot_window_scores, window_scores_to_map
from cfviz.viz.style import new_figure


def all_boxes(grid, scale, stride=1):
    gh, gw = grid
    return np.array([[r, c, scale, scale] for r in range(0, gh - scale + 1, stride)
                     for c in range(0, gw - scale + 1, stride)])


def loop_reference(boxes, scores, grid, how, fill=np.nan):
    """One patch at a time, one window at a time: the definition."""
    gh, gw = grid
    out = np.full((gh, gw), fill, dtype=float)
    for i in range(gh):
        for j in range(gw):
            covering = [s for (r, c, h, w), s in zip(boxes, scores) if r <= i < r + h and c <= j < c + w]
            if not covering:
                continue
            if any(np.isnan(covering)):
                out[i, j] = np.nan
            elif how == "mean":
                out[i, j] = sum(covering) / len(covering)
            elif how == "max":
                out[i, j] = max(covering)
            else:
                out[i, j] = 0.0 if min(covering) == 0 else len(covering) / sum(1 / s for s in covering)
    return out


@pytest.mark.parametrize("how", ["mean", "harmonic", "max"])
def test_window_scores_to_map_equals_plain_loop(how, rng):
    grid = (7, 9)
    boxes = np.concatenate([all_boxes(grid, 2), all_boxes(grid, 3, stride=2), [[6, 8, 1, 1]]])
    boxes = boxes[rng.permutation(len(boxes))][:40]  # some patches stay uncovered
    scores = rng.random(len(boxes)) + 0.05
    scores[3] = 0.0  # a zero score: harmonic mean 0 where it covers
    scores[5] = np.nan  # a missing score: NaN where it covers, nowhere else
    got = window_scores_to_map(boxes, scores, grid, how=how)
    np.testing.assert_allclose(got, loop_reference(boxes, scores, grid, how), equal_nan=True, rtol=1e-12)
    assert np.isnan(got).sum() < got.size  # NaN did not spread through the matrix product
    batch = window_scores_to_map(boxes, np.stack([scores, 2 * scores]), grid, how=how, fill=-1.0)
    assert batch.shape == (2, 7, 9)
    np.testing.assert_allclose(batch[0], loop_reference(boxes, scores, grid, how, fill=-1.0), equal_nan=True)
    assert (batch[0] == -1).any() and (batch[0] == 0).any() == (how == "harmonic")  # the cases were met


def test_window_scores_to_map_agrees_with_the_clip_module(rng):
    torch = pytest.importorskip("torch")
    from cfviz.clip.windows import aggregate, window_boxes

    boxes = torch.cat([window_boxes(15, 2), window_boxes(15, 3)])
    scores = torch.rand(1, len(boxes), generator=torch.Generator().manual_seed(0)) + 0.1
    for how in ("mean", "harmonic"):
        np.testing.assert_allclose(window_scores_to_map(boxes, scores[0], 15, how=how),
                                   aggregate(scores, boxes, 15, how=how)[0].numpy(), rtol=1e-5)


def test_dicts_by_scale_are_concatenated(rng):
    boxes = {2: all_boxes((5, 5), 2), 3: all_boxes((5, 5), 3)}
    scores = {k: rng.random(len(v)) for k, v in boxes.items()}
    flat = window_scores_to_map(np.concatenate([boxes[2], boxes[3]]), np.concatenate([scores[2], scores[3]]), 5)
    np.testing.assert_allclose(window_scores_to_map(boxes, scores, 5), flat)


def test_window_scores_to_map_errors(rng):
    boxes = all_boxes((4, 4), 2)
    with pytest.raises(ValueError, match="one per box"):
        window_scores_to_map(boxes, rng.random(len(boxes) - 1), 4)
    with pytest.raises(ValueError, match="inside the 3x3 patch grid"):
        window_scores_to_map(boxes, rng.random(len(boxes)), 3)
    with pytest.raises(ValueError, match="how must be one of"):
        window_scores_to_map(boxes, rng.random(len(boxes)), 4, how="median")
    with pytest.raises(ValueError, match="non-negative"):
        window_scores_to_map(boxes, -rng.random(len(boxes)), 4, how="harmonic")
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        window_scores_to_map(boxes[:, :3], rng.random(len(boxes)), 4)
    with pytest.raises(KeyError, match="scales"):
        window_scores_to_map({2: boxes}, {3: rng.random(len(boxes))}, 4)
    with pytest.raises(TypeError, match="both be dicts"):
        window_scores_to_map({2: boxes}, rng.random(len(boxes)), 4)


def test_top_windows_are_rectangles_in_image_coordinates(rng, figs):
    boxes = all_boxes((15, 15), 3)
    scores = rng.random(len(boxes))
    best = [5, 77, 120]
    scores[best] = [3.0, 2.0, 1.5]
    fig = new_figure(2, 3)
    ax = fig.add_subplot()
    image = rng.random((240, 300, 3))  # not square: patches are 16 x 20 px
    rects = plot_window_scores(ax, image, boxes, scores, top_k=3, label="window score")
    assert len(rects) == 3 and all(p.get_gid() == "cfviz-top-window" for p in rects)
    assert [p for p in ax.patches if p.get_gid() == "cfviz-top-window"] == rects
    for rect, i in zip(rects, best):
        r, c, h, w = boxes[i]
        assert rect.get_xy() == (c * 20 - 0.5, r * 16 - 0.5)
        assert (rect.get_width(), rect.get_height()) == (w * 20, h * 16)
    assert rects[0].get_linewidth() > rects[1].get_linewidth()  # the best window stands out
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0].startswith("#1: 3") and "3x3" in texts[0] and len(texts) == 3
    assert figs.colorbar_labels(fig) == ["window score\n(mean per patch)"]
    assert ax.get_xlim() == (-0.5, 299.5) and ax.get_ylim() == (239.5, -0.5)
    assert plot_window_scores(ax, image, boxes, scores, top_k=0, show_map=False) == []
    with pytest.raises(ValueError, match="top_k"):
        plot_window_scores(ax, image, boxes, scores, top_k=-1)
    with pytest.raises(ValueError, match="one image's"):
        plot_window_scores(ax, image, boxes, np.stack([scores, scores]))


def test_patch_scores_are_blocks_on_the_image(rng, figs):
    fig = new_figure(2, 2)
    ax = fig.add_subplot()
    patch = rng.random((15, 15))
    im = plot_patch_scores(ax, rng.random((60, 60, 3)), patch, mask=np.eye(60))
    np.testing.assert_array_equal(im.get_array(), patch)  # the real grid, not an interpolation
    assert im.get_extent() == [-0.5, 59.5, 59.5, -0.5]
    assert figs.colorbar_labels(fig) == ["patch score"]
    im = plot_patch_scores(ax, rng.random((60, 60, 3)), patch, smooth=True, colorbar=False)
    assert im.get_array().shape == (60, 60)


def test_clip_scores_figure_from_a_store_entry(tmp_path, rng, figs):
    pytest.importorskip("torch")
    from cfviz.capture.store import CaptureStore, ClipScores

    boxes = {2: all_boxes((15, 15), 2), 3: all_boxes((15, 15), 3)}
    scores = ClipScores(image=0.42, patch=rng.random((15, 15)), windows={k: rng.random(len(v)) for k, v in boxes.items()},
                        window_boxes=boxes)
    store = CaptureStore(tmp_path / "store", config={"model": "tiny"})
    store.add("brick/test/hole/000", clip=scores)
    loaded = CaptureStore(tmp_path / "store", readonly=True)["brick/test/hole/000"].clip()
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    fig = clip_scores_figure(rng.random((64, 64, 3)), loaded, mask=mask, top_k=4, note="offline")
    panels = figs.panels(fig)
    assert [ax.get_title() for ax in panels] == ["image (image score 0.42)", "patch scores",
                                                 "windows 2x2 (harmonic)", "windows 3x3 (harmonic)"]
    assert [len([p for p in ax.patches if p.get_gid() == "cfviz-top-window"]) for ax in panels] == [0, 0, 4, 4]
    assert len(figs.colorbars(fig)) == 3
    assert figs.overlapping_text(fig) == []
