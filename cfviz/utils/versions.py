"""Warn (once) when an installed dependency version is outside the set cfviz is tested with.

The tested set of each dependency runs from the oldest version (``make test-oldest``,
requirements/oldest.txt) to the newest (``make test``, requirements/constraints.txt), both
inclusive; :data:`cfviz._tested_versions.TESTED` carries it into the installed package. Model
loaders call :func:`warn_untested_versions`, so an environment that resolved, say, an open_clip
older than any tested one hears about it before it computes numbers. ``import cfviz`` stays
light: nothing here imports torch.

Example
-------
>>> untested_versions({"torch": "2.0.1", "numpy": "2.0.0", "scipy": None})
{'torch': ('2.0.1', '2.1', '2.14.1')}
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import warnings
from collections.abc import Mapping, Sequence

from cfviz._tested_versions import TESTED

#: The dependencies whose versions shape cfviz's numbers (checked when a model loads).
MODEL_PACKAGES = ("torch", "torchvision", "open-clip-torch", "diffusers", "transformers", "huggingface-hub",
                  "safetensors", "numpy", "scipy", "pillow", "scikit-image", "scikit-learn")

_warned: set[tuple[tuple[str, str], ...]] = set()


class UntestedVersionWarning(UserWarning):
    """An installed dependency is older or newer than every version cfviz is tested with."""


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string, local label and suffixes dropped, trailing zeros trimmed.

    >>> release("2.1.0+cu121"), release("2.1"), release("0.30.0rc1")
    ((2, 1), (2, 1), (0, 30))
    """
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if not m:
        raise ValueError(f"cannot read a release number from version {version!r}")
    parts = [int(p) for p in m.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _environment(packages: tuple[str, ...]) -> dict[str, str | None]:
    # read once per process: every model load checks, and metadata look-ups scan site-packages
    return {name: installed_version(name) for name in packages}


def untested_versions(installed: Mapping[str, str | None] | None = None,
                      packages: Sequence[str] = MODEL_PACKAGES) -> dict[str, tuple[str, str, str]]:
    """``{name: (installed, oldest tested, newest tested)}`` for each package outside its tested range.

    ``installed`` maps names to versions (``None``: not installed, not checked); by default the
    versions of ``packages`` in this environment are read.
    """
    if installed is None:
        installed = _environment(tuple(packages))
    out = {}
    for name, version in installed.items():
        if version is None or name not in TESTED:
            continue
        low, high = TESTED[name]
        if not release(low) <= release(version) <= release(high):
            out[name] = (version, low, high)
    return out


def warn_untested_versions(installed: Mapping[str, str | None] | None = None,
                           packages: Sequence[str] = MODEL_PACKAGES) -> dict[str, tuple[str, str, str]]:
    """Emit one :class:`UntestedVersionWarning` per distinct finding per process; return the findings."""
    found = untested_versions(installed, packages)
    key = tuple(sorted((name, v[0]) for name, v in found.items()))
    if found and key not in _warned:
        _warned.add(key)
        listed = ", ".join(f"{name} {v} (tested {low} to {high})" for name, (v, low, high) in sorted(found.items()))
        warnings.warn(f"cfviz is not tested with {listed}; results may differ from tested versions. Install a "
                      "tested set with `pip install -c requirements/constraints.txt -e .` (newest) or "
                      "`make test-oldest` (oldest)", UntestedVersionWarning, stacklevel=3)
    return found
