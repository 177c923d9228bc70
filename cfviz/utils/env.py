"""Reproducibility helpers: seeded generators and the library versions to record with results."""

from __future__ import annotations

import importlib.metadata
import platform
import random
from typing import Any

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


def seed_everything(seed: int) -> Any:
    """Seed Python, NumPy and torch; return a ``torch.Generator`` on the CPU seeded with ``seed``.

    Prefer passing the returned generator (or your own ``torch.Generator``) to each random call:
    global seeding is a fallback for code that takes no generator.
    """
    import numpy as np
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator("cpu").manual_seed(seed)
