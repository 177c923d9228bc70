"""The capture lifecycle: locate layers, install recorders, track time, restore everything.

:func:`capture` is the entry point (also reachable as ``cfviz.capture``). Locating modules is kept
apart from acting on them (:func:`locate_cross_attention`, :func:`locate_modules`), and every
processor and hook installed is undone in ``finally`` — also after an exception, and for
overlapping captures exited in any order (each takes only its own recorder out of a layer's chain).

``rows="auto"`` follows the UNet call being recorded: a declaration made with
:func:`classifier_free_guidance` (``mapdiff_forward`` declares its calls unguided), else the flag
of the pipeline whose ``pipe()`` call makes the UNet call, else every row.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.families import Family, denoiser_of, detect_family, unwrap_compiled
from cfviz.capture.joint import JointSoftmax, text_attention
from cfviz.capture.naming import NamesFilter, select_names
from cfviz.capture.processors import RecordingProcessor, attention_probabilities, wrap_processor
from cfviz.capture.tokens import TokenSelection, TokenSpec, select_tokens, select_tokens_in_streams
from cfviz.errors import CaptureError

Rows = Literal["auto", "all", "cond", "uncond"] | Sequence[int]

#: Every layer that attends to text (UNet/PixArt ``attn2``, SD3/FLUX joint ``attn``).
DEFAULT_ATTENTION: NamesFilter = None

#: Declared classifier-free guidance of the UNet calls running now (None: not declared).
_GUIDANCE: ContextVar[bool | None] = ContextVar("cfviz_classifier_free_guidance", default=None)


@contextmanager
def classifier_free_guidance(enabled: bool) -> Iterator[None]:
    """Declare whether the UNet calls inside the block run classifier-free guidance.

    ``rows="auto"`` keeps the conditional half of a guided batch (``[uncond, cond]``) and every row
    of an unguided one. A pipeline's ``do_classifier_free_guidance`` describes only its own
    ``pipe()`` calls (and keeps the value of the last one afterwards), so code that calls the UNet
    itself declares what it does; :func:`cfviz.diffusion.forward.mapdiff_forward` declares ``False``.

    Example
    -------
    >>> import torch, cfviz
    >>> from cfviz.capture.session import classifier_free_guidance
    >>> from cfviz.models import tiny_inpaint_pipeline
    >>> pipe = tiny_inpaint_pipeline(seed=0)
    >>> emb = torch.zeros(2, 77, pipe.text_encoder.config.hidden_size)
    >>> with cfviz.capture(pipe) as cap, classifier_free_guidance(True):
    ...     _ = pipe.unet(torch.randn(2, 9, 16, 16), 500, encoder_hidden_states=emb)
    >>> cap.cache.steps[0].rows
    (1,)
    """
    token = _GUIDANCE.set(bool(enabled))
    try:
        yield
    finally:
        _GUIDANCE.reset(token)


def _calling_pipeline_guidance(unet: Any) -> bool | None:
    """Whether the pipeline ``__call__`` running ``unet`` now (innermost on the stack) uses guidance.

    Any pipeline built on this denoiser (``.unet`` or ``.transformer``) counts (``pipe``, or
    another built from ``pipe.components``). Most pipelines say so in their
    ``do_classifier_free_guidance`` property; PixArt's keep it in a local variable of ``__call__``.
    ``None``: no pipeline call is running this denoiser.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__call__":
            owner = frame.f_locals.get("self")
            runs_it = any(unwrap_compiled(getattr(owner, attr, None)) is unet for attr in ("unet", "transformer"))
            if runs_it and hasattr(owner, "do_classifier_free_guidance"):
                return bool(owner.do_classifier_free_guidance)
            if runs_it and "do_classifier_free_guidance" in frame.f_locals:
                return bool(frame.f_locals["do_classifier_free_guidance"])
        frame = frame.f_back
    return None


