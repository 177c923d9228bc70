"""Image-query x text-key attention of joint (MMDiT) attention layers: SD3 and FLUX.

In SD3's ``JointTransformerBlock`` and FLUX's ``FluxTransformerBlock`` image and text tokens
attend together: one softmax over the *joint* key set (image keys and text keys). FLUX's
single-stream blocks (``FluxSingleTransformerBlock``) do the same on one concatenated
``[text; image]`` sequence. cfviz keeps the block a cross-attention map corresponds to: image
queries x text keys.

Which softmax (the choice, ours)
--------------------------------
``"joint"`` (default): the probabilities the layer really uses, ``softmax`` over text *and* image
keys, then the text columns. A pixel's values sum to the share of its attention that goes to the
prompt (< 1), so a pixel that mostly attends to other pixels gets small values everywhere: the
map says how much the prompt (and each token) drives each pixel. ``"text"``: the same columns
renormalised to sum to one over the text keys, i.e. the softmax over text keys only (what a
cross-attention layer of a UNet or PixArt computes, and what attention-map tools for MMDiTs often
show). It makes maps comparable in scale with UNet maps but manufactures a distribution the layer
never computes and amplifies pixels that barely look at the text. The two differ per pixel by the
factor ``1 / (text share)``.

The probabilities are recomputed from the layer's own inputs (the processor is wrapped, never
replaced), in float32, over chunks of queries so that memory stays bounded for large images.
Both processors call SDPA without a scale, so the scale is ``head_dim ** -0.5``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Layer kinds: a UNet/DiT cross-attention (``attn2``), SD3's joint attention (image first),
#: FLUX's joint attention (text first, rotary) and FLUX's single-stream attention.
LayerKind = Literal["cross", "sd3_joint", "flux_joint", "flux_single"]
JointSoftmax = Literal["joint", "text"]

#: Bytes of float32 scores held at once while the probabilities are computed.
_CHUNK_BYTES = 256 * 2**20


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, H*d)`` -> ``(B, H, N, d)``."""
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)


def _rotate(x: torch.Tensor, rotary: Any, positions: slice) -> torch.Tensor:
    """Apply FLUX's rotary embedding (a ``(cos, sin)`` pair over the joint sequence) to ``x`` ``(B, H, N, d)``."""
    if rotary is None:
        return x
    from diffusers.models.embeddings import apply_rotary_emb

    if isinstance(rotary, (tuple, list)):
        part = tuple(r[positions] for r in rotary)
    else:
        part = rotary[positions]
    return apply_rotary_emb(x, part, sequence_dim=2)


def text_attention(attn: Any, kind: LayerKind, hidden_states: torch.Tensor,
                   encoder_hidden_states: torch.Tensor | None, *, text_length: int | None = None,
                   image_rotary_emb: Any = None, rows: list[int] | None = None,
                   softmax: JointSoftmax = "joint") -> torch.Tensor:
    """Image-query x text-key probabilities of a joint attention layer, ``(rows, heads, N_img, L_text)``.

    Parameters
    ----------
    attn:
        The layer (SD3's ``Attention`` with added K/V projections, or a ``FluxAttention``).
    kind:
        ``"sd3_joint"`` (sequence ``[image, text]``), ``"flux_joint"`` (``[text, image]``, rotary),
        ``"flux_single"`` (``hidden_states`` is already ``[text; image]``; needs ``text_length``).
    hidden_states, encoder_hidden_states, image_rotary_emb:
        The arguments the layer's processor received.
    rows:
        Batch rows to keep (all when ``None``).
    softmax:
        ``"joint"`` or ``"text"``; see the module docstring.
    """
    import torch

    hs, ehs = hidden_states, encoder_hidden_states
    if rows is not None and list(rows) != list(range(hs.shape[0])):
        hs = hs[rows]
        ehs = ehs[rows] if ehs is not None else None
    heads = int(attn.heads)
    if kind == "sd3_joint":
        q, k = _heads(attn.to_q(hs), heads), _heads(attn.to_k(hs), heads)
        q = attn.norm_q(q) if getattr(attn, "norm_q", None) is not None else q
        k = attn.norm_k(k) if getattr(attn, "norm_k", None) is not None else k
        ek = _heads(attn.add_k_proj(ehs), heads)
        ek = attn.norm_added_k(ek) if getattr(attn, "norm_added_k", None) is not None else ek
        keys = torch.cat([k, ek], dim=2)
        n_img = q.shape[2]
        text = slice(n_img, n_img + ek.shape[2])
    elif kind == "flux_joint":
        q, k = attn.norm_q(_heads(attn.to_q(hs), heads)), attn.norm_k(_heads(attn.to_k(hs), heads))
        ek = attn.norm_added_k(_heads(attn.add_k_proj(ehs), heads))
        n_txt = ek.shape[2]
        keys = _rotate(torch.cat([ek, k], dim=2), image_rotary_emb, slice(None))
        q = _rotate(q, image_rotary_emb, slice(n_txt, None))
        text = slice(0, n_txt)
    elif kind == "flux_single":
        if text_length is None:
            raise ValueError("flux_single needs text_length")
        q, k = attn.norm_q(_heads(attn.to_q(hs), heads)), attn.norm_k(_heads(attn.to_k(hs), heads))
        keys = _rotate(k, image_rotary_emb, slice(None))
        q = _rotate(q[:, :, text_length:], image_rotary_emb, slice(text_length, None))
        text = slice(0, text_length)
    else:  # pragma: no cover - guarded by the family adapters
        raise ValueError(f"unknown joint layer kind {kind!r}")
    return _text_softmax(q, keys, text, q.shape[-1] ** -0.5, softmax)


def _text_softmax(q: torch.Tensor, keys: torch.Tensor, text: slice, scale: float,
                  softmax: JointSoftmax) -> torch.Tensor:
    """``softmax(q k^T * scale)[..., text]`` over chunks of queries (float32)."""
    import torch

    b, h, n_q, _ = q.shape
    n_k = keys.shape[2]
    chunk = max(1, _CHUNK_BYTES // max(1, b * h * n_k * 4))
    keys_t = keys.float().transpose(-1, -2)
    parts = []
    for part in q.split(chunk, dim=2):
        p = (torch.matmul(part.float(), keys_t) * scale).softmax(dim=-1)[..., text]
        if softmax == "text":
            p = p / p.sum(dim=-1, keepdim=True)
        parts.append(p)
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
