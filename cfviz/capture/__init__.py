"""Capture engine: per-timestep, per-layer text-attention maps and feature maps from a denoiser
(SD 1.x/2.x/XL UNets, SD3, FLUX, PixArt: see ``families``).

``cfviz.capture(...)`` starts a capture (this module is callable, so ``cfviz.capture`` works both
as the function and as the package that holds :class:`CaptureCache`, :class:`CaptureStore`, ...):

>>> import cfviz                                                      # doctest: +SKIP
>>> with cfviz.capture(pipe, attention="up_blocks.*attn2", features=["up_blocks.1"],
...                    tokens=["damage"], prompt=prompt) as cap:     # doctest: +SKIP
...     pipe.unet(x, t, encoder_hidden_states=emb)                    # doctest: +SKIP
>>> cap.cache.attention_maps(size=64)                                # doctest: +SKIP

Submodules: ``naming`` (filters), ``tokens`` (token selection), ``families`` (one adapter per
denoiser family), ``joint`` (SD3/FLUX joint attention), ``processors`` (the recording processor),
``session`` (lifecycle), ``cache`` (in-memory results), ``daam`` (DAAM 0.2's aggregation,
``cache.aggregate(method="daam")``), ``labelled`` (labelled maps), ``store`` (the on-disk capture store).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.families import Family, detect_family
from cfviz.capture.labelled import LabelledMaps, resize_maps
from cfviz.capture.naming import NamesFilter, block_of, compile_filter, select_names
from cfviz.capture.session import (
    Capture,
    capture,
    classifier_free_guidance,
    locate_cross_attention,
    locate_modules,
    locate_text_attention,
)
from cfviz.capture.tokens import TokenSelection, select_tokens

__all__ = [
    "Capture", "CaptureCache", "CaptureStore", "Family", "LabelledMaps", "NamesFilter", "StepInfo", "StoreEntry",
    "TokenSelection", "block_of", "capture", "classifier_free_guidance", "compile_filter", "detect_family",
    "locate_cross_attention", "locate_modules", "locate_text_attention", "resize_maps", "select_names",
    "select_tokens",
]


def __getattr__(name: str) -> Any:
    if name in ("CaptureStore", "StoreEntry"):
        from cfviz.capture import store

        return getattr(store, name)
    raise AttributeError(f"module 'cfviz.capture' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``cfviz.capture(...)`` call :func:`capture` although ``cfviz.capture`` is a package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Capture:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
