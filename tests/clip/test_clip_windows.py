"""Window geometry, batched window embeddings and score aggregation."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.windows import (WindowEncoder, aggregate, harmonic_aggregation, incidence_matrix, mean_aggregation,
                                window_boxes, window_patch_indices)

# ------------------------------------------------------------------------------ geometry


def test_window_counts_on_15x15():
    assert window_boxes(15, 2).shape == (196, 4)
    assert window_boxes(15, 3).shape == (169, 4)
    assert window_boxes((15, 15), 1).shape == (225, 4)
    assert window_boxes(15, 2, stride=2).shape == (49, 4)  # 0, 2, ..., 12 per axis
    assert window_boxes(15, 15).tolist() == [[0, 0, 15, 15]]


def test_boxes_row_major_and_inside():
    b = window_boxes(15, 3)
    assert b[0].tolist() == [0, 0, 3, 3] and b[1].tolist() == [0, 1, 3, 3] and b[13].tolist() == [1, 0, 3, 3]
    assert b[-1].tolist() == [12, 12, 3, 3]
    assert (b[:, 0] + b[:, 2]).max() == 15 and (b[:, 1] + b[:, 3]).max() == 15
    nonsquare = window_boxes((4, 6), 2, stride=2)
    assert nonsquare.tolist() == [[0, 0, 2, 2], [0, 2, 2, 2], [0, 4, 2, 2], [2, 0, 2, 2], [2, 2, 2, 2], [2, 4, 2, 2]]


def test_patch_indices_match_unfold():
    """Same windows and order as anomalib's make_masks (unfold of the index grid)."""
    for scale, stride in [(2, 1), (3, 1), (3, 2)]:
        grid = torch.arange(225.0).reshape(1, 1, 15, 15)
        unfolded = torch.nn.functional.unfold(grid, kernel_size=scale, stride=stride)[0].T.long()
        assert torch.equal(window_patch_indices(window_boxes(15, scale, stride), 15), unfolded)


def test_incidence_matrix_counts():
    inc = incidence_matrix(window_boxes(15, 3), 15)
    assert inc.shape == (169, 225) and torch.equal(inc.sum(dim=1), torch.full((169,), 9.0))
    per_patch = inc.sum(dim=0).reshape(15, 15)
    assert per_patch[0, 0] == 1 and per_patch[7, 7] == 9 and per_patch[0, 7] == 3


@pytest.mark.parametrize("bad", [dict(scale=0), dict(scale=16), dict(scale=2.0), dict(scale=2, stride=0)])
def test_bad_geometry(bad):
    with pytest.raises(ValueError, match="scale|stride"):
        window_boxes(15, **bad)


def test_boxes_outside_grid_rejected():
    with pytest.raises(ValueError, match="inside"):
        incidence_matrix(torch.tensor([[14, 14, 2, 2]]), 15)


# ------------------------------------------------------------------------------ aggregation


def _loop_aggregation(scores, boxes, grid, how):
    """Plain reference: for every location, the covering windows' scores, then the mean."""
    gh, gw = grid
    out = torch.zeros(scores.shape[0], gh, gw, dtype=torch.float64)
    for b in range(scores.shape[0]):
        for i in range(gh):
            for j in range(gw):
                cover = [float(scores[b, k]) for k, (r, c, h, w) in enumerate(boxes.tolist())
                         if r <= i < r + h and c <= j < c + w]
                if not cover:
                    continue  # covered by no window: 0
                if how == "mean":
                    out[b, i, j] = sum(cover) / len(cover)
                else:
                    out[b, i, j] = 0.0 if min(cover) == 0 else len(cover) / sum(1 / s for s in cover)
    return out


@pytest.mark.parametrize("how", ["harmonic", "mean"])
@pytest.mark.parametrize("scale,stride", [(2, 1), (3, 1), (2, 2), (3, 4)])
def test_aggregation_equals_loop(how, scale, stride):
    boxes = window_boxes(15, scale, stride)
    g = torch.Generator().manual_seed(scale * 10 + stride)
    scores = torch.rand(2, len(boxes), generator=g) * 0.98 + 0.01
    scores[1, 5] = 0.0  # a zero score: harmonic mean 0 on its patches
    fast = aggregate(scores, boxes, 15, how)
    slow = _loop_aggregation(scores, boxes, (15, 15), how)
    assert fast.shape == (2, 15, 15) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast.double(), slow, rtol=1e-5, atol=1e-6)


