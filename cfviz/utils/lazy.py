"""Lazy public names for cfviz's packages: importing a package stays light (no torch, matplotlib).

:func:`moved_modules` keeps the old dotted names of moved modules importable, with a warning.

>>> import types, sys
>>> pkg = types.ModuleType("demo_pkg"); sys.modules["demo_pkg"] = pkg
>>> pkg.__getattr__, pkg.__dir__ = lazy_names("demo_pkg", {"sqrt": "math"})
>>> pkg.sqrt(4.0), "sqrt" in dir(pkg)
(2.0, True)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
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


#: Old dotted name -> the module's new one, for every module moved with :func:`moved_modules`.
MOVED: dict[str, str] = {}


def moved_modules(package: str, moved: Mapping[str, str]) -> None:
    """Keep ``package.<old>`` importable for each ``old -> new module`` of ``moved``, deprecated.

    ``import package.old`` and ``from package import old`` give the new module itself (the same
    object, so patching either name patches both) and warn, naming the new path.

    >>> import sys, warnings
    >>> moved_modules("cfviz.utils", {"old_lazy": "cfviz.utils.lazy"})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from cfviz.utils import old_lazy
    >>> old_lazy is sys.modules["cfviz.utils.lazy"], caught[0].category.__name__
    (True, 'DeprecationWarning')
    """
    MOVED.update({f"{package}.{old}": new for old, new in moved.items()})
    if _ALIASES not in sys.meta_path:
        sys.meta_path.insert(0, _ALIASES)


class _MovedModuleAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name of :data:`MOVED` and loads it as the new module (an alias, not a copy)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def exec_module(self, module: Any) -> None:
        old, new = module.__name__, MOVED[module.__name__]
        # stacklevel 2: the line that imported (warnings skips the frames of importlib's bootstrap)
        warnings.warn(f"{old} moved to {new}; import it from there (the old name will be removed)",
                      DeprecationWarning, stacklevel=2)
        sys.modules[old] = importlib.import_module(new)  # what the import system hands out for `old`


_ALIASES = _MovedModuleAliases()
