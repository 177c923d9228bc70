"""Where cfviz keeps files it derives itself (e.g. the tokenizer vocabulary), never downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cfviz_cache_dir() -> Path:
    """``$CFVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/cfviz``, else ``~/.cache/cfviz``.

    >>> isinstance(cfviz_cache_dir(), Path)
    True
    """
    explicit = os.environ.get("CFVIZ_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cfviz"
