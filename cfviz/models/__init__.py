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

_EXPORTS: dict[str, tuple[str, ...]] = {
    ".bundle": ("ClipBundle",),
    ".info": ("model_info", "make_info"),
    ".clip": ("load_clip", "random_clip", "tiny_clip", "save_clip_checkpoint", "read_state_dict"),
    ".tokenizer": ("clip_tokenizer",),
    ".diffusion": ("load_inpaint_pipeline", "tiny_inpaint_pipeline", "random_inpaint_pipeline", "sd2_inpaint_unet",
                   "sd1_unet", "ddim_scheduler"),
    "._config": ("model_config", "config_names"),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
