"""Lazy public names for cfviz's packages: importing a package stays light (no torch, matplotlib).

>>> import types, sys
>>> pkg = types.ModuleType("demo_pkg"); sys.modules["demo_pkg"] = pkg
>>> pkg.__getattr__, pkg.__dir__ = lazy_names("demo_pkg", {"sqrt": "math"})
>>> pkg.sqrt(4.0), "sqrt" in dir(pkg)
(2.0, True)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_names(package: str, names: Mapping[str, str], *, modules: Collection[str] = ()
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public names load on first use.

    ``names`` maps a public name to the module that defines it (a leading ``.`` is relative to
    ``package``). Names in ``modules`` resolve to that module itself (``cfviz.capture``, the
    callable capture package), every other name to the attribute of that name in it. Each value
    is cached in the package, so later look-ups skip ``__getattr__``.
    """
    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        full = package + module if module.startswith(".") else module
        imported = importlib.import_module(full)
        value = imported if name in modules else getattr(imported, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
