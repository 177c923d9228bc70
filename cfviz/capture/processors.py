"""The recording attention processor: wraps the original processor, never replaces its maths.

The wrapper calls the original processor for the layer's output (so SDPA, LoRA, IP-Adapter and
other processors keep working and outputs stay bit-identical) and computes only what it records:
``softmax(Q K^T * attn.scale)`` in float32 for the kept batch rows, reduced at once to the chosen
tokens and averaged over heads. Joint-attention layers (SD3, FLUX) are wrapped the same way; their
image-query x text-key block comes from :mod:`cfviz.capture.joint`.

``Attention.forward`` in diffusers drops keyword arguments that the processor's ``__call__`` does
not name, so each wrapper class carries the exact signature of the processor it wraps: wrapping is
invisible to that filtering.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from cfviz.capture.joint import ProjectionTap

if TYPE_CHECKING:  # pragma: no cover
    import torch

_CLASS_CACHE: dict[type, type] = {}


class Recorder(Protocol):
    """What a :class:`RecordingProcessor` hands its records to (:class:`cfviz.capture.session.CaptureSession`)."""

    def record_attention(self, name: str, attn: Any, hidden_states: Any, encoder_hidden_states: Any,
                         attention_mask: Any = ..., temb: Any = ..., query: Any = ...) -> None: ...
    def record_joint(self, name: str, attn: Any, kind: str, hidden_states: Any, encoder_hidden_states: Any,
                     image_rotary_emb: Any, projections: Any = ..., attention_mask: Any = ...) -> None: ...


class RecordingProcessor:
    """Base of the per-processor-class wrappers made by :func:`wrap_processor`.

    Attributes
    ----------
    inner:
        The wrapped processor (restored on exit of the capture).
    name:
        The layer's module path, e.g. ``up_blocks.1.attentions.0.transformer_blocks.0.attn2``.
    session:
        The :class:`Recorder` (the capture session) that receives the records.
    kind:
        ``"cross"`` (UNet/DiT cross-attention) or a joint kind of :mod:`cfviz.capture.joint`.
    """

    _signature: inspect.Signature

    def __init__(self, inner: Any, name: str, session: Recorder, kind: str = "cross") -> None:
        self.inner = inner
        self.name = name
        self.session = session
        self.kind = kind

    def _call(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.kind != "cross":
            return self._call_joint(attn, hidden_states, *args, **kwargs)
        # Borrow the query and the key the original processor computes (hooks on ``attn.to_q`` and
        # ``attn.to_k`` for this call only) instead of projecting them again: the projections are
        # most of the recorder's cost (the key's 77 text tokens x the layer's width, per layer).
        queries: list[Any] = []
        keys: list[Any] = []
        handles = []
        for proj, into in ((getattr(attn, "to_q", None), queries), (getattr(attn, "to_k", None), keys)):
            if proj is not None:
                handles.append(proj.register_forward_hook(lambda _m, _i, out, _into=into: _into.append(out)))
        try:
            out = self.inner(attn, hidden_states, *args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        bound = self._signature.bind_partial(attn, hidden_states, *args, **kwargs).arguments
        encoder_hidden_states = bound.get("encoder_hidden_states")
        if isinstance(encoder_hidden_states, (tuple, list)):
            # IP-Adapter: diffusers passes ``(text, [image tokens])``; the image tokens have their
            # own projections (``to_k_ip``) and softmax, so the text's map is the layer's own
            encoder_hidden_states = encoder_hidden_states[0] if encoder_hidden_states else None
        elif encoder_hidden_states is not None and _ip_tokens(self.inner):
            # IP-Adapter's older input: the image tokens appended to the text, split off the same way
            encoder_hidden_states = encoder_hidden_states[:, :encoder_hidden_states.shape[1] - _ip_tokens(self.inner)]
        if encoder_hidden_states is not None:  # self-attention through an attn2 slot is not recorded
            # exactly one to_q (to_k) call on this layer's input (text): reuse it; anything else (fused
            # QKV projections, processors that project twice or only part of the text, IP-Adapter):
            # recompute from the inputs
            query = queries[0] if len(queries) == 1 and _is_query_of(queries[0], hidden_states) else None
            key = keys[0] if len(keys) == 1 and _is_key_of(keys[0], encoder_hidden_states) else None
            self.session.record_attention(
                self.name, attn, hidden_states, encoder_hidden_states,
                attention_mask=bound.get("attention_mask"), temb=bound.get("temb"),
                query=query if key is None else Borrowed(query, key),
            )
        return out

    def _call_joint(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # joint layers: the output comes from the original processor untouched; the image-query x
        # text-key block is computed from the projections it made (borrowed, see ProjectionTap)
        # or, where it made them otherwise, recomputed from the same inputs (cfviz.capture.joint)
        with ProjectionTap(attn, self.kind) as tap:  # type: ignore[arg-type]
            out = self.inner(attn, hidden_states, *args, **kwargs)
        bound = self._signature.bind_partial(attn, hidden_states, *args, **kwargs).arguments
        encoder_hidden_states = bound.get("encoder_hidden_states")
        self.session.record_joint(self.name, attn, self.kind, hidden_states, encoder_hidden_states,
                                  bound.get("image_rotary_emb"),
                                  projections=tap.projections(hidden_states, encoder_hidden_states),
                                  attention_mask=bound.get("attention_mask"))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner={self.inner!r}, name={self.name!r})"


def _ip_tokens(processor: Any) -> int:
    """Image tokens an IP-Adapter processor splits off the end of a tensor ``encoder_hidden_states``
    (diffusers' deprecated input; ``num_tokens[0]``), else 0."""
    num = getattr(processor, "num_tokens", None)
    if "IPAdapter" not in type(processor).__name__ or not isinstance(num, (list, tuple)) or not num:
        return 0
    return int(num[0])


class Borrowed(NamedTuple):
    """Projections a recorder borrowed from the layer's own processor (``None``: not borrowed).

    Passed as ``query=`` through :meth:`CaptureSession.record_attention` to
    :func:`attention_probabilities`, which also takes a bare query tensor there.
    """

    query: Any
    key: Any


def _is_key_of(key: Any, encoder_hidden_states: Any) -> bool:
    """True when ``key`` ``(B, L, D)`` has the batch and token count of the text the layer attends to."""
    return getattr(key, "ndim", 0) == 3 and tuple(key.shape[:2]) == tuple(encoder_hidden_states.shape[:2])


def _is_query_of(query: Any, hidden_states: Any) -> bool:
    """True when ``query`` ``(B, N, D)`` has the batch and token count of the layer input."""
    if getattr(query, "ndim", 0) != 3:
        return False
    if hidden_states.ndim == 4:
        b, _, h, w = hidden_states.shape
        return tuple(query.shape[:2]) == (b, h * w)
    return tuple(query.shape[:2]) == tuple(hidden_states.shape[:2])


def wrap_processor(processor: Any, name: str, session: Recorder, kind: str = "cross") -> RecordingProcessor:
    """Return a recording wrapper around ``processor`` with the same call signature."""
    cls = type(processor)
    wrapper_cls = _CLASS_CACHE.get(cls)
    if wrapper_cls is None:
        full_sig = inspect.signature(type(processor).__call__)  # with the leading self
        params = list(full_sig.parameters.values())
        call_sig = full_sig.replace(parameters=params[1:])  # without self: as bound

        def __call__(self: RecordingProcessor, *args: Any, **kwargs: Any) -> Any:
            return self._call(*args, **kwargs)

        __call__.__signature__ = full_sig  # type: ignore[attr-defined]
        wrapper_cls = type(f"Recording{cls.__name__}", (RecordingProcessor,),
                           {"__call__": __call__, "_signature": call_sig, "__module__": __name__})
        _CLASS_CACHE[cls] = wrapper_cls
    return wrapper_cls(processor, name, session, kind)


def _row_taker(rows: list[int]) -> Any:
    """Index batch rows: a view for consecutive rows (the conditional half of a guided batch), else a copy.

    >>> import torch
    >>> t = torch.arange(6).view(3, 2)
    >>> _row_taker([1, 2])(t).data_ptr() == t[1].data_ptr(), _row_taker([2, 0])(t).tolist()
    (True, [[4, 5], [0, 1]])
    """
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return lambda t: t[rows[0]:rows[0] + len(rows)]
    return lambda t: t[rows]


def attention_probabilities(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                            attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                            rows: Any = None, query: torch.Tensor | Borrowed | None = None,
                            ) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """``softmax(Q K^T * attn.scale)`` of a diffusers ``Attention`` layer in float32.

    Mirrors the input handling of diffusers' ``AttnProcessor2_0`` (spatial norm, 4-D inputs,
    group norm, cross-attention norm, Q/K norms, attention mask) so that the probabilities are
    those the layer uses. ``query``, when given, is the layer's own ``to_q`` output for the whole
    batch (the recorder borrows it) and replaces the recomputation; a :class:`Borrowed` carries
    the layer's ``to_k`` output (after its cross-attention norm) as well. Returns ``(probs, hw)``
    with ``probs`` of shape ``(rows, heads, queries, keys)`` and ``hw`` the spatial shape when the
    input was 4-D.
    """
    import torch

    key = None
    if isinstance(query, Borrowed):
        query, key = query.query, query.key
    x = hidden_states
    hw = None
    if query is None and getattr(attn, "spatial_norm", None) is not None:
        x = attn.spatial_norm(x, temb)
    if x.ndim == 4:
        b, c, h, w = x.shape
        hw = (h, w)
        if query is None:
            x = x.view(b, c, h * w).transpose(1, 2)
    batch = encoder_hidden_states.shape[0]
    mask = None
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
    # index by ``rows`` whenever they are not the whole batch in order: a reordered or repeated
    # selection ([1, 0], [0, 0]) has the batch's length but not its rows
    if rows is not None and list(rows) != list(range(batch)):
        take = _row_taker(list(rows))
        encoder_hidden_states = take(encoder_hidden_states)
        mask = take(mask) if mask is not None else None
        if query is None:
            x = take(x)
        else:
            query = take(query)
        key = None if key is None else take(key)
    if query is None:
        if getattr(attn, "group_norm", None) is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(x)
    if key is None:
        ehs = encoder_hidden_states
        if getattr(attn, "norm_cross", None):
            ehs = attn.norm_encoder_hidden_states(ehs)
        key = attn.to_k(ehs)
    q, k = query, key
    b = q.shape[0]
    head_dim = k.shape[-1] // attn.heads
    q = q.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    k = k.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    if getattr(attn, "norm_q", None) is not None:
        q = attn.norm_q(q)
    if getattr(attn, "norm_k", None) is not None:
        k = attn.norm_k(k)
    # in place (the same operations, so the same bits as ``(q @ k^T) * scale + mask`` then
    # ``softmax``): one (rows, heads, queries, keys) float32 buffer instead of three; fresh large
    # buffers cost page faults, a visible part of the recorder's time at 512 px
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2))
    scores.mul_(float(attn.scale))
    if mask is not None:
        scores.add_(mask.float())
    return torch.softmax(scores, dim=-1, out=scores), hw
