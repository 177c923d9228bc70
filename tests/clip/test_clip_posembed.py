"""Position-embedding interpolation: an open_clip ViT run at another input size (issue 13, AA-CLIP at 518 px)."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.posembed import interpolate_pos_embed, resize_clip
from cfviz.errors import ConfigError
from cfviz.models import tiny_clip


def test_native_size_is_the_identity() -> None:
    b = tiny_clip(seed=0)
    pos = b.model.visual.positional_embedding
    assert resize_clip(b, 240) is b
    same = interpolate_pos_embed(pos, (15, 15))
    assert same.shape == pos.shape and torch.equal(same, pos)
    assert same.data_ptr() != pos.data_ptr()  # a copy, never the parameter itself


def test_twice_the_size_gives_twice_the_grid() -> None:
    b = tiny_clip(seed=0)
    big = resize_clip(b, 480)
    assert (big.image_size, big.patch_size, big.grid_size) == (480, 16, (30, 30))
    pos = big.model.visual.positional_embedding
    assert tuple(pos.shape) == (1 + 30 * 30, 64)
    # the class token's embedding is kept; the patch part is a smooth resize of the old grid
    old = b.model.visual.positional_embedding
    assert torch.equal(pos[0], old[0])
    assert torch.allclose(pos[1:].mean(0), old[1:].mean(0), atol=0.05)
    # the original bundle is untouched, and every other weight is shared (no copy of the model)
    assert tuple(old.shape) == (226, 64) and b.grid_size == (15, 15) and b.image_size == 240
    assert big.model.visual.conv1.weight is b.model.visual.conv1.weight
    assert big.model.transformer is b.model.transformer
    assert big.info()["image_size"] == 480 and "bicubic" in big.info()["pos_embed"]
    assert big.info()["name"] == b.info()["name"]


def test_the_resized_model_runs_and_gives_finite_outputs() -> None:
    from cfviz.clip.windows import WindowEncoder

    big = resize_clip(tiny_clip(seed=0, like="ViT-L-14-336"), 518)
    assert big.grid_size == (37, 37)
    x = torch.randn(2, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = big.model.encode_image(x)
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    emb = WindowEncoder(big, scales=(2,))(x)
    assert emb.patches.shape == (2, 37 * 37, 32) and torch.isfinite(emb.windows[2]).all()
    assert torch.allclose(emb.image, out, atol=1e-5)


def test_it_is_open_clips_resize() -> None:
    """The same numbers as open_clip's resize_pos_embed, which AA-CLIP's create_model applies."""
    from open_clip.model import resize_pos_embed

    b = tiny_clip(seed=1, like="ViT-L-14-336")
    big = resize_clip(b, 518)
    state = {"visual.positional_embedding": b.model.visual.positional_embedding.detach().clone()}
    resize_pos_embed(state, big.model)
    assert torch.allclose(state["visual.positional_embedding"], big.model.visual.positional_embedding, atol=1e-6)


def test_a_size_that_does_not_fit_the_patches_is_refused() -> None:
    with pytest.raises(ConfigError, match="multiple of its 16 px patches, e.g. 512 or 528"):
        resize_clip(tiny_clip(seed=0), 518)
    with pytest.raises(ValueError, match="square grid"):
        interpolate_pos_embed(torch.zeros(1 + 5, 4), (3, 3))