def locate_text_attention(denoiser: Any, filt: NamesFilter = DEFAULT_ATTENTION,
                          family: Family | None = None) -> dict[str, tuple[Any, str]]:
    """Text-attending layers of ``denoiser`` selected by ``filt``: module path -> ``(module, kind)``.

    The family adapter (:mod:`cfviz.capture.families`) decides what attends to text: UNet and
    PixArt cross-attention (``attn2``), SD3 and FLUX joint attention, FLUX single-stream attention.
    Self-attention layers never match.
    """
    family = family or detect_family(denoiser)
    found = family.text_layers(denoiser)
    if not found:
        raise CaptureError(f"{type(denoiser).__name__} has no diffusers attention layers that attend to text "
                           "(cross-attention or joint attention) to record")
    what = "cross-attention layer" if all(k == "cross" for _, k in found.values()) else "text-attention layer"
    return {n: found[n] for n in select_names(found, filt, what=what, argument="attention")}


def locate_cross_attention(unet: Any, filt: NamesFilter = DEFAULT_ATTENTION) -> dict[str, Any]:
    """Text-attending modules of a denoiser selected by ``filt``, by module path, in model order.

    For UNets and PixArt these are the cross-attention (``attn2``) layers; for SD3 and FLUX the
    joint (and single-stream) attention layers (see :func:`locate_text_attention`).
    """
    return {n: m for n, (m, _) in locate_text_attention(unet, filt).items()}


def locate_modules(unet: Any, filt: NamesFilter) -> dict[str, Any]:
    """Any sub-modules of ``unet`` by path (for feature maps), in model order."""
    modules = {n: m for n, m in unet.named_modules() if n}
    chosen = select_names(modules, filt, what="module", argument="features")
    # a plain name also selects its children; keep only the outermost match of each branch (a
    # name none of whose dotted prefixes is chosen: linear in the modules, not quadratic)
    kept = set(chosen)
    outer = [n for n in chosen
             if not any(".".join(parts[:i]) in kept for parts in [n.split(".")] for i in range(1, len(parts)))]
    return {n: modules[n] for n in outer}


