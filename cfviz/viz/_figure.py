"""The Figure class of cfviz figures: a matplotlib Figure that shows itself in notebooks.

cfviz makes figures without pyplot (see :func:`cfviz.viz.style.new_figure`), so no pyplot backend
is involved and Jupyter's inline backend may never be set up. ``_repr_png_`` lets IPython show a
returned figure anyway; where the inline backend has registered its own printer for matplotlib
figures, IPython uses that one instead, so a figure is never shown twice.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


class CfvizFigure(Figure):
    """A plain matplotlib Figure plus a PNG representation for IPython."""

    def _repr_png_(self) -> bytes:
        from cfviz.viz.style import style_context

        buf = io.BytesIO()
        with style_context():
            self.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
        return buf.getvalue()
