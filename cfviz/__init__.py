"""cfviz: capture, store and ablate CLIP + Stable Diffusion maps for visual anomaly detection.

Importing :mod:`cfviz` is light: torch, diffusers, open_clip and matplotlib are imported only
when a name that needs them is first used. The public names below resolve lazily.

Example
-------
>>> import cfviz
>>> cfviz.__version__  # doctest: +ELLIPSIS
'...'
"""

from __future__ import annotations

import importlib
from typing import Any

from cfviz._version import __version__

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "capture": "cfviz.capture",
    "CaptureStore": "cfviz.capture.store",
    "load_clip": "cfviz.models",
    "load_inpaint_pipeline": "cfviz.models",
    "tiny_clip": "cfviz.models",
    "tiny_inpaint_pipeline": "cfviz.models",
    "open_dataset": "cfviz.data",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cfviz' has no attribute {name!r}")
    imported = importlib.import_module(module)
    # ``cfviz.capture`` is the callable capture package itself (function and namespace at once)
    value = imported if module == f"cfviz.{name}" else getattr(imported, name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
