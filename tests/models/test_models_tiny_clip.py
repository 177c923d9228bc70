"""The tiny offline CLIP: geometry of ViT-B-16-plus-240, seeded weights, untouched global RNG."""

from __future__ import annotations

import pytest
import torch

from cfviz.models import ClipBundle, tiny_clip


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bundle_fields(tiny_clip0: ClipBundle) -> None:
    b = tiny_clip0
    assert (b.image_size, b.patch_size, b.grid_size, b.embed_dim) == (240, 16, (15, 15), 32)
    assert b.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert b.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert (b.name, b.pretrained, b.weights, b.seed) == ("cfviz-tiny-clip", None, "random", 0)
    assert (b.device, b.dtype, b.context_length) == ("cpu", "float32", 77)
    assert not b.model.training


def test_shapes_match_the_real_backbone_geometry(tiny_clip0: ClipBundle) -> None:
    model = tiny_clip0.model
    images = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.encode_image(images).shape == (2, 32)
        tokens = tiny_clip0.tokenizer(["a photo of a flawless bottle", "a photo of a broken bottle"])
        assert tokens.shape == (2, 77) and tokens.dtype == torch.long
        assert model.encode_text(tokens).shape == (2, 32)
    # one class token + the 15x15 patch grid, 4 layers of width 64 with 2 heads
    assert model.visual.positional_embedding.shape == (1 + 15 * 15, 64)
    assert len(model.visual.transformer.resblocks) == 4
    assert model.visual.transformer.resblocks[0].attn.num_heads == 2
    assert model.vocab_size == 49408


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b, c = tiny_clip(seed=3), tiny_clip(seed=3), tiny_clip(seed=4)
    assert _states_equal(a.model, b.model)
    assert not _states_equal(a.model, c.model)


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_clip(seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_dtype_and_bad_seed() -> None:
    b = tiny_clip(seed=0, dtype=torch.float64)
    assert next(b.model.parameters()).dtype == torch.float64 and b.dtype == "float64"
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed"):
            tiny_clip(seed=bad)  # type: ignore[arg-type]


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, cfviz.models as m; m.ClipBundle; m.model_info; "
            "print(sorted(k for k in ('torch', 'diffusers', 'open_clip', 'transformers') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
