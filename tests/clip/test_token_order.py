"""Token order on every open_clip convention: block-by-block passes equal open_clip's own.

open_clip 2.24 (anomalib's pin) has no ``Transformer.batch_first`` and takes ``(L, N, D)``;
open_clip >= 2.26 has the attribute and takes ``(N, L, D)``, transposing itself when it is
false. The same tiny CLIP is put into each convention by changing only what those releases
differ in (the stack's ``forward``, the attribute, the blocks' attention layout), so every
convention must give the numbers of the unchanged model's ``encode_image`` / ``encode_text``.
Under `make test-oldest` the installed open_clip is 2.24 and the "absent" case is the real one.
"""

from __future__ import annotations

import copy
import types

import pytest

torch = pytest.importorskip("torch")

from cfviz.clip.aaclip.encoders import run_blocks, text_features, vision_tokens  # noqa: E402
from cfviz.clip.token_order import blocks_take_batch_first, transformer_takes_batch_first  # noqa: E402
from cfviz.clip.windows import WindowEncoder  # noqa: E402

CONVENTIONS = ("absent", "true", "false")


def _forward_2_24(self, x, attn_mask=None):
    """open_clip 2.24's ``Transformer.forward``: blocks on sequence-first tokens, no transposes."""
    for r in self.resblocks:
        x = r(x, attn_mask=attn_mask)
    return x


def _forward_2_26(self, x, attn_mask=None):
    """open_clip >= 2.26's ``Transformer.forward``: batch-first in, transposed inside if needed."""
    if not self.batch_first:
        x = x.transpose(0, 1).contiguous()
    for r in self.resblocks:
        x = r(x, attn_mask=attn_mask)
    if not self.batch_first:
        x = x.transpose(0, 1)
    return x


def _set_convention(transformer, kind: str) -> None:
    """Make ``transformer`` behave as open_clip 2.24 (``absent``) or >= 2.26 built with batch_first."""
    blocks_bf = kind == "true"
    for block in transformer.resblocks:
        # the only layout-dependent part of a ResidualAttentionBlock is torch's attention
        assert isinstance(block.attn, torch.nn.MultiheadAttention)
        block.attn.batch_first = blocks_bf
    if kind == "absent":
        transformer.__dict__.pop("batch_first", None)
        transformer.forward = types.MethodType(_forward_2_24, transformer)
    else:
        transformer.batch_first = blocks_bf
        transformer.forward = types.MethodType(_forward_2_26, transformer)


def _variant(bundle, kind: str):
    b = copy.deepcopy(bundle)
    _set_convention(b.model.visual.transformer, kind)
    _set_convention(b.model.transformer, kind)
    return b


def _native(transformer, x):
    """The installed open_clip's own call: its vision tower permutes to (L, N, D) only before 2.26."""
    if hasattr(transformer, "batch_first"):
        return transformer(x)
    return transformer(x.permute(1, 0, 2)).permute(1, 0, 2)


@pytest.fixture(scope="module")
def base(tiny_bundle):
    """The tiny CLIP in the installed open_clip's own (unchanged) convention, and its outputs."""
    return tiny_bundle


@pytest.mark.parametrize("kind", CONVENTIONS)
def test_the_simulated_convention_is_faithful(base, kind, images) -> None:
    """The changed stack gives the unchanged one's tokens when fed its own convention's layout."""
    tr = _variant(base, kind).model.visual.transformer
    x = WindowEncoder(base, scales=()).tokens(images[:2])
    with torch.no_grad():
        want = _native(base.model.visual.transformer, x)
        got = tr(x) if kind != "absent" else tr(x.transpose(0, 1)).transpose(0, 1)
    assert transformer_takes_batch_first(tr) == (kind != "absent")
    assert blocks_take_batch_first(tr) == (kind == "true")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", CONVENTIONS)
def test_window_encoder_equals_encode_image_on_every_convention(base, kind, images) -> None:
    with torch.no_grad():
        want = base.model.encode_image(images)
    ref = WindowEncoder(base, scales=(2, 3), chunk_size=64)(images)
    got = WindowEncoder(_variant(base, kind), scales=(2, 3), chunk_size=64)(images)
    torch.testing.assert_close(got.image, want, atol=1e-5, rtol=1e-5)
    # the 3 images are distinct, so their zero-shot inputs must be too (the 2.24 bug made them equal)
    assert not torch.allclose(got.image[0], got.image[1], atol=1e-4)
    torch.testing.assert_close(got.patches, ref.patches, atol=1e-5, rtol=1e-5)
    for s in (2, 3):
        torch.testing.assert_close(got.windows[s], ref.windows[s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", CONVENTIONS)
def test_aaclip_block_passes_equal_open_clip_on_every_convention(base, kind, images) -> None:
    variant = _variant(base, kind)
    depth = len(base.model.visual.transformer.resblocks)
    tokens = base.tokenizer(["a photo of a scratch", "a photo of a flawless object"])
    with torch.no_grad():
        want_text = base.model.encode_text(tokens).float()
        got_text = text_features(variant, tokens)
        got_vision = vision_tokens(variant, images, levels=(2, depth))
        ref_vision = vision_tokens(base, images, levels=(2, depth))
        # the last level through ln_post and the projection is open_clip's pooled embedding
        v = variant.model.visual
        pooled = v.ln_post(got_vision[depth][:, 0]) @ v.proj
        want_image = base.model.encode_image(images)
    torch.testing.assert_close(got_text, want_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, want_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_vision[2], ref_vision[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", CONVENTIONS)
def test_vv_surgery_blocks_do_not_depend_on_the_convention(base, kind, images) -> None:
    x = WindowEncoder(base, scales=()).tokens(images)
    with torch.no_grad():
        want, _ = run_blocks(base.model.visual.transformer, x, vv_from=2)
        got, _ = run_blocks(_variant(base, kind).model.visual.transformer, x, vv_from=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
