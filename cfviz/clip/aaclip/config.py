"""AA-CLIP hyper-parameters of the adapted model, resolved against a CLIP model's depths.

The paper's backbone is ViT-L-14-336 (24 vision blocks, 12 text blocks): adapters after the
first ``K_T = 3`` text and ``K_I = 6`` vision blocks, patch levels after blocks 6, 12, 18, 24.
Those are a quarter of each depth, so the defaults (``None``) are *resolved* from the model:
``K = round(depth / 4)`` and levels at 1/4, 2/4, 3/4 and 4/4 of the vision depth. This gives
exactly the paper's numbers on ViT-L-14-336 and fits smaller models (the 4-block tiny CLIP gets
``K_T = K_I = 1`` and levels ``(1, 2, 3, 4)``). Explicit values are validated with one clear error.

Example
-------
>>> from cfviz.models import tiny_clip
>>> AAClipConfig().resolve(tiny_clip(seed=0)).levels
(1, 2, 3, 4)
>>> AAClipConfig(image_adapter_blocks=6).resolve(tiny_clip(seed=0))
Traceback (most recent call last):
...
ValueError: image_adapter_blocks=6 does not fit cfviz-tiny-clip, whose vision tower has 4 blocks; give a value in 0..4 (or None for round(4 / 4) = 1)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cfviz.clip.aaclip.names import NAME_MODES
from cfviz.errors import ConfigError  # a ValueError too; the CLI prints it as one line

#: AA-CLIP's prompt pieces (``dataset/constants.py`` of the released code).
NORMAL_STATES: tuple[str, ...] = ("{}", "a {}", "the {}")
ANOMALOUS_STATES: tuple[str, ...] = ("a damaged {}", "a broken {}", "a {} with flaw", "a {} with defect",
                                     "a {} with damage")
TEMPLATES: tuple[str, ...] = ("{}.", "a photo of {}.")
INITS = ("xavier", "clip")
#: ``activation`` values: exact GELU (released), QuickGELU, or the CLIP's own (:func:`~.encoders.mlp_activation`).
ACTIVATIONS = ("gelu", "quick_gelu", "model")


@dataclass(frozen=True)
class AAClipPrompts:
    """State words and templates: each anchor averages ``template(state(class name))`` sentences.

    >>> AAClipPrompts().sentences("metal_nut")[1][:2]
    ['a damaged metal nut.', 'a photo of a damaged metal nut.']
    """

    normal: tuple[str, ...] = NORMAL_STATES
    anomalous: tuple[str, ...] = ANOMALOUS_STATES
    templates: tuple[str, ...] = TEMPLATES

    def sentences(self, class_name: str) -> tuple[list[str], list[str]]:
        """``(normal, anomalous)`` prompt lists for a class (underscores become spaces)."""
        if not isinstance(class_name, str) or not class_name.strip():
            raise ValueError(f"class_name must be a non-empty string such as 'bottle', got {class_name!r}")
        name = class_name.replace("_", " ").strip()
        return ([t.format(s.format(name)) for s in self.normal for t in self.templates],
                [t.format(s.format(name)) for s in self.anomalous for t in self.templates])


@dataclass(frozen=True)
class AAClipConfig:
    """Structure of the adapted model.

    Attributes
    ----------
    text_adapter_blocks, image_adapter_blocks:
        ``K_T`` and ``K_I``: adapters after the first K blocks (``None``: a quarter of the depth,
        the paper's 3 and 6 on ViT-L-14-336; 0 disables a side).
    text_lambda, image_lambda:
        Residual mixing weight ``x <- lambda * a * |x|/|a| + (1 - lambda) * x`` (paper: 0.1).
        At 0 the adapters change nothing.
    levels:
        1-based vision blocks whose patch tokens feed a segmentation projection (``None``: 1/4,
        2/4, 3/4, 4/4 of the depth, the paper's 6, 12, 18, 24).
    proj_relu:
        LeakyReLU after the segmentation/detection projections (released code: ``--relu``, off).
    text_proj_relu:
        LeakyReLU after the text projection that replaces CLIP's (released code: always on).
    init:
        ``"xavier"`` (released code: Xavier-uniform everywhere) or ``"clip"``: projections start
        as CLIP's own ``proj`` / ``text_projection`` and adapters as the identity, so that an
        untrained model (with ``text_proj_relu=False``) reproduces plain CLIP's embeddings.
    logit_scale:
        Similarity scale ``S = scale * <V, T>`` (released code: 100).
    blur_sigma, blur_kernel:
        Gaussian blur of the test-time map on the patch grid (released code, industrial: 1, 7;
        medical: 1.5, 9); ``blur_sigma=0`` disables it.
    prompts:
        :class:`AAClipPrompts`.
    image_size:
        Input side in pixels; the position embeddings are interpolated bicubically to its grid
        (:func:`cfviz.clip.posembed.resize_clip`). ``None``: the released code's 518 px
        (``train.py`` / ``test.py``: ``--img_size 518``; ``methods.md`` 3.1) on the paper's
        backbone, i.e. any model with ViT-L-14-336's geometry (336 px, 14 px patches: a 37x37
        grid instead of 24x24), and the model's own size on any other (the released code was
        run at 518 only on ViT-L/14; 518 is no multiple of 16). ``"model"``: the model's own
        size (what checkpoints written before this setting existed used).
    class_names:
        Words for a category in the prompts: ``"descriptive"`` (the released code's
        ``REAL_NAMES``, e.g. "metal nut which has four notched edges"; see
        :mod:`cfviz.clip.aaclip.names`) or ``"plain"`` (the category name, "metal nut").
    activation:
        The frozen CLIP's MLP activation while AA-CLIP runs it (training and test):
        ``"gelu"`` (exact GELU: the released ``create_model`` builds ViT-L-14-336 from
        ``model_configs/ViT-L-14-336.json``, which sets no ``quick_gelu``, then loads the OpenAI
        weights), ``"quick_gelu"`` (the activation OpenAI trained CLIP with, which open_clip's
        ``openai`` tag builds) or ``"model"`` (whatever the CLIP was built with: QuickGELU from
        the ``openai`` tag, exact GELU from a local file; what checkpoints written before this
        setting ran with). The CLIP itself is not changed (:func:`~.encoders.mlp_activation`).
    """

    text_adapter_blocks: int | None = None
    image_adapter_blocks: int | None = None
    text_lambda: float = 0.1
    image_lambda: float = 0.1
    levels: tuple[int, ...] | None = None
    proj_relu: bool = False
    text_proj_relu: bool = True
    init: str = "xavier"
    logit_scale: float = 100.0
    blur_sigma: float = 1.0
    blur_kernel: int = 7
    prompts: AAClipPrompts = field(default_factory=AAClipPrompts)
    image_size: int | str | None = None
    class_names: str = "descriptive"
    activation: str = "gelu"

    # ------------------------------------------------------------------ resolution
    def resolve(self, bundle: Any) -> AAClipConfig:
        """A copy with every ``None`` replaced by the model's default, after validating each field."""
        v_depth, t_depth = depths(bundle)
        name = getattr(bundle, "name", "the model")
        k_t = _blocks("text_adapter_blocks", self.text_adapter_blocks, t_depth, name, "text")
        k_i = _blocks("image_adapter_blocks", self.image_adapter_blocks, v_depth, name, "vision")
        levels = self.levels if self.levels is not None else default_levels(v_depth)
        levels = tuple(levels)
        if (not levels or len(set(levels)) != len(levels)
                or not all(isinstance(lv, int) and not isinstance(lv, bool) and 1 <= lv <= v_depth for lv in levels)):
            raise ValueError(f"levels={self.levels!r} must be distinct integers in 1..{v_depth} (1-based vision "
                             f"blocks of {name}), e.g. {default_levels(v_depth)}")
        for key in ("text_lambda", "image_lambda"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"{key} must be a number in [0, 1] (paper: 0.1), got {value!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be positive (released code: 100), got {self.logit_scale!r}")
        if self.blur_sigma < 0 or self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur needs sigma >= 0 and an odd kernel >= 1, got sigma={self.blur_sigma}, "
                             f"kernel={self.blur_kernel}")
        if self.class_names not in NAME_MODES:
            raise ConfigError(f"class_names must be one of {', '.join(NAME_MODES)} (released code: descriptive), got "
                             f"{self.class_names!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)} (released code: gelu), got "
                              f"{self.activation!r}")
        size = _image_size(self.image_size, bundle, name)
        return replace(self, text_adapter_blocks=k_t, image_adapter_blocks=k_i, levels=tuple(sorted(levels)),
                       text_lambda=float(self.text_lambda), image_lambda=float(self.image_lambda), image_size=size)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["levels"] = None if self.levels is None else list(self.levels)
        out["prompts"] = {k: list(v) for k, v in asdict(self.prompts).items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> AAClipConfig:
        """Inverse of :meth:`to_json` (accepts the dict or its JSON text)."""
        d = dict(json.loads(data) if isinstance(data, str) else data)
        p = d.pop("prompts", None)
        prompts = AAClipPrompts(**{k: tuple(v) for k, v in p.items()}) if p else AAClipPrompts()
        # written before these settings existed: plain names at the model's own size (what was run then)
        d.setdefault("class_names", "plain")
        d.setdefault("image_size", "model")
        d.setdefault("activation", "model")  # the CLIP's own activation, as cfviz ran them then
        if d.get("levels") is not None:
            d["levels"] = tuple(d["levels"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown AA-CLIP config keys {sorted(unknown)}; was the checkpoint written by a newer "
                             "cfviz?")
        return cls(**d, prompts=prompts)


def depths(bundle: Any) -> tuple[int, int]:
    """``(vision blocks, text blocks)`` of an open_clip CLIP in a bundle."""
    model = getattr(bundle, "model", None)
    try:
        return len(model.visual.transformer.resblocks), len(model.transformer.resblocks)
    except AttributeError:
        raise ValueError("AA-CLIP needs an open_clip CLIP with a ViT image tower and a text transformer "
                         "(bundle.model.visual.transformer.resblocks, bundle.model.transformer.resblocks); "
                         "load it with cfviz.models.load_clip / random_clip / tiny_clip") from None


def default_levels(depth: int) -> tuple[int, ...]:
    """Blocks at 1/4, 2/4, 3/4 and 4/4 of ``depth`` (deduplicated).

    >>> default_levels(24), default_levels(4), default_levels(2)
    ((6, 12, 18, 24), (1, 2, 3, 4), (1, 2))
    """
    return tuple(sorted({max(1, round(depth * i / 4)) for i in range(1, 5)}))


#: AA-CLIP's input side (released ``train.py`` / ``test.py``: ``--img_size 518``) and the geometry of the
#: backbone it was run on (ViT-L-14-336: 336 px, 14 px patches).
RELEASED_IMAGE_SIZE = 518
RELEASED_GEOMETRY = (336, 14)


def released_image_size(bundle: Any) -> int:
    """The input side AA-CLIP runs ``bundle`` at by default (see ``AAClipConfig.image_size``).

    >>> from cfviz.models import tiny_clip
    >>> released_image_size(tiny_clip(like="ViT-L-14-336")), released_image_size(tiny_clip())
    (518, 240)
    """
    if (int(bundle.image_size), int(bundle.patch_size)) == RELEASED_GEOMETRY:
        return RELEASED_IMAGE_SIZE
    return int(bundle.image_size)


def _image_size(value: int | str | None, bundle: Any, name: str) -> int:
    if value is None:
        return released_image_size(bundle)
    if value == "model":
        return int(bundle.image_size)
    patch = int(getattr(bundle, "patch_size", 1))
    if not isinstance(value, int) or isinstance(value, bool) or value < patch or value % patch:
        raise ConfigError(f"image_size={value!r} does not fit {name}: give a multiple of its {patch} px patches "
                         f"(released code: {RELEASED_IMAGE_SIZE} on ViT-L-14-336), 'model' for its own size, or None "
                         "for the default")
    return value


def _blocks(key: str, value: int | None, depth: int, name: str, tower: str) -> int:
    default = round(depth / 4)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= depth:
        raise ValueError(f"{key}={value!r} does not fit {name}, whose {tower} tower has {depth} blocks; give a "
                         f"value in 0..{depth} (or None for round({depth} / 4) = {default})")
    return value
