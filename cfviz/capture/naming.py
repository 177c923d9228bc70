"""Names of UNet blocks and layers, and filters over them (exact names, globs, regexes, predicates).

Stored names are diffusers module paths, the same strings as in ``unet.named_modules()`` and
``unet.attn_processors`` (without the ``.processor`` suffix), e.g.
``up_blocks.1.attentions.0.transformer_blocks.0.attn2``. One helper resolves every filter form so
that every function that takes a filter accepts the same things.

Short names
-----------
Figures, tables and the explorer show one readable short name per block or layer
(:func:`short_name`); :func:`module_path` goes back. The scheme:

* blocks: ``down0`` .. ``down3``, ``mid``, ``up0`` .. ``up3`` (``down_blocks.i``, ``mid_block``,
  ``up_blocks.i``);
* cross-attention layers: ``<block>.attn<i>`` for ``<block>.attentions.i.transformer_blocks.0.attn2``,
  with ``.tb<j>`` for transformer block ``j > 0`` and ``.self`` for the self-attention ``attn1``;
* other parts: ``res<i>`` (``resnets.i``), ``upsample``/``downsample`` (``upsamplers.0``, ...);
  anything else is kept as it is.

Every filter here accepts short names too: ``"up1"`` selects everything in ``up_blocks.1``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from cfviz.errors import CaptureError

#: A filter over module names: ``None`` (everything), one name or glob (``"up_blocks.*attn2"``),
#: a compiled regular expression, a list of those, or a predicate ``name -> bool``.
NamesFilter = Union[None, str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]], Callable[[str], bool]]

_GLOB_CHARS = set("*?[")

# (module-path part, short part) rules, applied left to right; "" drops the part
_SHORT_PARTS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^(down|up)_blocks\.(\d+)"), lambda m: f"{m.group(1)}{m.group(2)}"),
    (re.compile(r"^mid_block"), lambda m: "mid"),
    (re.compile(r"^attentions\.(\d+)"), lambda m: f"attn{m.group(1)}"),
    (re.compile(r"^resnets\.(\d+)"), lambda m: f"res{m.group(1)}"),
    (re.compile(r"^upsamplers\.(\d+)"), lambda m: f"upsample{m.group(1)}" if m.group(1) != "0" else "upsample"),
    (re.compile(r"^downsamplers\.(\d+)"), lambda m: f"downsample{m.group(1)}" if m.group(1) != "0" else "downsample"),
    (re.compile(r"^transformer_blocks\.(\d+)"), lambda m: f"tb{m.group(1)}" if m.group(1) != "0" else ""),
    (re.compile(r"^attn2$"), lambda m: ""),  # cross-attention is what is captured by default
    (re.compile(r"^attn1$"), lambda m: "self"),
]


@functools.lru_cache(maxsize=8192)
def short_name(name: str) -> str:
    """The short name of a diffusers module path (see the module docstring; unknown parts are kept).

    >>> short_name("up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    'up1.attn0'
    >>> short_name("mid_block.attentions.0.transformer_blocks.1.attn2"), short_name("up_blocks.1")
    ('mid.attn0.tb1', 'up1')
    >>> short_name("down_blocks.2.resnets.1"), short_name("conv_out")
    ('down2.res1', 'conv_out')
    """
    # cached: name filters look up the short name of every module of a model (~700 for SD2) per
    # pattern, each time a capture is created
    name = str(name)
    rest, parts = name, []
    while rest:
        for pattern, repl in _SHORT_PARTS:
            m = pattern.match(rest)
            if m:
                parts.append(repl(m))
                rest = rest[m.end():].lstrip(".")
                break
        else:
            head, _, rest = rest.partition(".")
            parts.append(head)
    return ".".join(p for p in parts if p) or name


def short_names(names: Sequence[Any]) -> list[str]:
    """:func:`short_name` of each name, or the full names when the short ones would collide."""
    short = [short_name(str(n)) for n in names]
    return short if len(set(short)) == len(short) else [str(n) for n in names]


_LONG_PARTS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^(down|up)(\d+)$"), lambda m: f"{m.group(1)}_blocks.{m.group(2)}"),
    (re.compile(r"^mid$"), lambda m: "mid_block"),
    (re.compile(r"^attn(\d+)$"), lambda m: f"attentions.{m.group(1)}"),
    (re.compile(r"^res(\d+)$"), lambda m: f"resnets.{m.group(1)}"),
    (re.compile(r"^(up|down)sample(\d*)$"), lambda m: f"{m.group(1)}samplers.{m.group(2) or 0}"),
]


def _canonical_path(short: str) -> str:
    """The module path a short name stands for when no list of names decides (attention -> attn2)."""
    parts = short.split(".")
    out: list[str] = []
    tb, self_attn, is_attn = "0", False, False
    for part in parts:
        m_tb = re.fullmatch(r"tb(\d+)", part)
        if m_tb and is_attn:
            tb = m_tb.group(1)
            continue
        if part == "self" and is_attn:
            self_attn = True
            continue
        for pattern, repl in _LONG_PARTS:
            m = pattern.match(part)
            if m:
                out.append(repl(m))
                is_attn = part.startswith("attn")
                break
        else:
            out.append(part)
            is_attn = False
    if any(p.startswith("attentions.") for p in out) and out[-1].startswith("attentions."):
        out.append(f"transformer_blocks.{tb}.{'attn1' if self_attn else 'attn2'}")
    return ".".join(out)


def module_path(name: str, names: Iterable[str] | None = None) -> str:
    """The diffusers module path of a short name (the inverse of :func:`short_name`).

    With ``names`` (e.g. a store's captured layers or blocks) the answer is the one of them whose
    short name is ``name``; a full path is returned as it is. Without ``names``, ``<block>.attn<i>``
    means the cross-attention layer (``attn2``), as captured by default.

    >>> module_path("up1.attn0"), module_path("mid"), module_path("down2.attn1.tb1.self")
    ('up_blocks.1.attentions.0.transformer_blocks.0.attn2', 'mid_block', 'down_blocks.2.attentions.1.transformer_blocks.1.attn1')
    >>> module_path("up1", ["up_blocks.0", "up_blocks.1"]), module_path("up_blocks.1")
    ('up_blocks.1', 'up_blocks.1')
    """
    name = str(name)
    if names is None:
        canonical = _canonical_path(name)
        return canonical if short_name(canonical) == name else name  # a module path stays as it is
    names = list(names)
    if name in names:
        return name
    hits = [n for n in names if short_name(n) == name]
    if len(hits) > 1:
        canonical = _canonical_path(name)
        hits = [n for n in hits if n == canonical] or hits
    if len(hits) != 1:
        shown = ", ".join(f"{short_name(n)} ({n})" for n in names[:6]) + (" ..." if len(names) > 6 else "")
        raise CaptureError(f"name={name!r} is {'ambiguous' if hits else 'not among the names'}; "
                           f"available: {shown or '(none)'}. Pass a short name such as 'up1.attn0' or a module path.")
    return hits[0]


def _matcher(item: str | re.Pattern[str]) -> Callable[[str], bool]:
    if isinstance(item, re.Pattern):
        return lambda name: item.fullmatch(name) is not None
    if not isinstance(item, str):
        raise TypeError(f"a name filter item must be a str or re.Pattern, got {type(item).__name__}")
    if _GLOB_CHARS & set(item):
        return lambda name: fnmatch.fnmatchcase(name, item) or fnmatch.fnmatchcase(short_name(name), item)

    # a plain name matches itself and, for convenience, everything below it ("up_blocks.1"); the
    # same for a short name ("up1" selects up_blocks.1 and everything in it)
    def match(name: str) -> bool:
        if name == item or name.startswith(item + "."):
            return True
        short = short_name(name)
        return short == item or short.startswith(item + ".")
    return match


def compile_filter(filt: NamesFilter) -> Callable[[str], bool]:
    """Turn any :data:`NamesFilter` into a predicate.

    >>> pred = compile_filter("up_blocks.*attn2")
    >>> pred("up_blocks.1.attentions.0.transformer_blocks.0.attn2"), pred("down_blocks.0.attentions.0.attn2")
    (True, False)
    >>> compile_filter(["mid_block", "up_blocks.1"])("mid_block.attentions.0")
    True
    >>> compile_filter("up1")("up_blocks.1.attentions.0.transformer_blocks.0.attn2")  # short names work too
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
            "Pass exact names, short names such as 'up1.attn0', glob patterns such as 'up_blocks.*attn2', "
            "or a predicate."
        )
    return chosen


def unet_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order data flows through a UNet: down blocks, mid block, up blocks (each by
    index; other names keep their order, after them). Stable: layers of one block keep theirs.

    >>> unet_order(["up_blocks.1", "mid_block", "down_blocks.1", "up_blocks.0", "down_blocks.0"])
    ['down_blocks.0', 'down_blocks.1', 'mid_block', 'up_blocks.0', 'up_blocks.1']
    """
    def key(item: tuple[int, str]) -> tuple[int, int, int]:
        i, name = item
        m = re.match(r"^(down_blocks|mid_block|up_blocks)(?:\.(\d+))?", name)
        if m is None:
            return (3, 0, i)
        return ({"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[m.group(1)], int(m.group(2) or 0), i)
    return [n for _, n in sorted(enumerate(names), key=key)]


def block_of(layer: str) -> str:
    """The block a layer belongs to: ``'up_blocks.1.attentions.0...attn2'`` -> ``'up_blocks.1'``;
    in transformer denoisers (SD3, FLUX, PixArt) its transformer block.

    >>> block_of("up_blocks.1.attentions.0.transformer_blocks.0.attn2"), block_of("mid_block.attentions.0.x")
    ('up_blocks.1', 'mid_block')
    >>> block_of("transformer_blocks.3.attn"), block_of("single_transformer_blocks.5.attn")
    ('transformer_blocks.3', 'single_transformer_blocks.5')
    """
    m = re.match(r"^((?:down|up)_blocks\.\d+|mid_block|(?:single_)?transformer_blocks\.\d+)(?:\.|$)", layer)
    return m.group(1) if m else layer.split(".")[0]
