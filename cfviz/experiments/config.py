"""Settings of an evaluation run, split by what they invalidate.

* :class:`ModelChoice` — which CLIP and inpainting models (tiny offline, full-size random, or
  real weights), device and dtype.
* :class:`ExtractionConfig` — everything that shapes what the models output per image (sizes,
  timesteps, prompt, captured layers and blocks, CLIP windows). It is the capture store's
  configuration: change one field and a new store is needed (the store refuses to mix).
* :class:`ScoringConfig` — everything computed afterwards from the store (fusion weights,
  normalisation, image-score rule, smoothing, which timesteps and blocks feed the maps). Changing
  it never re-runs a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cfviz.diffusion.forward import DEFAULT_TIMESTEPS, PROMPT_TEMPLATE
from cfviz.diffusion.mapdiff import DEFAULT_FEATURE_BLOCK, DEFAULT_MIN_RESOLUTION
from cfviz.fusion import ALPHA_CLASSIFICATION, ALPHA_SEGMENTATION

METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip", "aaclip")


@dataclass(frozen=True)
class ModelChoice:
    """Which models to run.

    Attributes
    ----------
    clip:
        ``"tiny"`` (offline, random weights), ``"random"`` (full-size ``clip_arch`` with random
        weights) or ``"pretrained"`` (``clip_arch`` with ``clip_pretrained`` weights: a tag or a file).
    diffusion:
        ``"tiny"``, ``"random"`` (full-size SD2-inpainting architecture, random weights), or a hub id
        / local folder of real weights (default ``stabilityai/stable-diffusion-2-inpainting``).
    seed:
        Seed of random weights (tiny and random models).
    """

    clip: str = "tiny"
    clip_arch: str = "ViT-B-16-plus-240"
    clip_pretrained: str | None = "laion400m_e32"
    diffusion: str = "tiny"
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    @property
    def random_weights(self) -> bool:
        """True when any model has random weights (results show the pipeline works, not detection quality)."""
        return self.clip in ("tiny", "random") or self.diffusion in ("tiny", "random")


@dataclass(frozen=True)
class ExtractionConfig:
    """What the models compute per image (the capture store's configuration)."""

    clip_size: int = 240
    diffusion_size: int = 512
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    prompt_template: str = PROMPT_TEMPLATE
    state: str = "damage"
    attention: str = "*attn2"
    features: tuple[str, ...] = (DEFAULT_FEATURE_BLOCK,)
    scales: tuple[int, ...] = (2, 3)
    stride: int = 1
    noise_seed: int = 0
    mask: str = "none"
    #: AA-CLIP adapter checkpoint (from ``cfviz train-aaclip``) run at extraction, and its SHA-256
    #: (so that a store written with other adapters, or none, is refused); see aaclip_branch.py
    aaclip: str | None = None
    aaclip_sha256: str | None = None

    @property
    def state_tokens(self) -> list[str]:
        """Words of ``state`` whose cross-attention is recorded."""
        return [w for w in self.state.split() if w.lower() not in {"and", "or", "a", "with", "of", "the"}]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.aaclip is None:  # stores written before AA-CLIP existed keep matching
            out.pop("aaclip"), out.pop("aaclip_sha256")
        return out


@dataclass(frozen=True)
class ScoringConfig:
    """How maps and scores are made from the store (cheap; sweep freely).

    Attributes
    ----------
    alpha_seg, alpha_cls:
        CLIP-branch weights for segmentation (0.25) and classification (0.75), paper eqs. 4 and 9.
    normalization:
        How maps are made comparable before fusion (see :func:`cfviz.fusion.normalize_maps`).
    score_rule, topk:
        How an image score is taken from a map (see :func:`cfviz.fusion.image_scores`).
    sigma:
        Gaussian smoothing (pixels of the ``eval_size`` grid) of the final maps; 0 = none.
        WinCLIP is always scored unsmoothed, as published.
    eval_size:
        Grid on which maps and masks are compared (masks nearest-neighbour, maps bilinear).
    language_steps:
        Timesteps whose cross-attention feeds M_diff_L (default: all captured).
    language_min_resolution:
        Coarsest cross-attention resolution used in M_diff_L (DAAM skips 8x8).
    visual_timestep, visual_block:
        Query timestep and block of M_diff_V (default: the middle captured timestep, ``up_blocks.1``).
    reference_timestep, reference_block:
        Reference side of M_diff_V; ``None`` = matched with the query (the paper's default).
    clip_branch:
        Which stored CLIP language map feeds CLIPFusion/PatchCLIP: ``"patchclip"`` (default) or
        ``"aaclip"`` (needs a store extracted with ``ExtractionConfig.aaclip``).
    """

    alpha_seg: float = ALPHA_SEGMENTATION
    alpha_cls: float = ALPHA_CLASSIFICATION
    normalization: str = "dataset"
    score_rule: str = "max"
    topk: float = 0.01
    sigma: float = 4.0
    eval_size: int = 256
    language_steps: tuple[int, ...] | None = None
    language_min_resolution: int = DEFAULT_MIN_RESOLUTION
    visual_timestep: int | None = None
    visual_block: str = DEFAULT_FEATURE_BLOCK
    reference_timestep: int | None = None
    reference_block: str | None = None
    clip_branch: str = "patchclip"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunSpec:
    """One evaluation: data set, methods, shots and seeds, plus the three configurations.

    ``dataset_options`` go to the data set reader (:func:`cfviz.data.open_dataset`), e.g.
    ``{"missing_masks": "warn"}`` for a folder whose anomalous images lack masks, or the texture
    generator's sizes (``{"n_train": 2, "image_size": 128}``) for a smaller embedded set (give
    such a set its own ``root``: the default folder is regenerated to match what is asked).
    """

    dataset: str = "textures"
    root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ("clipfusion",)
    shots: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    models: ModelChoice = field(default_factory=ModelChoice)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    batch_size: int = 4
