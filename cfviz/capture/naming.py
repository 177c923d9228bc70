"""Layer and block filters: exact names, glob patterns, regular expressions and predicates.

Names are diffusers module paths, the same strings as in ``unet.named_modules()`` and
``unet.attn_processors`` (without the ``.processor`` suffix), e.g.
``up_blocks.1.attentions.0.transformer_blocks.0.attn2``. One helper resolves every filter form so
that every function that takes a filter accepts the same things.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Union

from cfviz.errors import CaptureError

#: A filter over module names: ``None`` (everything), one name or glob (``"up_blocks.*attn2"``),
#: a compiled regular expression, a list of those, or a predicate ``name -> bool``.
NamesFilter = Union[None, str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]], Callable[[str], bool]]

_GLOB_CHARS = set("*?[")


def _matcher(item: str | re.Pattern[str]) -> Callable[[str], bool]:
    if isinstance(item, re.Pattern):
        return lambda name: item.fullmatch(name) is not None
    if not isinstance(item, str):
        raise TypeError(f"a name filter item must be a str or re.Pattern, got {type(item).__name__}")
    if _GLOB_CHARS & set(item):
        return lambda name: fnmatch.fnmatchcase(name, item)
    # a plain name matches itself and, for convenience, everything below it ("up_blocks.1")
    return lambda name: name == item or name.startswith(item + ".")


def compile_filter(filt: NamesFilter) -> Callable[[str], bool]:
    """Turn any :data:`NamesFilter` into a predicate.

    >>> pred = compile_filter("up_blocks.*attn2")
    >>> pred("up_blocks.1.attentions.0.transformer_blocks.0.attn2"), pred("down_blocks.0.attentions.0.attn2")
    (True, False)
    >>> compile_filter(["mid_block", "up_blocks.1"])("mid_block.attentions.0")
    True
    """
    if filt is None:
        return lambda name: True
    if callable(filt) and not isinstance(filt, (str, re.Pattern)):
        return filt
    items = [filt] if isinstance(filt, (str, re.Pattern)) else list(filt)
    matchers = [_matcher(item) for item in items]
    return lambda name: any(m(name) for m in matchers)


def select_names(names: Iterable[str], filt: NamesFilter, *, what: str = "module",
                 argument: str = "filter") -> list[str]:
    """Return the names (in their original order) that ``filt`` selects; raise if none does.

    The error lists a few available names so that a typo is easy to fix.

    >>> select_names(["a.attn1", "a.attn2", "b.attn2"], "*.attn2")
    ['a.attn2', 'b.attn2']
    """
    names = list(names)
    pred = compile_filter(filt)
    chosen = [n for n in names if pred(n)]
    if not chosen:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        raise CaptureError(
            f"{argument}={filt!r} matched no {what}; available {what}s: {shown or '(none)'}. "
            "Pass exact names, glob patterns such as 'up_blocks.*attn2', or a predicate."
        )
    return chosen


def block_of(layer: str) -> str:
    """The UNet block a layer belongs to: ``'up_blocks.1.attentions.0...attn2'`` -> ``'up_blocks.1'``.

    >>> block_of("up_blocks.1.attentions.0.transformer_blocks.0.attn2"), block_of("mid_block.attentions.0.x")
    ('up_blocks.1', 'mid_block')
    """
    m = re.match(r"^((?:down|up)_blocks\.\d+|mid_block)(?:\.|$)", layer)
    return m.group(1) if m else layer.split(".")[0]
