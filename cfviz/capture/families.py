"""Denoiser families behind one capture API: a small adapter per family.

An adapter says, for one family of diffusers denoisers,

* which modules attend to text and how (:meth:`Family.text_layers`: module path -> layer kind);
* how to read a denoiser call (:meth:`Family.call_inputs`: batch, timestep, spatial grid, text length);
* which tokenizers label the text tokens the layers attend to (:meth:`Family.text_streams`).

The capture engine, cache, store and viz never look at the family. Families:

========  =====================================  ====================================================
name      denoiser                               text attention
========  =====================================  ====================================================
``sd``    ``UNet2DConditionModel`` (SD 1.x/2.x,  ``attn2`` cross-attention; CLIP (77 tokens)
          inpainting when ``in_channels == 9``)
``sdxl``  ``UNet2DConditionModel`` with          ``attn2``; CLIP (the two text encoders share token
          ``addition_embed_type="text_time"``    positions: their states are concatenated per token)
``sd3``   ``SD3Transformer2DModel`` (MMDiT)      joint ``transformer_blocks.i.attn``: image queries x
                                                 text keys; CLIP (77) then T5 (``max_sequence_length``)
``flux``  ``FluxTransformer2DModel`` (FLUX.1,    joint ``transformer_blocks.i.attn`` and single-stream
          Fill when ``in_channels == 384``)      ``single_transformer_blocks.i.attn``; T5 only (FLUX's
                                                 CLIP gives the pooled vector, never attended to)
``pixart`` ``PixArtTransformer2DModel``          ``attn2`` cross-attention; T5
``cross`` any other module with diffusers        ``attn2``-style cross-attention; the caller's tokenizer
          cross-attention (UNet-style call)
========  =====================================  ====================================================

Example
-------
>>> from cfviz.models import tiny_inpaint_pipeline
>>> fam = detect_family(tiny_inpaint_pipeline(seed=0))
>>> fam.name, fam.inpainting
('sd', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cfviz.capture.joint import LayerKind
from cfviz.errors import CaptureError

#: Pipeline attributes that hold the denoiser, in the order they are tried.
_DENOISER_ATTRS = ("unet", "transformer")


@dataclass(frozen=True)
class CallInputs:
    """What the capture needs from one denoiser call."""

    batch: int
    #: the ``timestep`` argument on the 0..1000 training scale: as given (SD3 already passes
    #: sigma*1000), FLUX's sigma times 1000, so every family's steps are labelled alike and a
    #: store's timesteps are the ``timesteps`` asked for
    timestep: Any
    sample_size: tuple[int, int]  #: latent (h, w); FLUX: the packed token grid of ``img_ids``
    text_length: int | None  #: text tokens of ``encoder_hidden_states`` (None when absent)


@dataclass(frozen=True)
class TextStream:
    """One tokenised text sequence inside the key set of the text-attending layers.

    ``offset`` is where the stream starts in the attended text sequence; ``length`` its number of
    positions (``None``: the tokenizer's ``model_max_length``; T5 streams follow the pipeline's
    ``max_sequence_length``, which only pads or trims the end).
    """

    name: str
    tokenizer: Any
    offset: int = 0
    length: int | None = None


def _arg(args: tuple, kwargs: dict, name: str, index: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


@dataclass(frozen=True)
class Family:
    """Adapter for one denoiser family (see the module docstring)."""

    name: str
    inpainting: bool = False

    # ------------------------------------------------------------------ layers
    def text_layers(self, denoiser: Any) -> dict[str, tuple[Any, LayerKind]]:
        """Every module of ``denoiser`` that attends to text, by module path, in model order."""
        found: dict[str, tuple[Any, LayerKind]] = {}
        for name, m in denoiser.named_modules():
            if not _is_attention(m):
                continue
            if self.name == "sd3":
                # joint attention has added K/V projections for the text; SD3.5's attn2 is image-only
                if getattr(m, "add_k_proj", None) is not None:
                    found[name] = (m, "sd3_joint")
            elif self.name == "flux":
                if getattr(m, "add_k_proj", None) is not None:
                    found[name] = (m, "flux_joint")
                elif name.startswith("single_transformer_blocks."):
                    found[name] = (m, "flux_single")
            elif getattr(m, "is_cross_attention", False):
                found[name] = (m, "cross")
        return found

    # ------------------------------------------------------------------ calls
    def call_inputs(self, args: tuple, kwargs: dict) -> CallInputs:
        """Batch, timestep, spatial grid and text length of a denoiser call ``(args, kwargs)``."""
        if self.name in ("sd", "sdxl", "cross"):
            sample = _arg(args, kwargs, "sample", 0)
            timestep = _arg(args, kwargs, "timestep", 1)
            text = _arg(args, kwargs, "encoder_hidden_states", 2)
        else:
            sample = _arg(args, kwargs, "hidden_states", 0)
            text = _arg(args, kwargs, "encoder_hidden_states", 1)
            timestep = _arg(args, kwargs, "timestep", {"pixart": 2}.get(self.name, 3))
        if sample is None or timestep is None:
            raise CaptureError(f"the {self.name} denoiser was called without its sample/timestep; "
                               "cannot label the step")
        if self.name == "flux":
            hw = _flux_grid(_arg(args, kwargs, "img_ids", 4), int(sample.shape[1]))
            timestep = timestep * 1000  # FLUX takes sigma; its pipeline's schedule is sigma * 1000
        else:
            hw = (int(sample.shape[-2]), int(sample.shape[-1]))
        text_length = int(text.shape[1]) if getattr(text, "ndim", 0) == 3 else None
        return CallInputs(int(sample.shape[0]), timestep, hw, text_length)

    # ------------------------------------------------------------------ tokens
    def text_streams(self, pipeline: Any, tokenizer: Any = None) -> list[TextStream]:
        """The tokenizers whose tokens the text-attending layers see, in key order.

        ``tokenizer`` overrides the pipeline's: one tokenizer (for a one-stream family), or a
        mapping from stream name (``"clip"``, ``"t5"``) to tokenizer.
        """
        if self.name == "sd3":
            names = [("clip", "tokenizer", 0, 77), ("t5", "tokenizer_3", 77, None)]
        elif self.name == "flux":
            names = [("t5", "tokenizer_2", 0, None)]
        elif self.name == "pixart":
            names = [("t5", "tokenizer", 0, None)]
        else:
            names = [("clip", "tokenizer", 0, None)]
        if tokenizer is not None and not isinstance(tokenizer, Mapping):
            if len(names) > 1:
                raise CaptureError(f"a {self.name} denoiser attends to several text streams "
                                   f"({', '.join(n for n, *_ in names)}): pass tokenizer={{'clip': ..., 't5': ...}}")
            tokenizer = {names[0][0]: tokenizer}
        if isinstance(tokenizer, Mapping):
            unknown = set(tokenizer) - {n for n, *_ in names}
            if unknown:
                raise CaptureError(f"tokenizer streams {sorted(unknown)} are not text streams of a {self.name} "
                                   f"denoiser; its streams are {[n for n, *_ in names]}")
        streams = []
        for stream, attr, offset, length in names:
            tok = tokenizer.get(stream) if isinstance(tokenizer, Mapping) else getattr(pipeline, attr, None)
            if tok is not None:
                streams.append(TextStream(stream, tok, offset, length))
        return streams


    # ------------------------------------------------------------------ features
    def feature_map(self, output: Any, sample_size: tuple[int, int]) -> Any:
        """A feature module's output as a ``(batch, channels, h, w)`` map.

        UNet blocks give maps (down blocks a tuple whose first item is the map); SD3/FLUX
        transformer blocks give ``(text, image)`` token streams and PixArt's ``(batch, tokens,
        channels)``: the image tokens are laid on their grid (the latent halved by the 2x2 patches;
        FLUX: the ``img_ids`` grid, ``sample_size``), in row-major order as the models pack them.
        """
        import torch

        if isinstance(output, (tuple, list)):
            two_streams = self.name in ("sd3", "flux") and len(output) == 2
            output = output[1] if two_streams else output[0]
        tensor = getattr(output, "sample", output)
        if isinstance(tensor, torch.Tensor) and tensor.ndim == 3 and self.name in ("sd3", "flux", "pixart"):
            b, n, c = tensor.shape
            h, w = sample_size if self.name == "flux" else _patch_grid(sample_size, n)
            if h * w > n:
                raise CaptureError(f"a {self.name} block returned {n} image tokens for a {h}x{w} grid")
            return tensor[:, :h * w].transpose(1, 2).reshape(b, c, h, w)
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            raise CaptureError(f"the module returns {type(tensor).__name__} {tuple(getattr(tensor, 'shape', ()))}, "
                               "not a (batch, channels, h, w) map or a transformer block's image tokens")
        return tensor


def _patch_grid(sample_hw: tuple[int, int], n_tokens: int) -> tuple[int, int]:
    """The token grid of a patchified latent: the latent itself or halved (rounding up) until it fits."""
    h, w = sample_hw
    for _ in range(4):
        if h * w == n_tokens:
            return h, w
        h, w = -(-h // 2), -(-w // 2)
    raise CaptureError(f"cannot place {n_tokens} image tokens on a latent of {tuple(sample_hw)}")


def _flux_grid(img_ids: Any, n_tokens: int) -> tuple[int, int]:
    """The ``(h, w)`` token grid of FLUX's packed latents from ``img_ids`` ``(N, 3)``: (index, row, col)."""
    if img_ids is None:
        raise CaptureError("the FLUX transformer was called without img_ids; cannot place its image tokens")
    ids = img_ids[0] if img_ids.ndim == 3 else img_ids
    ids = ids[ids[:, 0] == ids[0, 0]]  # the generated image (Kontext appends reference images)
    h, w = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
    if h * w > n_tokens:
        raise CaptureError(f"img_ids describe a {h}x{w} grid but the call has {n_tokens} image tokens")
    return h, w


