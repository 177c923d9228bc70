"""Model configurations shipped with cfviz as JSON (``cfviz/models/configs/*.json``).

They let cfviz build the tiny offline models and the full-size random-weight architectures
without any download. Keys starting with ``_cfviz`` are notes for the reader (where the
numbers come from) and are dropped on load.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def config_names() -> list[str]:
    """Names of the shipped configurations (file names without ``.json``).

    >>> "sd2_inpainting_unet" in config_names()
    True
    """
    folder = resources.files("cfviz.models") / "configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def model_config(name: str) -> dict[str, Any]:
    """A fresh copy of the shipped configuration ``name`` (e.g. ``"sd2_inpainting_unet"``).

    >>> model_config("sd2_inpainting_unet")["in_channels"]
    9
    """
    path = resources.files("cfviz.models") / "configs" / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model configuration {name!r}; choose one of {config_names()}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_cfviz")}
