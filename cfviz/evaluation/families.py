"""Which denoiser family an evaluation runs, and the extraction settings that follow from it.

``cfviz evaluate --diffusion`` takes a pipeline of any supported family
(:data:`cfviz.models.diffusion.PIPELINE_FAMILIES`): ``tiny`` (SD2 inpainting), ``tiny-<family>``
(:data:`cfviz.models.families.TINY_DIFFUSION`), ``random``, a local diffusers folder or a hub id.
:func:`diffusion_family` says which family a choice is before any model is built (from the tiny
name, or from ``model_index.json``); it is part of the capture store's identity.

The extraction defaults name UNet modules (cross-attention ``*attn2``, features of
``up_blocks.1``). For a transformer family (SD3, FLUX, PixArt) :func:`resolve_family_settings`
replaces them, when left at their defaults, with the family's own (ours):

======== ============================== ==================================================
family   text attention recorded        feature block (M_diff_V)
======== ============================== ==================================================
sd, sdxl ``*attn2`` (unchanged)          ``up_blocks.1`` (unchanged)
sd3      ``*.attn`` (joint attention)    ``transformer_blocks.<num_layers // 2>``
flux     ``*.attn`` (joint and single)   ``transformer_blocks.<num_layers // 2>``
pixart   ``*attn2`` (unchanged)          ``transformer_blocks.<num_layers // 2>``
======== ============================== ==================================================

The middle block's image tokens are stored as a ``(channels, h, w)`` map on the patch grid.

>>> from cfviz.evaluation.config import ModelChoice
>>> diffusion_family(ModelChoice(diffusion="tiny-sdxl")), diffusion_family(ModelChoice(diffusion="tiny"))
('sdxl', 'sd')
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from cfviz.errors import ConfigError
from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec, ScoringConfig

#: Families whose denoiser is a transformer on a 2x2 patch grid (maps are diffusion_size / 16).
PATCH_FAMILIES = ("sd3", "flux", "pixart")
#: Text-attention filter of each family whose text layers are not named ``attn2``.
_FAMILY_ATTENTION = {"sd3": "*.attn", "flux": "*.attn"}


def tiny_names() -> list[str]:
    """Every tiny ``--diffusion`` name: ``tiny`` (SD2 inpainting) and ``tiny-<family>``.

    >>> tiny_names()[:3]
    ['tiny', 'tiny-flux', 'tiny-flux-fill']
    """
    from cfviz.models.families import TINY_DIFFUSION

    return ["tiny", *sorted(TINY_DIFFUSION)]


def _pipeline_source(choice: ModelChoice) -> tuple[str, str]:
    """``("tiny" | "random" | "folder" | "hub", value)`` of a diffusion choice (env override followed)."""
    from cfviz.models.diffusion import looks_like_folder, pipeline_override
    from cfviz.models.families import TINY_DIFFUSION

    value = choice.diffusion
    if value == "tiny" or value in TINY_DIFFUSION:
        return "tiny", value
    if value == "random":
        return "random", value
    value = pipeline_override(value)[0]
    return ("folder" if looks_like_folder(value) else "hub"), value


def _hub_json(repo_id: str, revision: str | None, filename: str) -> dict[str, Any]:
    """A small JSON file of a hub repository (from the cache, or downloaded; fails fast offline)."""
    import json

    from cfviz.models.diffusion import _FIX
    from cfviz.models.hub import hub_cache_dir, hub_file

    path = hub_file(repo_id, [filename], revision=revision, cache_dir=hub_cache_dir(),
                    what=f"{filename} of the diffusion pipeline {repo_id!r}", fix=_FIX)
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else {}


def diffusion_family(choice: ModelChoice) -> str:
    """The denoiser family (``"sd"``, ``"sdxl"``, ``"sd3"``, ``"flux"``, ``"pixart"``) a choice builds.

    Read without building a model: tiny and random names are known; a folder's (or a hub
    repository's) ``model_index.json`` names the pipeline class. SD2-inpainting's hub id is
    ``"sd"`` without a look-up. A folder whose class is not supported is ``"unsupported"``
    (:func:`cfviz.evaluation.preflight.check_diffusion` refuses it).
    """
    return family_of(diffusion_pipeline_class(choice))


def family_of(pipeline_class: str) -> str:
    """The family of a diffusers pipeline class name, ``"unsupported"`` for one cfviz cannot run.

    >>> family_of("StableDiffusion3Pipeline"), family_of("KandinskyPipeline")
    ('sd3', 'unsupported')
    """
    from cfviz.models.diffusion import PIPELINE_FAMILIES

    return PIPELINE_FAMILIES.get(pipeline_class, "unsupported")


#: Pipelines whose denoiser takes inpainting inputs (``extraction.mask``).
INPAINT_PIPELINES = ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline", "FluxFillPipeline")


def diffusion_pipeline_class(choice: ModelChoice) -> str:
    """The diffusers pipeline class a choice builds (see :func:`diffusion_family`).

    >>> diffusion_pipeline_class(ModelChoice(diffusion="tiny-flux-fill"))
    'FluxFillPipeline'
    """
    from cfviz.models.diffusion import DEFAULT_SD_INPAINT, pipeline_class
    from cfviz.models.families import TINY_DIFFUSION, TINY_PIPELINES

    sd2 = "StableDiffusionInpaintPipeline"
    kind, value = _pipeline_source(choice)
    if kind == "tiny":
        return sd2 if value == "tiny" else TINY_PIPELINES[TINY_DIFFUSION[value]][1]
    if kind == "random" or (kind == "hub" and value == DEFAULT_SD_INPAINT):
        return sd2
    if kind == "folder":
        cls = pipeline_class(Path(value).expanduser())
    else:
        cls = _hub_json(value, choice.revision, "model_index.json").get("_class_name")
    return sd2 if cls is None else str(cls)  # no model_index.json: the loader says what is missing


def _denoiser_layers(choice: ModelChoice, family: str) -> int:
    """``num_layers`` of a transformer family's denoiser config (tiny configs, folder or hub)."""
    import json

    from cfviz.models._config import model_config
    from cfviz.models.families import TINY_DENOISERS, TINY_DIFFUSION, TINY_PIPELINES

    kind, value = _pipeline_source(choice)
    if kind == "tiny":
        config_name, _, changes = TINY_DENOISERS[TINY_PIPELINES[TINY_DIFFUSION[value]][0]]
        config = {**model_config(config_name), **changes}
    elif kind == "folder":
        try:
            config = json.loads((Path(value).expanduser() / "transformer" / "config.json").read_text())
        except (OSError, ValueError):
            return 2  # a broken folder: the loader names what is wrong
    else:
        config = _hub_json(value, choice.revision, "transformer/config.json")
    return int(config.get("num_layers", 2))