def _is_attention(module: Any) -> bool:
    return hasattr(module, "get_processor") and hasattr(module, "set_processor") and hasattr(module, "to_q")


def unwrap_compiled(module: Any) -> Any:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) compiles, else ``module`` itself.

    Capture works on the original module: its layer paths (no ``_orig_mod.`` prefix) and class
    name the layers and the family as for the uncompiled model, and calls of the wrapper run it.
    """
    seen = 0
    while hasattr(module, "_orig_mod") and seen < 8:
        module, seen = module._orig_mod, seen + 1
    return module


def denoiser_of(target: Any) -> tuple[Any, Any]:
    """``(denoiser, pipeline_or_None)`` for a pipeline (its ``.unet`` or ``.transformer``) or a bare module.

    A compiled denoiser (``torch.compile``) is returned unwrapped (:func:`unwrap_compiled`).
    """
    for attr in _DENOISER_ATTRS:
        den = getattr(target, attr, None)
        if den is not None and hasattr(den, "named_modules"):
            return unwrap_compiled(den), target
    if hasattr(target, "named_modules"):
        return unwrap_compiled(target), None
    raise CaptureError(f"capture needs a diffusers pipeline (with a .unet or .transformer) or a torch module, "
                       f"got {type(target).__name__}")


def prompt_tokenizer(pipeline: Any) -> Any:
    """The tokenizer of the first text stream a pipeline's denoiser attends to (SD, SDXL, SD3: CLIP;
    FLUX, PixArt: T5): the one whose positions ``tokens=[0, 1, ...]`` count first.

    >>> from cfviz.models.families import tiny_family_pipeline
    >>> pipe = tiny_family_pipeline("flux")
    >>> prompt_tokenizer(pipe) is pipe.tokenizer_2
    True
    """
    streams = detect_family(pipeline).text_streams(pipeline)
    if not streams:
        raise CaptureError(f"{type(pipeline).__name__} has no tokenizer for the text its denoiser attends to")
    return streams[0].tokenizer


def denoiser_device(pipeline: Any) -> Any:
    """The device of a pipeline's denoiser (``.unet`` or ``.transformer``)."""
    return denoiser_of(pipeline)[0].device


