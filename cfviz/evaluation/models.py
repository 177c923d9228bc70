"""Load the models an evaluation needs from a :class:`~cfviz.evaluation.config.ModelChoice`,
and say which weights a choice means (the weights part of a capture store's identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfviz.evaluation.config import ModelChoice


@dataclass
class LoadedModels:
    """The CLIP bundle and the inpainting pipeline of a run, with the choice that made them."""

    clip: Any
    pipe: Any
    choice: ModelChoice

    def info(self) -> dict[str, Any]:
        """Provenance of both models (ids, revisions, weights kind, seeds) for the store header."""
        from cfviz.models import model_info

        return {"clip": model_info(self.clip), "diffusion": model_info(self.pipe)}


def load_models(choice: ModelChoice) -> LoadedModels:
    """Build or load the CLIP bundle and the inpainting pipeline.

    ``"tiny"``, ``"tiny-<family>"`` (:data:`cfviz.models.families.TINY_DIFFUSION`) and ``"random"``
    build offline models with seeded random weights; anything else (a hub id or folder of any
    supported pipeline, :data:`cfviz.models.diffusion.PIPELINE_FAMILIES`)
    loads real weights and fails within seconds, with a sentence saying how to supply them, when
    they cannot be had.
    """
    import torch

    from cfviz import models
    from cfviz.models.families import TINY_DIFFUSION, tiny_family_pipeline
    from cfviz.models.speed import apply_speed_options, check_compile

    check_compile(choice.compile, choice.device)  # a missing compiler is said before minutes of loading
    dtype = getattr(torch, choice.dtype)
    if choice.clip == "tiny":
        clip = models.tiny_clip(seed=choice.seed, device=choice.device, dtype=dtype,
                                like=choice.clip_arch)  # its geometry
    elif choice.clip == "random":
        clip = models.random_clip(choice.clip_arch, seed=choice.seed, device=choice.device, dtype=dtype)
    elif choice.clip == "pretrained":
        clip = models.load_clip(choice.clip_arch, choice.clip_pretrained, device=choice.device, dtype=dtype)
    else:
        raise ValueError(f"clip must be 'tiny', 'random' or 'pretrained', got {choice.clip!r}")
    if choice.diffusion == "tiny":
        pipe = models.tiny_inpaint_pipeline(seed=choice.seed, device=choice.device, dtype=dtype)
    elif choice.diffusion == "random":
        pipe = models.random_inpaint_pipeline(seed=choice.seed, device=choice.device, dtype=dtype)
    elif choice.diffusion in TINY_DIFFUSION:  # tiny-sdxl, tiny-sd3, tiny-flux, ...: one per family
        pipe = tiny_family_pipeline(TINY_DIFFUSION[choice.diffusion], seed=choice.seed, device=choice.device,
                                    dtype=dtype)
    else:
        pipe = models.load_inpaint_pipeline(choice.diffusion, revision=choice.revision, device=choice.device,
                                            dtype=dtype)
    apply_speed_options(pipe, channels_last=choice.channels_last, compile=choice.compile)
    return LoadedModels(clip=clip, pipe=pipe, choice=choice)


def weights_identity(choice: ModelChoice) -> dict[str, Any]:
    """Which weights a choice means, known before any model loads (part of a store's identity).

    * tiny and random models: the seed of their weights;
    * a local CLIP checkpoint or diffusers folder: the SHA-256 of every file (cached per file
      version, see :mod:`cfviz.models.fingerprint`), so rewritten weights under the same name are
      told apart;
    * hub ids and open_clip tags: the id and the asked revision; the commit they resolve to is
      known once loaded (:func:`resolved_weights`).

    The environment overrides of the loaders (``CFVIZ_CLIP_CHECKPOINT``, ``CFVIZ_SD_INPAINT``)
    are followed, as the loaders follow them.

    >>> weights_identity(ModelChoice())
    {'clip': {'random_seed': 0}, 'diffusion': {'random_seed': 0}}
    """
    return {"clip": _clip_weights(choice), "diffusion": _diffusion_weights(choice)}


def _clip_weights(choice: ModelChoice) -> dict[str, Any]:
    from cfviz.models.clip import checkpoint_override, looks_like_file
    from cfviz.models.fingerprint import file_fingerprints

    if choice.clip in ("tiny", "random"):
        return {"random_seed": choice.seed}
    pretrained = checkpoint_override(choice.clip_arch, str(choice.clip_pretrained or ""))[0]
    path = Path(pretrained).expanduser()
    if pretrained and looks_like_file(pretrained) and path.is_file():
        return {"sha256": file_fingerprints([path])}
    return {"tag": pretrained}  # a tag (or a missing file: the loader says so in its own words)


def _diffusion_weights(choice: ModelChoice) -> dict[str, Any]:
    from cfviz.models.diffusion import looks_like_folder, pipeline_override
    from cfviz.models.families import TINY_DIFFUSION
    from cfviz.models.fingerprint import folder_fingerprints

    if choice.diffusion in ("tiny", "random") or choice.diffusion in TINY_DIFFUSION:
        return {"random_seed": choice.seed}
    model = pipeline_override(choice.diffusion)[0]
    folder = Path(model).expanduser()
    if looks_like_folder(model) and folder.is_dir():
        return {"sha256": folder_fingerprints(folder)}
    return {"hub": model, "revision": choice.revision or "main"}


def resolved_weights(models: LoadedModels) -> dict[str, Any]:
    """The commits (or download URLs) that hub ids and tags resolved to, once the models loaded.

    Empty for random and local weights (their identity is complete before loading).
    """
    out: dict[str, Any] = {}
    for role, info in models.info().items():
        if info.get("source") in ("hub", "url"):
            picked = {k: info[k] for k in ("hub_repo", "file", "commit", "url") if info.get(k) is not None}
            if picked:
                out[role] = picked
    return out
