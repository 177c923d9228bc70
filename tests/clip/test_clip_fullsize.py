"""The full-size ViT-B-16-plus-240 architecture (random weights): geometry and exactness.

Slow (builds a 208M-parameter model and runs ~365 window sequences on the CPU).
"""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_full_size_windows_match_reference_and_encode_image():
    from cfviz.clip.token_order import run_transformer
    from cfviz.clip.winclip import WinCLIP
    from cfviz.models.clip import random_clip

    bundle = random_clip("ViT-B-16-plus-240", seed=0)
    assert bundle.grid_size == (15, 15) and bundle.embed_dim == 640
    image = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    # two short prompts keep the text pass cheap; the window path is what is checked here
    model = WinCLIP(bundle, class_name="bottle", chunk_size=128,
                    prompts=(["a photo of a bottle."], ["a photo of a damaged bottle."]))
    emb = model.encode(image)
    assert emb.windows[2].shape == (1, 196, 640) and emb.windows[3].shape == (1, 169, 640)
    assert emb.patch_tokens.shape == (1, 225, 896)
    v = bundle.model.visual
    with torch.no_grad():
        torch.testing.assert_close(emb.image, bundle.model.encode_image(image), rtol=1e-4, atol=1e-4)
        tokens = {}
        handle = v.patch_dropout.register_forward_hook(lambda m, i, o: tokens.setdefault("x", o))
        try:
            bundle.model.encode_image(image)
        finally:
            handle.remove()
        for s in (2, 3):
            for k in (0, 7, 100, len(model.boxes[s]) - 1):  # corners and middle, one pass each
                r, c, h, w = model.boxes[s][k].tolist()
                idx = [0] + [1 + (r + i) * 15 + (c + j) for i in range(h) for j in range(w)]
                out = run_transformer(v.transformer, v.ln_pre(tokens["x"][:, idx]))  # (L, N, D) on open_clip < 2.26
                ref = v.ln_post(out[:, 0]) @ v.proj
                torch.testing.assert_close(emb.windows[s][:, k], ref, rtol=1e-4, atol=1e-4)
    res = model.predict(image)
    assert res.anomaly_map.shape == (1, 15, 15) and torch.isfinite(res.anomaly_map).all()