#: Short labels of transformer-family modules (top-level paths), checked in order; UNet paths
#: keep :func:`cfviz.capture.naming.short_name`'s (``up1.attn0``).
_LABELS: list[tuple[str, str]] = [
    (r"single_transformer_blocks\.(\d+)(?:\.attn)?", "single{}"),  # FLUX single-stream block (text + image)
    (r"transformer_blocks\.(\d+)\.attn", "joint{}"),  # SD3/FLUX joint attention
    (r"transformer_blocks\.(\d+)\.attn2", "cross{}"),  # PixArt cross-attention (SD3.5: image-only "dual")
    (r"transformer_blocks\.(\d+)\.attn1", "self{}"),
    (r"transformer_blocks\.(\d+)", "block{}"),
]


def layer_label(name: str, family: str | None = None) -> str:
    """The short on-screen name of a captured layer or feature block, per family.

    UNets (SD, SDXL): ``up1.attn0`` as :func:`cfviz.capture.naming.short_name` gives; SD3 and
    FLUX joint attention ``joint3``; FLUX single-stream blocks ``single5``; PixArt
    cross-attention ``cross3``; transformer blocks (feature maps) ``block3``. With ``family``
    ``"sd3"``, ``attn2`` is SD3.5's image-only second attention (``dual3``). Unknown paths are
    kept as they are.

    >>> [layer_label(n) for n in ("up_blocks.1.attentions.0.transformer_blocks.0.attn2",
    ...                            "transformer_blocks.3.attn", "single_transformer_blocks.5.attn",
    ...                            "transformer_blocks.3.attn2", "transformer_blocks.12")]
    ['up1.attn0', 'joint3', 'single5', 'cross3', 'block12']
    >>> layer_label("transformer_blocks.0.attn2", family="sd3")
    'dual0'
    """
    import re

    from cfviz.capture.naming import short_name

    name = str(name)
    for pattern, label in _LABELS:
        m = re.fullmatch(pattern, name)
        if m:
            if family == "sd3" and label == "cross{}":
                label = "dual{}"
            return label.format(m.group(1))
    return short_name(name)


