"""Load the models an evaluation needs from a :class:`~cfviz.experiments.config.ModelChoice`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfviz.experiments.config import ModelChoice


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

    ``"tiny"`` and ``"random"`` build offline models with seeded random weights; anything else
    loads real weights and fails within seconds, with a sentence saying how to supply them, when
    they cannot be had.
    """
    import torch

    from cfviz import models

    dtype = getattr(torch, choice.dtype)
    if choice.clip == "tiny":
        clip = models.tiny_clip(seed=choice.seed, device=choice.device)
    elif choice.clip == "random":
        clip = models.random_clip(choice.clip_arch, seed=choice.seed, device=choice.device, dtype=dtype)
    elif choice.clip == "pretrained":
        clip = models.load_clip(choice.clip_arch, choice.clip_pretrained, device=choice.device, dtype=dtype)
    else:
        raise ValueError(f"clip must be 'tiny', 'random' or 'pretrained', got {choice.clip!r}")
    if choice.diffusion == "tiny":
        pipe = models.tiny_inpaint_pipeline(seed=choice.seed, device=choice.device)
    elif choice.diffusion == "random":
        pipe = models.random_inpaint_pipeline(seed=choice.seed, device=choice.device, dtype=dtype)
    else:
        pipe = models.load_inpaint_pipeline(choice.diffusion, revision=choice.revision, device=choice.device,
                                            dtype=dtype)
    return LoadedModels(clip=clip, pipe=pipe, choice=choice)