def _downsample_shape(sample_hw: tuple[int, int], n_queries: int) -> tuple[int, int]:
    """Spatial shape of a layer with ``n_queries`` positions inside a UNet fed ``sample_hw``.

    Works for non-square latents and odd sizes (each down-sampling rounds up); never guesses from
    ``sqrt(n_queries)``.
    """
    h, w = sample_hw
    for _ in range(8):
        if h * w == n_queries:
            return h, w
        h, w = -(-h // 2), -(-w // 2)
    raise CaptureError(f"cannot place {n_queries} attention queries on a latent of {sample_hw}: "
                       "the layer's resolution is not a power-of-two down-sampling of the input")


@dataclass
class CaptureSession:
    """Mutable state while a capture is installed (internal; users see :class:`Capture`)."""

    unet: Any
    pipeline: Any
    layers: dict[str, Any]
    blocks: dict[str, Any]
    tokens: TokenSelection | None
    heads: Literal["mean", "all"]
    rows: Rows
    dtype: Any
    device: Any
    reduce_steps: Literal[None, "mean"]
    cache: CaptureCache
    family: Family = field(default_factory=lambda: Family("cross"))
    kinds: dict[str, str] = field(default_factory=dict)
    joint_softmax: JointSoftmax = "joint"
    current: StepInfo | None = None
    text_length: int | None = None  #: text tokens of the denoiser call running now
    _weights: dict[Any, Any] = field(default_factory=dict)
    _unattributed: int = 0

    # ------------------------------------------------------------------ time
    def on_unet_start(self, module: Any, args: tuple, kwargs: dict) -> None:
        import torch

        call = self.family.call_inputs(args, kwargs)
        self._check_processors()
        batch = call.batch
        rows = self._resolve_rows(batch)
        t = torch.as_tensor(call.timestep).detach().float().flatten().cpu()
        if t.numel() == 1:
            value: float | list[float] = float(t.item())
        else:
            if t.numel() != batch:
                raise CaptureError(f"timestep has {t.numel()} values for a batch of {batch}")
            kept = [float(t[r]) for r in rows]
            value = kept[0] if len(set(kept)) == 1 else kept
        self.current = StepInfo(step=len(self.cache.steps), timestep=value, rows=tuple(rows),
                                batch_size=batch, sample_size=call.sample_size)
        self.text_length = call.text_length
        self.cache.steps.append(self.current)

    def on_unet_end(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        self.current = None
        self.text_length = None

    def _resolve_rows(self, batch: int) -> list[int]:
        rows = self.rows
        if isinstance(rows, str):
            if rows == "auto":
                rows = "cond" if self._guided() else "all"
            if rows == "all":
                return list(range(batch))
            if rows in ("cond", "uncond"):
                if batch % 2:
                    raise CaptureError(f"rows={rows!r} needs a batch doubled by classifier-free guidance "
                                       f"([uncond, cond]); this UNet call has an odd batch of {batch}. "
                                       "Pass rows='all' or explicit row indices.")
                half = batch // 2
                return list(range(half, batch)) if rows == "cond" else list(range(half))
            raise CaptureError(f"rows must be 'auto', 'all', 'cond', 'uncond' or a list of ints, got {rows!r}")
        chosen = [int(r) for r in rows]
        bad = [r for r in chosen if not 0 <= r < batch]
        if bad:
            raise CaptureError(f"rows {bad} are outside the UNet batch of {batch}")
        return chosen

    def _guided(self) -> bool:
        """Whether the UNet call starting now runs classifier-free guidance (for ``rows="auto"``)."""
        declared = _GUIDANCE.get()
        if declared is not None:
            return declared
        # a pipeline sets its flag at the start of each pipe() call and keeps it afterwards: it
        # speaks for this UNet call only when the call is made by that pipe() call
        return bool(_calling_pipeline_guidance(self.unet))

    def _check_processors(self) -> None:
        for name, attn in self.layers.items():
            proc = attn.get_processor()
            if not (isinstance(proc, RecordingProcessor) and self._owns(proc)):
                raise CaptureError(
                    f"the attention processor of {name} was replaced while the capture was active "
                    "(set_attn_processor, attention slicing, xformers or fused QKV); configure the "
                    "model before entering cfviz.capture")

    def _owns(self, proc: Any) -> bool:
        # nested captures wrap each other: ours may sit anywhere in the chain
        while isinstance(proc, RecordingProcessor):
            if proc.session is self:
                return True
            proc = proc.inner
        return False

    # ------------------------------------------------------------------ records
    def _token_weights(self, device: Any, n_rows: int, key_length: int) -> Any:
        sel = self.tokens
        if sel is None:
            return None
        key = (str(device), n_rows, key_length)
        w = self._weights.get(key)
        if w is None:
            w = sel.weights(device, length=key_length)
            if w.shape[0] == 1:
                w = w.expand(n_rows, -1, -1)
            elif w.shape[0] != n_rows:
                raise CaptureError(f"capture got {w.shape[0]} prompts but the UNet call keeps {n_rows} rows; "
                                   "pass one prompt, or one per kept row")
            self._weights[key] = w
        return w

    def record_attention(self, name: str, attn: Any, hidden_states: Any, encoder_hidden_states: Any,
                         attention_mask: Any = None, temb: Any = None, query: Any = None) -> None:
        import torch

        step = self.current
        if step is None:
            self._unattributed += 1
            return
        with torch.no_grad():
            probs, hw = attention_probabilities(attn, hidden_states, encoder_hidden_states,
                                                attention_mask, temb, rows=list(step.rows), query=query)
            if hw is None:
                hw = _downsample_shape(step.sample_size, probs.shape[2])
            self._reduce_and_add(name, step, probs, hw)

    def record_joint(self, name: str, attn: Any, kind: str, hidden_states: Any, encoder_hidden_states: Any,
                     image_rotary_emb: Any, projections: Any = None, attention_mask: Any = None) -> None:
        """Record the image-query x text-key block of a joint attention call (SD3, FLUX).

        ``projections``: the layer's own projections of this call (``joint.ProjectionTap``), if
        borrowed; ``attention_mask``: the mask the layer's processor received (FLUX applies it).
        """
        import torch

        step = self.current
        if step is None:
            self._unattributed += 1
            return
        if kind == "flux_single" and self.text_length is None:
            raise CaptureError(f"{name}: a FLUX single-stream layer ran in a call without encoder_hidden_states; "
                               "cannot tell its text tokens from its image tokens")
        with torch.no_grad():
            probs = text_attention(attn, kind, hidden_states, encoder_hidden_states,  # type: ignore[arg-type]
                                   text_length=self.text_length, image_rotary_emb=image_rotary_emb,
                                   rows=list(step.rows), softmax=self.joint_softmax,
                                   projections=projections, attention_mask=attention_mask)
            h, w = step.sample_size
            n_q = probs.shape[2]
            if h * w < n_q:  # FLUX Kontext appends reference-image tokens after the image's own
                probs, hw = probs[:, :, :h * w], (h, w)
            else:  # SD3 patchifies the latent (patch 2: half the grid)
                hw = _downsample_shape(step.sample_size, n_q)
            self._reduce_and_add(name, step, probs, hw)

    def _reduce_and_add(self, name: str, step: StepInfo, probs: Any, hw: tuple[int, int]) -> None:
        """Token selection, head mean, reshape to maps and store: shared by every layer kind."""
        import torch

        b, n_heads, _, n_k = probs.shape
        w = self._token_weights(probs.device, b, n_k)
        if self.heads == "mean":
            maps = probs.mean(dim=1)  # (b, q, keys), fp32 head mean
            maps = maps if w is None else torch.bmm(maps, w)  # (b, q, K)
            maps = maps.transpose(1, 2).reshape(b, -1, *hw)
        else:
            maps = probs if w is None else torch.matmul(probs, w[:, None])  # (b, H, q, K)
            maps = maps.transpose(2, 3).reshape(b, n_heads, -1, *hw)
        self.cache._add("attn", name, step.step, self._store(maps), reduce=self.reduce_steps)

    def record_feature(self, name: str, output: Any) -> None:
        import torch

        step = self.current
        if step is None:
            self._unattributed += 1
            return
        try:  # the family lays transformer blocks' image tokens out on their grid
            tensor = self.family.feature_map(output, step.sample_size)
        except CaptureError as exc:
            raise CaptureError(f"features={name!r}: {exc}") from None
        with torch.no_grad():
            rows = list(step.rows)
            # index unless the rows are the whole batch in order ([1, 0] and [0, 0] have its length)
            kept = tensor if rows == list(range(tensor.shape[0])) else tensor[rows]
            self.cache._add("feat", name, step.step, self._store(kept.float()), reduce=self.reduce_steps)

    def _store(self, t: Any) -> Any:
        if self.reduce_steps == "mean":  # running sums stay float32
            return t.detach().float().to(self.device, non_blocking=True)
        return t.detach().to(device=self.device, dtype=self.dtype, non_blocking=True)


class Capture:
    """A capture of cross-attention maps and feature maps; use it as a context manager.

    Create it with :func:`capture`. Inside the ``with`` block every UNet call is one *step*;
    after the block ``cap.cache`` (a :class:`~cfviz.capture.cache.CaptureCache`) holds the records.
    """

    def __init__(self, session: CaptureSession) -> None:
        self._session = session
        self._installed: list[tuple[Any, Any, RecordingProcessor]] = []  # (module, replaced, our recorder)
        self._handles: list[Any] = []
        self.active = False

    @property
    def cache(self) -> CaptureCache:
        """The recorded maps (grows while the capture is active)."""
        return self._session.cache

    @property
    def layers(self) -> list[str]:
        """Module paths of the recorded cross-attention layers."""
        return list(self._session.layers)

    @property
    def blocks(self) -> list[str]:
        """Module paths of the modules whose outputs are recorded as feature maps."""
        return list(self._session.blocks)

    def __enter__(self) -> Capture:
        if self.active:
            raise CaptureError("this capture is already active; create a new one with cfviz.capture(...)")
        s = self._session
        try:
            for name, attn in s.layers.items():
                original = attn.get_processor()
                recorder = wrap_processor(original, name, s, s.kinds.get(name, "cross"))
                attn.set_processor(recorder)
                self._installed.append((attn, original, recorder))
            self._handles.append(s.unet.register_forward_pre_hook(s.on_unet_start, with_kwargs=True))
            self._handles.append(s.unet.register_forward_hook(s.on_unet_end, with_kwargs=True))
            for name, module in s.blocks.items():
                self._handles.append(module.register_forward_hook(
                    lambda _m, _a, out, _n=name: s.record_feature(_n, out)))
        except BaseException:
            self._restore()
            raise
        self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
        s = self._session
        s.cache._finalize(reduce=s.reduce_steps)
        if s._unattributed:
            warnings.warn(f"{s._unattributed} attention/feature calls happened outside a UNet call and "
                          "were not recorded (they belong to no step)", RuntimeWarning, stacklevel=2)

    def _restore(self) -> None:
        """Remove our hooks and take our recorders out of each layer, newest first."""
        try:
            for handle in reversed(self._handles):
                handle.remove()
        finally:
            self._handles.clear()
            for attn, original, recorder in reversed(self._installed):
                _uninstall(attn, original, recorder)
            self._installed.clear()
            self.active = False
            self._session.current = None


def _uninstall(attn: Any, original: Any, recorder: RecordingProcessor) -> None:
    """Take ``recorder`` out of ``attn``'s processor chain wherever it sits.

    Captures may overlap and exit in any order (enter A, enter B, exit A, exit B): a capture
    entered later wraps ours, so ours is spliced out of the chain and the later one now wraps what
    ours wrapped; the last one out puts the original processor back.
    """
    current = attn.get_processor()
    if current is recorder:
        attn.set_processor(recorder.inner)
        return
    outer = current
    while isinstance(outer, RecordingProcessor):
        if outer.inner is recorder:
            outer.inner = recorder.inner
            return
        outer = outer.inner
    # our recorder is no longer installed (the processor was replaced during the capture, which
    # the next UNet call reports): put back the processor the capture found, without recorders
    while isinstance(original, RecordingProcessor):
        original = original.inner
    attn.set_processor(original)


def _model_size(unet: Any, pipeline: Any) -> int | None:
    """A UNet's configured image size in px: ``sample_size`` times the VAE's factor (8 for SD VAEs)."""
    size = getattr(getattr(unet, "config", None), "sample_size", None)
    if not isinstance(size, int):
        return None
    return size * int(getattr(pipeline, "vae_scale_factor", 8) or 8)


def capture(target: Any, *, attention: NamesFilter | Literal[False] = DEFAULT_ATTENTION,
            features: NamesFilter = None, tokens: Sequence[TokenSpec] | None = None,
            prompt: str | Sequence[str] | None = None, tokenizer: Any = None,
            heads: Literal["mean", "all"] = "mean", rows: Rows = "auto", dtype: Any = None,
            device: Any = "cpu", reduce_steps: Literal[None, "mean"] = None,
            metadata: dict[str, Any] | None = None, joint_softmax: JointSoftmax = "joint") -> Capture:
    """Record text-attention probabilities and feature maps from a diffusers denoiser.

    One API for every family (:mod:`cfviz.capture.families`): SD 1.x/2.x and SDXL UNets (plain
    and inpainting), SD3's MMDiT, FLUX (incl. Fill) and PixArt. Each denoiser call is one step.

    Parameters
    ----------
    target:
        A diffusers pipeline (its ``.unet`` or ``.transformer`` is used) or the denoiser itself.
    attention:
        Which text-attending layers to record: a name, glob, regex, list or predicate over module
        paths (default: all of them — ``attn2`` cross-attention in UNets and PixArt, joint
        ``attn`` in SD3 and FLUX, also FLUX's single-stream blocks). ``False`` records none.
    features:
        Modules whose outputs are recorded as feature maps (e.g. ``["up_blocks.1", "up_blocks.2"]``);
        ``None`` records none.
    tokens:
        Words (sub-word aware, all occurrences averaged) or integer positions (0 = start token) to
        keep; ``None`` keeps all positions. Words need ``prompt``. Families with several text
        streams (SD3: CLIP then T5) look a word up in each and average every occurrence;
        ``"t5:word"`` / ``"clip:word"`` restricts it to one stream, and ``cache.tokens.streams``
        says where each label was found.
    prompt, tokenizer:
        The prompt(s) given to the text encoder — one, or one per kept batch row — and the
        tokenizer (default: the pipeline's; for a bare SD3 transformer a mapping
        ``{"clip": ..., "t5": ...}``).
    heads:
        ``"mean"`` averages over heads as maps are computed; ``"all"`` keeps every head.
    rows:
        Batch rows to keep: ``"auto"`` keeps the conditional half of a UNet call that runs
        classifier-free guidance (batch ``[uncond, cond]``) and every row otherwise — guided means
        made by ``pipe()`` with guidance on, or declared with :func:`classifier_free_guidance`;
        ``"all"``, ``"cond"``, ``"uncond"`` or explicit indices, in any order and with repeats
        (row ``i`` of the records is batch row ``rows[i]``). The rows kept are recorded with each step.
    dtype, device:
        Storage dtype (default float16) and device (default CPU) of the records. Probabilities are
        computed in float32 and averaged in float32 before the cast.
    reduce_steps:
        ``None`` keeps every step; ``"mean"`` keeps a float32 running mean over steps (constant memory).
    metadata:
        Free-form JSON-able facts stored with the cache (e.g. seed, image id).
    joint_softmax:
        SD3/FLUX joint attention: ``"joint"`` keeps the layer's own probabilities (softmax over
        image and text keys, text columns kept); ``"text"`` renormalises them over the text keys.
        See :mod:`cfviz.capture.joint` for why ``"joint"`` is the default.

    Returns
    -------
    Capture
        A context manager; after the block, ``cap.cache`` holds the maps.

    Example
    -------
    >>> import torch, cfviz
    >>> from cfviz.models import tiny_inpaint_pipeline
    >>> pipe = tiny_inpaint_pipeline(seed=0)
    >>> emb = torch.zeros(1, 77, pipe.text_encoder.config.hidden_size)
    >>> with cfviz.capture(pipe.unet, attention="up_blocks.*attn2", features=["up_blocks.1"]) as cap:
    ...     _ = pipe.unet(torch.randn(1, 9, 32, 48), 500, encoder_hidden_states=emb)
    >>> cap.cache.attention_maps(size=32).dims
    ('step', 'layer', 'batch', 'token', 'h', 'w')
    """
    import torch

    unet, pipeline = denoiser_of(target)
    family = detect_family(unet)
    located = {} if attention is False else locate_text_attention(unet, attention, family)
    layers = {n: m for n, (m, _) in located.items()}
    kinds = {n: k for n, (_, k) in located.items()}
    blocks = {} if features is None else locate_modules(unet, features)
    if not layers and not blocks:
        raise CaptureError("nothing to record: pass attention=... and/or features=...")
    if heads not in ("mean", "all"):
        raise CaptureError(f"heads must be 'mean' or 'all', got {heads!r}")
    if reduce_steps not in (None, "mean"):
        raise CaptureError(f"reduce_steps must be None or 'mean', got {reduce_steps!r}")
    if joint_softmax not in ("joint", "text"):
        raise CaptureError(f"joint_softmax must be 'joint' or 'text', got {joint_softmax!r}")
    selection = None
    if layers and (tokens is not None or prompt is not None):
        streams = family.text_streams(pipeline, tokenizer)
        if not streams:
            raise CaptureError("token selection needs a tokenizer: pass tokenizer=pipe.tokenizer (for SD3: "
                               "tokenizer={'clip': pipe.tokenizer, 't5': pipe.tokenizer_3})")
        if prompt is None:
            if any(isinstance(t, str) for t in tokens or ()):
                raise CaptureError("tokens given as words need prompt=...: the prompt(s) given to the text encoder")
            prompt = ""
        if family.name in ("sd", "sdxl", "cross"):  # one CLIP stream: the labels of earlier versions
            selection = select_tokens(streams[0].tokenizer, prompt, tokens)
        else:
            selection = select_tokens_in_streams(streams, prompt, tokens)
    dtype = torch.float16 if dtype is None else dtype
    cache = CaptureCache(
        layers=list(layers), blocks=list(blocks), tokens=selection, heads=heads,
        settings={"attention": list(layers), "features": list(blocks),
                  "tokens": None if selection is None else list(selection.labels),
                  "heads": heads, "rows": rows if isinstance(rows, str) else [int(r) for r in rows],
                  "dtype": str(dtype).replace("torch.", ""), "reduce_steps": reduce_steps},
        metadata=dict(metadata or {}),
    )
    cache.layer_heads = {n: int(m.heads) for n, m in layers.items() if isinstance(getattr(m, "heads", None), int)}
    cache.model_size = _model_size(unet, pipeline) if family.name in ("sd", "sdxl") else None
    if family.name != "sd":  # SD1/SD2 settings stay as they were (store identities do not change)
        cache.settings["family"] = family.name
    if any(k != "cross" for k in kinds.values()):
        cache.settings["joint_softmax"] = joint_softmax
    session = CaptureSession(unet=unet, pipeline=pipeline, layers=layers, blocks=blocks, tokens=selection,
                             heads=heads, rows=rows, dtype=dtype, device=torch.device(device),
                             reduce_steps=reduce_steps, cache=cache, family=family, kinds=kinds,
                             joint_softmax=joint_softmax)
    return Capture(session)