def layer_labels(names: Any, family: str | None = None) -> list[str]:
    """:func:`layer_label` of each name, or the full names when the labels would collide.

    >>> layer_labels(["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"])
    ['joint0', 'single0']
    """
    labels = [layer_label(str(n), family) for n in names]
    return labels if len(set(labels)) == len(labels) else [str(n) for n in names]


def layer_kind_title(names: Any, *, blocks: bool = False) -> str:
    """A column/row title for a set of layers (or blocks): what kind of attention they are.

    >>> layer_kind_title(["transformer_blocks.0.attn"]), layer_kind_title(["up_blocks.1"], blocks=True)
    ('text-attention layer', 'UNet block')
    """
    labels = [layer_label(str(n)) for n in names]
    if blocks:
        return "transformer block" if any(lab.startswith(("block", "single")) for lab in labels) else "UNet block"
    if any(lab.startswith(("joint", "single")) for lab in labels):
        return "text-attention layer"
    return "cross-attention layer"


def detect_family(target: Any) -> Family:
    """The :class:`Family` of a pipeline or a bare denoiser (by class and config).

    The class is that of the denoiser or of any class it derives from (a subclass of
    ``FluxTransformer2DModel`` is FLUX), after unwrapping ``torch.compile`` (:func:`denoiser_of`).
    """
    den, _ = denoiser_of(target)
    classes = {c.__name__ for c in type(den).__mro__}
    config = getattr(den, "config", None) or {}
    get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    in_channels = get("in_channels", None)
    if "UNet2DConditionModel" in classes:
        name = "sdxl" if get("addition_embed_type", None) == "text_time" else "sd"
        return Family(name, inpainting=in_channels == 9)
    if "SD3Transformer2DModel" in classes:
        return Family("sd3")
    if "FluxTransformer2DModel" in classes:
        return Family("flux", inpainting=in_channels == 384)  # Fill: latents 64 + masked 64 + mask 256
    if "PixArtTransformer2DModel" in classes:
        return Family("pixart")
    return Family("cross")


#: Names of the supported families, for messages and docs.
FAMILIES: tuple[str, ...] = ("sd", "sdxl", "sd3", "flux", "pixart", "cross")