def family_extraction(extraction: ExtractionConfig, family: str, num_layers: int = 2) -> ExtractionConfig:
    """``extraction`` with the UNet defaults replaced by the family's (see the module docstring).

    Settings that are not at their defaults are kept as given.

    >>> family_extraction(ExtractionConfig(), "sd3", num_layers=24).features
    ('transformer_blocks.12',)
    >>> family_extraction(ExtractionConfig(), "sdxl") == ExtractionConfig()
    True
    """
    if family not in PATCH_FAMILIES:
        return extraction
    default = ExtractionConfig()
    changes: dict[str, Any] = {}
    if extraction.attention == default.attention and family in _FAMILY_ATTENTION:
        changes["attention"] = _FAMILY_ATTENTION[family]
    if tuple(extraction.features) == tuple(default.features):
        changes["features"] = (feature_block(family, num_layers),)
    return dataclasses.replace(extraction, **changes) if changes else extraction


def feature_block(family: str, num_layers: int) -> str:
    """The default M_diff_V block of a transformer family: the middle (joint) transformer block.

    >>> feature_block("flux", 19)
    'transformer_blocks.9'
    """
    return f"transformer_blocks.{max(int(num_layers), 1) // 2}"


def resolve_family_settings(spec: RunSpec, *, family: str | None = None) -> RunSpec:
    """``spec`` with the extraction and scoring defaults of its denoiser family (idempotent).

    Scoring's ``visual_block`` follows the feature block when it was left at its default.
    ``family``: :func:`diffusion_family` of ``spec.models``, when the caller knows it already.
    """
    family = family or diffusion_family(spec.models)
    if family not in PATCH_FAMILIES:
        return spec
    layers = _denoiser_layers(spec.models, family)
    extraction = family_extraction(spec.extraction, family, layers)
    scoring = spec.scoring
    if scoring.visual_block == ScoringConfig().visual_block and scoring.visual_block not in extraction.features:
        scoring = dataclasses.replace(scoring, visual_block=extraction.features[0])
    if extraction is spec.extraction and scoring is spec.scoring:
        return spec
    return dataclasses.replace(spec, extraction=extraction, scoring=scoring)


