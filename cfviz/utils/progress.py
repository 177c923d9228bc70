"""Progress bars that fit a terminal, a notebook and a CI log alike."""

from __future__ import annotations

from typing import Any


def progress_bar(*, total: int, desc: str, unit: str = "it", disable: bool = False) -> Any:
    """A tqdm bar, or a no-op when disabled.

    In a terminal or a log it is tqdm's text bar, cleared when done. In a Jupyter kernel it is one
    text line in the cell's output, updated in place, that keeps its final state ("models: 100%
    57/57 ..."): a notebook executed by ``cfviz run-notebooks``, nbclient or papermill saves that
    line, where tqdm's widget saved its first state ("models: 0%") for good.

    >>> bar = progress_bar(total=2, desc="demo", disable=True)
    >>> bar.update(1); bar.close()
    """
    if not disable and _in_kernel():
        return _kernel_bar()(total=total, desc=desc, unit=unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not a terminal IPython or plain Python)."""
    import sys

    if "IPython" not in sys.modules:  # no kernel without it; keeps a script from importing IPython
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _kernel_bar() -> Any:
    """tqdm's text bar drawn into a display handle (one output, updated in place) instead of stderr."""
    import io

    from IPython.display import display
    from tqdm import tqdm

    class KernelBar(tqdm):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            self._handle = display({"text/plain": ""}, raw=True, display_id=True)
            # leave=True: closing draws the final state once more, and it stays
            super().__init__(file=io.StringIO(), leave=True, ncols=80, ascii=False, **kwargs)

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            self._handle.update({"text/plain": self.__str__() if msg is None else msg}, raw=True)
            return True

    return KernelBar
