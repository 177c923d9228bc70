"""The explorer's widget building blocks: a titled image panel, HTML colour bars, widget text.

Shared by :mod:`cfviz.viz.explorer`, its tabs (:mod:`cfviz.viz.explorer_tabs`) and its exports
(:mod:`cfviz.viz.explorer_export`), so that none of them imports another's module.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from cfviz.viz import render as rd
from cfviz.viz.style import SCORE_CMAP

#: CSS width (px) of one word's panel in the words tab.
WORD = 116
#: Windows outlined in the CLIP panel.
TOP_K = 3
#: Pixel outcomes of the predicted mask (Okabe-Ito). Chosen so that the three, and the ground-truth
#: outline (``MASK_COLOR``, cyan), stay apart for normal, protan, deutan and tritan vision (CIE76
#: distance >= 30 under each simulation; the test checks it): a missed defect is yellow, never a
#: blue that reads as the cyan outline.
OUTCOME_COLORS = {"TP": "#009E73", "FP": "#D55E00", "FN": "#F0E442"}
PREDICTED_COLOR = "#D55E00"


class _Panel:
    """A titled image of fixed size; ``show(key, draw)`` redraws only when ``key`` changed."""

    def __init__(self, w: Any, css: int, cls: str | None = None) -> None:
        self.css = css
        self.title = w.HTML(layout=w.Layout(width=f"{css}px", height="34px", overflow="hidden"))
        self.title.add_class("cfviz-title")
        self.image = w.Image(format="jpeg", layout=w.Layout(width=f"{css}px", height=f"{css}px"))
        if cls:
            self.image.add_class(cls)
        self.box = w.VBox([self.title, self.image], layout=w.Layout(width=f"{css + 4}px", margin="0 4px 0 0"))
        self.key: Any = None

    def set_title(self, text: str, tooltip: str = "") -> None:
        # bottom-aligned in a fixed-height box: one- and two-line titles sit right on their panel
        value = (f'<div class="cfviz-title" title="{html.escape(tooltip)}" style="height:34px;display:flex;'
                 f'flex-direction:column;justify-content:flex-end"><span>{text}</span></div>')
        if self.title.value != value:
            self.title.value = value


def _plain_text(markup: str) -> str:
    """The text of a widget's HTML: line breaks kept, tags dropped, entities decoded.

    >>> _plain_text('<div class="t"><span>fused, alpha = 0.25<br>(eq. 4)</span></div>')
    'fused, alpha = 0.25\\n(eq. 4)'
    """
    text = re.sub(r"<br\s*/?>", "\n", markup or "")
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _colorbar(height: int, top: str, bottom: str, label: str, cmap: str = SCORE_CMAP,
              marks: Sequence[tuple[float, str]] = ()) -> str:
    """An HTML colour bar (CSS gradient of ``cmap``) with its limits and a label; ``marks``:
    ``(position 0 = bottom .. 1 = top, text)`` drawn as a line across the bar with the text beside it."""
    lines = "".join(
        f'<div class="cfviz-bar-mark" title="{html.escape(text)}" style="position:absolute;left:-3px;width:17px;'
        f'bottom:{100 * min(max(pos, 0.0), 1.0):.1f}%;border-top:2px solid #fff;outline:1px solid #000"></div>'
        for pos, text in marks)
    labels = "".join(
        f'<span style="position:absolute;left:16px;bottom:calc({100 * min(max(pos, 0.0), 1.0):.1f}% - 7px);'
        f'white-space:nowrap;background:#fffc;font-weight:bold">{html.escape(text)}</span>' for pos, text in marks)
    return (f'<div style="display:flex;height:{height}px;margin-top:34px;font-size:11px">'
            f'<div style="position:relative;width:11px;border:1px solid #888;background:{rd.css_gradient(cmap)}">'
            f"{lines}{labels}</div>"
            f'<div style="display:flex;flex-direction:column;justify-content:space-between;margin-left:3px">'
            f"<span>{top}</span><span style='writing-mode:vertical-rl;transform:rotate(180deg);color:#333'>"
            f"{html.escape(label)}</span><span>{bottom}</span></div></div>")


def threshold_mark(threshold: float, lo: float, hi: float) -> tuple[float, str]:
    """Where ``threshold`` sits on a colour bar spanning ``lo..hi`` (0 = bottom, 1 = top), and its label
    in the bar's units; a threshold outside the bar is pinned to its end and says so.

    >>> threshold_mark(0.5, 0.0, 2.0)
    (0.25, '≥ 0.5')
    >>> threshold_mark(3.0, 0.0, 2.0)
    (1.0, '3 > max')
    """
    if threshold > hi:
        return 1.0, f"{threshold:.3g} > max"
    if threshold <= lo:
        return 0.0, f"{threshold:.3g} ≤ min"
    return (threshold - lo) / (hi - lo), f"≥ {threshold:.3g}"