def check_family_settings(spec: RunSpec) -> str:
    """Settings that a family cannot run, refused before any model loads (one ConfigError each); the family.

    Transformer families patchify the latent (2x2): their finest maps are ``diffusion_size / 16``
    and ``diffusion_size`` must be a multiple of 16.
    """
    from cfviz.evaluation.config import DIFFUSION_METHODS

    cls = diffusion_pipeline_class(spec.models)
    family = family_of(cls)
    e, s = spec.extraction, spec.scoring
    name = f"{{models.diffusion}} {spec.models.diffusion!r} (a {cls})"
    if e.mask != "none" and cls not in INPAINT_PIPELINES:
        raise ConfigError(f"{{extraction.mask}} {e.mask!r} needs an inpainting model, but {name} takes no inpainting "
                          f"inputs; use 'none', or an inpainting pipeline ({', '.join(INPAINT_PIPELINES)})",
                          "extraction.mask", mentions=("models.diffusion",))
    if cls != "StableDiffusionInpaintPipeline" and (e.noise != "shared" or e.noise_draws != 1):
        raise ConfigError(f"{{extraction.noise}} {e.noise!r} and {{extraction.noise_draws}} {e.noise_draws} are "
                          f"implemented for SD 1.x/2.x inpainting only, not {name}; use 'shared' and 1",
                          "extraction.noise", mentions=("extraction.noise_draws", "models.diffusion"))
    if cls != "StableDiffusionInpaintPipeline" and e.batch_timesteps is not False:
        raise ConfigError(f"{{extraction.batch_timesteps}} is implemented for SD 1.x/2.x inpainting only, not {name}; "
                          "leave it off", "extraction.batch_timesteps", mentions=("models.diffusion",))
    if family in ("flux", "pixart") and e.tokens == "all":
        # the "all" labels count from CLIP's start token; these families attend to T5 text only
        raise ConfigError(f"{{extraction.tokens}} 'all' needs a CLIP text stream (it labels the prompt from its start "
                          f"token), but {name} attends to T5 tokens only; use 'language'", "extraction.tokens",
                          mentions=("models.diffusion",))
    if family not in PATCH_FAMILIES:
        return family
    unet_blocks = [f for f in e.features if re.match(r"(up|down)(_blocks\.)?\d|mid(_block)?\b", f)]
    if unet_blocks and tuple(e.features) != tuple(ExtractionConfig().features):  # the default is replaced
        raise ConfigError(f"{{extraction.features}} {unet_blocks} are UNet blocks, but {name} is a transformer: its "
                          f"blocks are transformer_blocks.0, .1, ... (default: the middle one)", "extraction.features",
                          mentions=("models.diffusion",))
    if e.diffusion_size % 16:
        lo = e.diffusion_size // 16 * 16
        raise ConfigError(f"{{extraction.diffusion_size}} must be a multiple of 16 for {{models.diffusion}} "
                          f"{spec.models.diffusion!r} (a {family} denoiser: it packs 2x2 latent patches into one "
                          f"token), got {e.diffusion_size}; e.g. {max(lo, 16)} or {lo + 16}",
                          "extraction.diffusion_size", mentions=("models.diffusion",))
    finest = e.diffusion_size // 16
    if set(spec.methods) & set(DIFFUSION_METHODS) and finest < s.language_min_resolution:
        raise ConfigError(f"{{extraction.diffusion_size}} {e.diffusion_size} gives {{models.diffusion}} "
                          f"{spec.models.diffusion!r} (a {family} denoiser) attention maps of "
                          f"{finest}x{finest} (latent / 2: it attends over 2x2 patches), coarser than "
                          f"{{scoring.language_min_resolution}} {s.language_min_resolution}, so MapDiff's language map "
                          f"would be empty; raise {{extraction.diffusion_size}} to {s.language_min_resolution * 16} or "
                          f"lower {{scoring.language_min_resolution}} to {max(finest, 1)}", "extraction.diffusion_size",
                          mentions=("scoring.language_min_resolution", "models.diffusion"))
    return family
