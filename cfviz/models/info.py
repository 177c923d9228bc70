"""Provenance of loaded models: which weights, which revision, which seed.

Every loader in :mod:`cfviz.models` attaches a ``cfviz_info`` dict to what it returns (pipeline,
UNet, CLIP module); :func:`model_info` reads it back, so capture stores and result files can
record exactly which model produced them.
"""

from __future__ import annotations

from typing import Any

#: Keys every info dict has.
INFO_KEYS = ("kind", "library", "name", "revision", "weights", "seed", "source", "dtype", "device")


def make_info(*, kind: str, library: str, name: str, revision: str | None, weights: str,
              seed: int | None, source: str, dtype: Any, device: Any, **extra: Any) -> dict[str, Any]:
    """Build the info dict that loaders attach (all values JSON-serialisable).

    ``source`` is ``"hub"``, ``"local"`` (a folder or file) or ``"config"`` (random weights built
    from a configuration); ``weights`` is ``"pretrained"`` or ``"random"``.

    >>> make_info(kind="unet", library="diffusers", name="x", revision=None, weights="random",
    ...           seed=0, source="config", dtype="float32", device="cpu")["weights"]
    'random'
    """
    from cfviz.utils.versions import warn_untested_versions

    warn_untested_versions()  # every loader passes here: say once if a dependency is outside the tested set
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained' or 'random', got {weights!r}")
    if (weights == "random") != (seed is not None):
        raise ValueError("random weights need a seed and pretrained weights must have seed=None")
    return {"kind": kind, "library": library, "name": str(name),
            "revision": None if revision is None else str(revision), "weights": weights,
            "seed": seed, "source": source, "dtype": _dtype_name(dtype), "device": str(device), **extra}


def model_info(obj: Any) -> dict[str, Any]:
    """Provenance of anything cfviz loads: a ``ClipBundle``, a pipeline, a UNet, a CLIP module.

    Returns a new dict with at least :data:`INFO_KEYS`. Objects not built by cfviz get what can be
    read from them (diffusers' ``config._name_or_path``) with ``weights`` ``"unknown"``.

    >>> from cfviz.models import tiny_clip
    >>> info = model_info(tiny_clip(seed=1))
    >>> info["name"], info["weights"], info["seed"]
    ('cfviz-tiny-clip', 'random', 1)
    """
    attached = getattr(obj, "cfviz_info", None)  # a ClipBundle's combines its model's with its own fields
    if isinstance(attached, dict):
        return dict(attached)
    # not built by cfviz: read what diffusers/transformers record
    config = getattr(obj, "config", None)
    name = None
    if config is not None:
        name = getattr(config, "_name_or_path", None)
        if name is None and hasattr(config, "get"):
            name = config.get("_name_or_path")
    if name is None:
        raise TypeError(f"model_info does not know how to describe a {type(obj).__name__}; "
                        "pass a ClipBundle, a diffusers pipeline or model, or a cfviz-loaded module")
    return {"kind": type(obj).__name__, "library": type(obj).__module__.split(".")[0], "name": str(name),
            "revision": None, "weights": "unknown", "seed": None, "source": "unknown",
            "dtype": _dtype_name(getattr(obj, "dtype", None)), "device": str(getattr(obj, "device", None))}


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")
