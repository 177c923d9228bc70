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

What it costs: the query and key projections of the image tokens (and the key projection of the
text) are most of it: ~2 of the ~12 token-width matrix products of a joint block, i.e. ~10-15 %
of a FLUX or SD3 forward. :class:`ProjectionTap` borrows them from the layer's own processor
instead (forward hooks on ``to_q``, ``to_k`` and ``add_k_proj`` for one call; a processor that
projects otherwise, e.g. with fused QKV, falls back to the recomputation); what remains is the
score matrix of the image queries (needed for the joint softmax's denominator), the Q/K norms
and the rotary embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Layer kinds: a UNet/DiT cross-attention (``attn2``), SD3's joint attention (image first),
#: FLUX's joint attention (text first, rotary) and FLUX's single-stream attention.
LayerKind = Literal["cross", "sd3_joint", "flux_joint", "flux_single"]
JointSoftmax = Literal["joint", "text"]

#: Bytes of float32 scores held at once while the probabilities are computed.
_CHUNK_BYTES = 256 * 2**20


class JointProjections(NamedTuple):
    """A joint layer's own projections for one call, whole batch, ``(B, N, H*d)`` (``None``: not borrowed).

    ``query`` and ``key`` are ``to_q`` / ``to_k`` of the layer's ``hidden_states`` (FLUX single
    stream: of the whole ``[text; image]`` sequence), ``text_key`` is ``add_k_proj`` of
    ``encoder_hidden_states`` (joint kinds only).
    """

    query: Any = None
    key: Any = None
    text_key: Any = None


class ProjectionTap:
    """Keep the outputs of a joint layer's ``to_q``, ``to_k`` and ``add_k_proj`` during one call.

    Use it around the original processor's call, then ask :meth:`projections` for those that can
    stand in for a recomputation: exactly one call of the projection, on a sequence of the
    expected batch and length. Anything else (fused QKV, a processor that projects twice or a
    part of the sequence) is ``None`` there and recomputed by :func:`text_attention`.

    Example
    -------
    >>> import torch
    >>> from cfviz.models.families import tiny_denoiser
    >>> flux = tiny_denoiser("flux"); attn = flux.transformer_blocks[0].attn
    >>> hs, ehs = torch.randn(1, 16, 32), torch.randn(1, 4, 32)
    >>> with ProjectionTap(attn, "flux_joint") as tap:
    ...     _ = attn(hs, ehs)
    >>> p = tap.projections(hs, ehs)
    >>> tuple(p.query.shape), tuple(p.text_key.shape)
    ((1, 16, 32), (1, 4, 32))
    """

    def __init__(self, attn: Any, kind: LayerKind) -> None:
        self.attn, self.kind = attn, kind
        self._seen: dict[str, list[Any]] = {"query": [], "key": [], "text_key": []}
        self._handles: list[Any] = []

    def __enter__(self) -> ProjectionTap:
        names = {"query": "to_q", "key": "to_k"}
        if self.kind != "flux_single":
            names["text_key"] = "add_k_proj"
        for field, attr in names.items():
            proj = getattr(self.attn, attr, None)
            if proj is not None:
                seen = self._seen[field]
                self._handles.append(proj.register_forward_hook(lambda _m, _i, out, _s=seen: _s.append(out)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def projections(self, hidden_states: Any, encoder_hidden_states: Any) -> JointProjections:
        """The borrowed projections that fit the call's ``hidden_states`` / ``encoder_hidden_states``."""
        def one(field: str, source: Any) -> Any:
            seen = self._seen[field]
            if source is None or len(seen) != 1:
                return None
            out = seen[0]
            fits = getattr(out, "ndim", 0) == 3 and tuple(out.shape[:2]) == tuple(source.shape[:2])
            return out if fits else None

        return JointProjections(one("query", hidden_states), one("key", hidden_states),
                                one("text_key", encoder_hidden_states))


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
                   softmax: JointSoftmax = "joint", projections: JointProjections | None = None,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
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
    projections:
        The layer's own projections of this call (:class:`ProjectionTap`), used instead of
        projecting again; a ``None`` field is recomputed.
    attention_mask:
        FLUX: the ``attention_mask`` the layer's processor received (from the transformer's
        ``joint_attention_kwargs``), which it hands to SDPA over the joint ``[text; image]``
        sequence: broadcast as SDPA does to ``(B, H, L, L)``, boolean (``True`` attends) or
        additive. Its image-query rows are applied before the softmax, so masked text keys get
        the zero attention the layer gives them. Ignored for SD3 (its processor ignores it too).
    """
    import torch

    hs, ehs = hidden_states, encoder_hidden_states
    borrowed = projections or JointProjections()
    subset = rows is not None and list(rows) != list(range(hs.shape[0]))

    def project(value: Any, layer: Any, x: Any) -> Any:
        # the borrowed projection (whole batch: keep the rows) or the layer's projection of x
        if value is None:
            return layer(x)
        return value[rows] if subset else value

    if subset:
        hs = hs[rows]
        ehs = ehs[rows] if ehs is not None else None
    heads = int(attn.heads)
    if kind == "sd3_joint":
        q = _heads(project(borrowed.query, attn.to_q, hs), heads)
        k = _heads(project(borrowed.key, attn.to_k, hs), heads)
        q = attn.norm_q(q) if getattr(attn, "norm_q", None) is not None else q
        k = attn.norm_k(k) if getattr(attn, "norm_k", None) is not None else k
        ek = _heads(project(borrowed.text_key, attn.add_k_proj, ehs), heads)
        ek = attn.norm_added_k(ek) if getattr(attn, "norm_added_k", None) is not None else ek
        keys = torch.cat([k, ek], dim=2)
        n_img = q.shape[2]
        text = slice(n_img, n_img + ek.shape[2])
    elif kind == "flux_joint":
        q = attn.norm_q(_heads(project(borrowed.query, attn.to_q, hs), heads))
        k = attn.norm_k(_heads(project(borrowed.key, attn.to_k, hs), heads))
        ek = attn.norm_added_k(_heads(project(borrowed.text_key, attn.add_k_proj, ehs), heads))
        n_txt = ek.shape[2]
        keys = _rotate(torch.cat([ek, k], dim=2), image_rotary_emb, slice(None))
        q = _rotate(q, image_rotary_emb, slice(n_txt, None))
        text = slice(0, n_txt)
    elif kind == "flux_single":
        if text_length is None:
            raise ValueError("flux_single needs text_length")
        # only the image tokens' queries are needed: project those alone (or slice the borrowed ones)
        if borrowed.query is None:
            q = attn.to_q(hs[:, text_length:])
        else:
            q = project(borrowed.query, attn.to_q, hs)[:, text_length:]
        q = attn.norm_q(_heads(q, heads))
        k = attn.norm_k(_heads(project(borrowed.key, attn.to_k, hs), heads))
        keys = _rotate(k, image_rotary_emb, slice(None))
        q = _rotate(q, image_rotary_emb, slice(text_length, None))
        text = slice(0, text_length)
    else:  # pragma: no cover - guarded by the family adapters
        raise ValueError(f"unknown joint layer kind {kind!r}")
    mask = None
    if attention_mask is not None and kind != "sd3_joint":
        mask = _image_query_mask(attention_mask, hidden_states.shape[0], heads, keys.shape[2], q.shape[2], rows)
    return _text_softmax(q, keys, text, q.shape[-1] ** -0.5, softmax, mask)


def _image_query_mask(mask: torch.Tensor, batch: int, heads: int, n_keys: int, n_img: int,
                      rows: list[int] | None) -> torch.Tensor:
    """A FLUX ``attention_mask`` over the joint sequence, as SDPA broadcasts it to ``(B, H, L, L)``,
    cut to the kept rows and the image queries (the last ``n_img`` positions), additive float32."""
    import torch

    from cfviz.errors import CaptureError

    try:
        m = torch.as_tensor(mask).broadcast_to(batch, heads, n_keys, n_keys)
    except RuntimeError:
        want = (batch, heads, n_keys, n_keys)
        raise CaptureError(f"attention_mask of shape {tuple(mask.shape)} does not broadcast to the layer's "
                           f"(batch, heads, tokens, tokens) = {want}, as SDPA needs") from None
    if rows is not None and list(rows) != list(range(batch)):
        m = m[rows]
    m = m[:, :, n_keys - n_img:]
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill_(~m, float("-inf"))
    return m.float()


def _text_softmax(q: torch.Tensor, keys: torch.Tensor, text: slice, scale: float,
                  softmax: JointSoftmax, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale)[..., text]`` over chunks of queries (float32).

    The joint softmax needs every key's score for its denominator (the recorder's main cost once
    the projections are borrowed); the scale is folded into the queries, which saves a pass over
    the score matrix. ``"text"``, the softmax over the text keys alone, needs only their scores.
    """
    import torch

    if softmax == "text":
        keys, text = keys[:, :, text], slice(None)
        mask = None if mask is None else mask[..., text]
    b, h, n_q, _ = q.shape
    n_k = keys.shape[2]
    chunk = max(1, _CHUNK_BYTES // max(1, b * h * n_k * 4))
    keys_t = keys.float().transpose(-1, -2)
    if mask is None:
        parts = [torch.matmul(part.float() * scale, keys_t).softmax(dim=-1)[..., text]
                 for part in q.split(chunk, dim=2)]
    else:  # the layer's mask on the image queries' rows, added before the softmax as SDPA does
        parts = [(torch.matmul(part.float() * scale, keys_t) + m).softmax(dim=-1)[..., text]
                 for part, m in zip(q.split(chunk, dim=2), mask.split(chunk, dim=2))]
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