def test_uncovered_locations_are_zero():
    boxes = window_boxes(15, 2, stride=2)  # last row and column are covered by no window
    scores = torch.full((1, len(boxes)), 0.5)
    out = harmonic_aggregation(scores, boxes, 15)
    assert (out[0, 14, :] == 0).all() and (out[0, :, 14] == 0).all()
    assert torch.allclose(out[0, :14, :14], torch.tensor(0.5))
    assert (mean_aggregation(scores, boxes, 15)[0, 14] == 0).all()


def test_aggregation_rejects_bad_shapes():
    boxes = window_boxes(15, 2)
    with pytest.raises(ValueError, match="window scores"):
        harmonic_aggregation(torch.rand(1, 10), boxes, 15)
    with pytest.raises(ValueError, match="batch, n_windows"):
        harmonic_aggregation(torch.rand(196), boxes, 15)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(torch.rand(1, 196), boxes, 15, "max")


# ------------------------------------------------------------------------------ embeddings


def _reference_windows(bundle, image, boxes):
    """Slow reference: capture tokens with a hook (removed afterwards), one pass per window."""
    from cfviz.clip.token_order import run_transformer

    v = bundle.model.visual
    captured = {}
    handle = v.patch_dropout.register_forward_hook(lambda m, i, o: captured.setdefault("tokens", o))
    try:
        with torch.no_grad():
            bundle.model.encode_image(image)
    finally:
        handle.remove()
    tokens = captured["tokens"]  # (1, 226, W) after positional embedding
    out = []
    with torch.no_grad():
        for r, c, h, w in boxes.tolist():
            idx = [0] + [1 + (r + i) * 15 + (c + j) for i in range(h) for j in range(w)]
            x = run_transformer(v.transformer, v.ln_pre(tokens[:, idx]))  # (L, N, D) on open_clip < 2.26
            out.append(v.ln_post(x[:, 0]) @ v.proj)
    return torch.cat(out)


def test_batched_windows_equal_per_window_reference(tiny_bundle, images):
    enc = WindowEncoder(tiny_bundle, scales=(2, 3), chunk_size=150)  # chunks straddle images
    emb = enc(images[:2])
    for s in (2, 3):
        assert emb.windows[s].shape == (2, len(enc.boxes[s]), tiny_bundle.embed_dim)
        for b in range(2):
            ref = _reference_windows(tiny_bundle, images[b:b + 1], enc.boxes[s])
            torch.testing.assert_close(emb.windows[s][b], ref, rtol=1e-4, atol=1e-5)
    assert not tiny_bundle.model.visual.patch_dropout._forward_hooks  # nothing left behind


def test_full_image_path_equals_encode_image(tiny_bundle, images):
    emb = WindowEncoder(tiny_bundle, scales=())(images)
    with torch.no_grad():
        ref = tiny_bundle.model.encode_image(images)
    torch.testing.assert_close(emb.image, ref, rtol=1e-4, atol=1e-5)
    v = tiny_bundle.model.visual
    v.output_tokens = True  # open_clip's own patch tokens (ln_post, unprojected)
    try:
        with torch.no_grad():
            _, tokens = v(images)
    finally:
        v.output_tokens = False
    torch.testing.assert_close(emb.patch_tokens, tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.patches, tokens @ v.proj, rtol=1e-4, atol=1e-5)
    assert emb.windows == {} and emb.grid == (15, 15)


def test_chunk_size_does_not_change_results(tiny_bundle, images):
    a = WindowEncoder(tiny_bundle, chunk_size=7)(images[:2])
    b = WindowEncoder(tiny_bundle, chunk_size=10_000)(images[:2])
    for s in (2, 3):
        torch.testing.assert_close(a.windows[s], b.windows[s], rtol=1e-4, atol=1e-5)


def test_encoder_bad_inputs(tiny_bundle, images):
    with pytest.raises(ValueError, match="chunk_size"):
        WindowEncoder(tiny_bundle, chunk_size=0)
    with pytest.raises(ValueError, match="scale"):
        WindowEncoder(tiny_bundle, scales=(2, 16))
    with pytest.raises(ValueError, match="repeat"):
        WindowEncoder(tiny_bundle, scales=(2, 2))
    enc = WindowEncoder(tiny_bundle, scales=(2,))
    with pytest.raises(ValueError, match=r"\(batch, 3, 240, 240\)"):
        enc(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match=r"\(batch, 3, 240, 240\)"):
        enc(images[0])  # no batch dimension
    with pytest.raises(ValueError, match="dtype"):
        enc(torch.zeros(1, 3, 240, 240, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.full((1, 3, 240, 240), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        enc(torch.zeros(0, 3, 240, 240))
    with pytest.raises(TypeError, match="tensor"):
        enc(images.numpy())
    with pytest.raises(ValueError, match="not set up"):
        enc.encode(images[:1], scales=(3,))
