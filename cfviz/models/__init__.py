"""Loading CLIP and the Stable Diffusion inpainting pipeline; offline tiny builders for tests.

Importing this package is light: torch, open_clip, diffusers and transformers are imported
only when one of the names below is first used.

Real weights (hub, cache or local file/folder; fail fast with ``ModelUnavailableError``):
    ``load_clip``, ``load_inpaint_pipeline``
Offline tiny models with seeded random weights (tests, demos; numbers from them show that code
runs, not how well a method detects anomalies):
    ``tiny_clip``, ``tiny_inpaint_pipeline``, ``clip_tokenizer``
Full-size architectures with seeded random weights (shape, latency, memory studies):
    ``random_clip``, ``sd2_inpaint_unet``, ``sd1_unet``, ``random_inpaint_pipeline``
Provenance and helpers:
    ``ClipBundle``, ``model_info``, ``save_clip_checkpoint``, ``read_state_dict``,
    ``ddim_scheduler``, ``model_config``

Example
-------
>>> from cfviz.models import tiny_clip, model_info
>>> model_info(tiny_clip(seed=0))["weights"]
'random'
"""

from __future__ import annotations

from cfviz.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    "ClipBundle": "cfviz.models.bundle",
    "model_info": "cfviz.models.info",
    "make_info": "cfviz.models.info",
    "load_clip": "cfviz.models.clip",
    "random_clip": "cfviz.models.clip",
    "tiny_clip": "cfviz.models.clip",
    "save_clip_checkpoint": "cfviz.models.clip",
    "read_state_dict": "cfviz.models.clip",
    "clip_tokenizer": "cfviz.models.tokenizer",
    "load_inpaint_pipeline": "cfviz.models.diffusion",
    "tiny_inpaint_pipeline": "cfviz.models.diffusion",
    "random_inpaint_pipeline": "cfviz.models.diffusion",
    "sd2_inpaint_unet": "cfviz.models.diffusion",
    "sd1_unet": "cfviz.models.diffusion",
    "ddim_scheduler": "cfviz.models.diffusion",
    "model_config": "cfviz.models._config",
    "config_names": "cfviz.models._config",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
