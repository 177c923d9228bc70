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

from cfviz._version import __version__
from cfviz.utils.lazy import lazy_names

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


# ``cfviz.capture`` is the callable capture package (function and namespace at once)
__getattr__, __dir__ = lazy_names(__name__, _LAZY, modules=("capture",))
