"""Reproducibility: the library versions recorded with results (every random draw takes its own seed)."""

from __future__ import annotations

import importlib.metadata
import platform

_RECORDED = ("cfviz", "torch", "torchvision", "diffusers", "transformers", "open_clip_torch",
             "safetensors", "numpy", "scikit-learn", "scikit-image")


def library_versions(packages: tuple[str, ...] = _RECORDED) -> dict[str, str]:
    """Versions of the libraries that shape results, plus Python's, for the JSON next to results.

    >>> v = library_versions(("numpy",))
    >>> sorted(v) == ["numpy", "python"]
    True
    """
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out

