"""Progress bars that fit a terminal, a notebook and a CI log alike."""

from __future__ import annotations

from typing import Any


def progress_bar(*, total: int, desc: str, unit: str = "it", disable: bool = False) -> Any:
    """A tqdm bar (the notebook widget when running in Jupyter), or a no-op when disabled.

    >>> bar = progress_bar(total=2, desc="demo", disable=True)
    >>> bar.update(1); bar.close()
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
