"""One shared look for every cfviz figure, captions for offline results, and atomic figure saving.

Choices (documented here so that every figure follows them):

* **Anomaly scores** use :data:`SCORE_CMAP` = ``"inferno"``: perceptually uniform (equal steps in
  score look like equal steps in colour), monotonic in lightness (it still reads when printed in
  grey) and readable with the common colour-vision deficiencies. ``"turbo"`` was rejected: it is
  not monotonic in lightness, so a bright band in the middle of the range looks like a peak.
* **Differences** between branches (e.g. ``M_clip - M_diff``) use :data:`DIVERGING_CMAP` =
  ``"RdBu_r"`` with limits symmetric around zero (see :func:`symmetric_limits`), so white means
  "no difference".
* **Metric tables** (AUROC per timestep pair, ...) use :data:`METRIC_CMAP` = ``"viridis"``, so a
  table of metrics is never mistaken for an anomaly map.
* **Ground-truth contours** are drawn in :data:`MASK_COLOR` (cyan), which no colour of inferno
  comes close to; categorical colours follow the Okabe-Ito palette (:data:`CATEGORICAL`).
* **Sizes** are set for a two-column paper: 8 pt text, 7 pt ticks, figure widths built from
  :data:`COLUMN_WIDTH` (one column) and :data:`PAGE_WIDTH` (both columns), saved at 300 dpi with
  TrueType fonts embedded in PDFs (``pdf.fonttype = 42``, as publishers ask). Figures use
  constrained layout, so titles, labels and colour bars never overlap.

Every figure function of :mod:`cfviz.viz` draws inside :func:`style_context`, so figures look the
same whatever the global matplotlib settings are; :func:`apply_style` sets the style globally (for
the user's own plots) and its overrides are kept for the cfviz figures too.

matplotlib is imported inside the functions: reading the constants stays light.

Example
-------
>>> import tempfile
>>> from matplotlib.figure import Figure
>>> with style_context():
...     fig = Figure(figsize=(2, 1.5), layout="constrained")
...     _ = fig.add_subplot().plot([0, 1], [1, 0])
>>> [p.suffix for p in save_figure(fig, "demo", out_dir=tempfile.mkdtemp())]
['.png', '.pdf']
"""

from __future__ import annotations

import functools
import io
import os
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Colour map for anomaly scores and attention (perceptually uniform; see the module docstring).
SCORE_CMAP = "inferno"
#: Colour map for signed differences between two maps (centred on zero).
DIVERGING_CMAP = "RdBu_r"
#: Colour map for tables of metric values (ablation heat maps).
METRIC_CMAP = "viridis"
#: Colour of ground-truth mask contours.
MASK_COLOR = "#00e5ff"
#: Okabe-Ito colours (colour-blind safe) for categories and methods.
CATEGORICAL: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
                                "#D55E00", "#F0E442", "#000000")
#: Outline colours of ranked CLIP windows (white first: visible on every inferno colour).
RANK_COLORS: tuple[str, ...] = ("#FFFFFF", "#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#F0E442",
                                "#D55E00", "#0072B2")
#: Outline of highlighted cells in metric heat maps (Okabe-Ito vermilion: visible on viridis).
HIGHLIGHT_COLOR = "#D55E00"
#: Width of one column of a two-column paper, inches.
COLUMN_WIDTH = 3.5
#: Width of a full page (both columns) of a two-column paper, inches.
PAGE_WIDTH = 7.16
#: Default side of one image panel, inches.
PANEL_SIZE = 1.45
#: Font size of captions drawn by :func:`add_note`, points.
NOTE_FONTSIZE = 6.5

#: Standard caption for numbers from the offline tiny models (pass it as ``note=``).
OFFLINE_NOTE = ("Offline tiny random-weight models: these maps and numbers show that the pipeline "
                "runs, not how well the method detects anomalies.")

_BASE_RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "axes.titlepad": 3.0,
    "axes.labelpad": 2.0,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 9,
    "figure.labelsize": 8,
    "figure.dpi": 150,
    "figure.constrained_layout.use": True,
    "figure.constrained_layout.h_pad": 0.02,
    "figure.constrained_layout.w_pad": 0.02,
    "figure.constrained_layout.hspace": 0.02,
    "figure.constrained_layout.wspace": 0.02,
    "lines.linewidth": 1.2,
    "image.cmap": SCORE_CMAP,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}

# overrides given to apply_style(); style_context() keeps them so cfviz figures follow the user
_OVERRIDES: dict[str, Any] = {}


def style_rc(**overrides: Any) -> dict[str, Any]:
    """The cfviz rcParams (base, then :func:`apply_style` overrides, then ``overrides``).

    Keyword names use underscores for dots: ``style_rc(font_size=9)`` sets ``font.size``.

    >>> style_rc()["image.cmap"], style_rc(font_size=9)["font.size"]
    ('inferno', 9)
    """
    rc = dict(_BASE_RC)
    rc.update(_OVERRIDES)
    rc.update(_rc_names(overrides))
    return rc


def _rc_names(overrides: Mapping[str, Any]) -> dict[str, Any]:
    import matplotlib as mpl

    out = {}
    for key, value in overrides.items():
        name = key if "." in key else key.replace("_", ".", 1)
        if name not in mpl.rcParams:
            # some rc names hold underscores after the first dot (e.g. axes.spines.top)
            name = key.replace("_", ".")
        if name not in mpl.rcParams:
            raise KeyError(f"style override {key!r} is not a matplotlib rcParam; use names such as "
                           "font_size=9 or 'axes.titlesize'=8")
        out[name] = value
    return out


def apply_style(**overrides: Any) -> None:
    """Set the cfviz style globally (for pyplot figures too); overrides stay for cfviz figures.

    >>> import matplotlib as mpl
    >>> with mpl.rc_context():  # only to leave the global settings as they were
    ...     apply_style(font_size=8)
    ...     mpl.rcParams["image.cmap"]
    'inferno'
    """
    import matplotlib as mpl

    _OVERRIDES.update(_rc_names(overrides))
    mpl.rcParams.update(style_rc())


@contextmanager
def style_context(**overrides: Any) -> Iterator[None]:
    """Temporarily use the cfviz style (restores the previous rcParams on exit).

    >>> import matplotlib as mpl
    >>> with style_context(font_size=11):
    ...     mpl.rcParams["font.size"]
    11.0
    """
    import matplotlib as mpl

    with mpl.rc_context(style_rc(**overrides)):
        yield


def new_figure(width: float, height: float) -> Any:
    """A constrained-layout :class:`matplotlib.figure.Figure` of ``width`` x ``height`` inches.

    Figures are made without pyplot, so a notebook shows each returned figure once (as the cell's
    value, through ``_repr_png_``) and loops that make many figures do not keep them alive in
    pyplot's registry. To show one in a pyplot window, save it or use ``IPython.display``.
    """
    return _figure_class()(figsize=(float(width), float(height)), layout="constrained")


@functools.cache
def _figure_class() -> type:
    """``CfvizFigure``: a matplotlib Figure whose ``_repr_png_`` shows it in IPython without pyplot (where
    Jupyter's inline backend has its own printer, IPython uses that: never shown twice). Made on first use."""
    from matplotlib.figure import Figure

    def _repr_png_(self: Any) -> bytes:
        buf = io.BytesIO()
        with style_context():
            self.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
        return buf.getvalue()

    return type("CfvizFigure", (Figure,), {"_repr_png_": _repr_png_, "__module__": __name__})


def __getattr__(name: str) -> Any:
    if name == "CfvizFigure":  # the figures' class, by the name pickle looks up
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def symmetric_limits(values: Any) -> tuple[float, float]:
    """Colour limits ``(-m, m)`` with ``m`` the largest absolute finite value (1 when none).

    >>> symmetric_limits([-0.5, 2.0])
    (-2.0, 2.0)
    """
    import numpy as np

    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    m = float(np.abs(finite).max()) if finite.size else 1.0
    m = m if m > 0 else 1.0
    return -m, m


def add_note(fig: Any, note: str | None, *, fontsize: float = NOTE_FONTSIZE) -> Any:
    """Draw ``note`` as a small caption under the figure's content; return the Text (or None).

    Room is reserved for it in the layout (the constrained-layout rectangle is shrunk), so the
    caption never overlaps axes, tick labels or colour bars. Long notes are wrapped to the
    figure's width. Figure-level artists that constrained layout pins to the bottom edge
    (``fig.supxlabel``, ``fig.legend(loc="outside lower ...")``) are not moved: cfviz figures do
    not use them, and figures that do should put such text elsewhere.

    >>> fig = new_figure(3, 2)
    >>> add_note(fig, OFFLINE_NOTE).get_gid()
    'cfviz-note'
    """
    if note is None or not str(note).strip():
        return None
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    width_in, height_in = fig.get_size_inches()
    chars = max(20, int(width_in * 72 / (fontsize * 0.6)))  # ~average italic glyph width of DejaVu Sans
    lines = textwrap.wrap(str(note).strip(), width=chars) or [""]
    band_in = (len(lines) * fontsize * 1.3 + 4) / 72
    band = min(0.45, band_in / height_in)
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, band, 1, 1 - band))
    elif engine is None:
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, band + 0.05))
    # stays "in layout" so that savefig(bbox_inches="tight") keeps it
    return fig.text(0.5, 0.004, "\n".join(lines), ha="center", va="bottom", fontsize=fontsize,
                    color="0.3", style="italic", gid="cfviz-note")


def finish_figure(fig: Any, title: str | None, note: str | None) -> Any:
    """The end of a figure function: ``title`` over the figure (when given), ``note`` under it; return ``fig``."""
    if title:
        fig.suptitle(title)
    add_note(fig, note)
    return fig


_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,199}$")


def check_figure_name(name: str, formats: Sequence[str] = ()) -> str:
    """Validate a figure file stem (letters, digits, ``_ . + = -``; no folders, no extension).

    >>> check_figure_name("fig3_alpha-0.25")
    'fig3_alpha-0.25'
    >>> check_figure_name("figs/a")
    Traceback (most recent call last):
    ...
    ValueError: figure name 'figs/a' must be a file stem: letters, digits and _ . + = - only (no folders, no spaces), e.g. 'fig3_timestep_grid'; put folders in out_dir=
    """
    if not isinstance(name, str) or not _STEM.match(name):
        raise ValueError(f"figure name {name!r} must be a file stem: letters, digits and _ . + = - only "
                         "(no folders, no spaces), e.g. 'fig3_timestep_grid'; put folders in out_dir=")
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix and suffix in {f.lower().lstrip(".") for f in formats}:
        raise ValueError(f"figure name {name!r} ends with the extension .{suffix}; give the stem "
                         f"({name.rsplit('.', 1)[0]!r}) and choose extensions with formats=")
    return name


def save_figure(fig: Any, name: str, out_dir: str | os.PathLike[str] = "figures",
                formats: Sequence[str] = ("png", "pdf"), *, dpi: float | None = None) -> list[Path]:
    """Write ``fig`` to ``out_dir/name.<format>`` for each format, atomically; return the paths.

    Each file is written to a temporary file next to it and renamed into place, so an interrupted
    save never leaves a half-written figure. PDFs carry no creation date, so re-running a notebook
    does not change a figure file just because time passed.

    Parameters
    ----------
    fig:
        A matplotlib Figure.
    name:
        File stem (see :func:`check_figure_name`).
    out_dir:
        Destination folder (created).
    formats:
        Extensions understood by matplotlib (``"png"``, ``"pdf"``, ``"svg"``, ...).
    dpi:
        Resolution of raster formats (default: the style's 300 dpi).
    """
    from cfviz.utils.io import atomic_write_with

    if not hasattr(fig, "savefig") or not hasattr(fig, "canvas"):
        raise TypeError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}; "
                        "for an Axes pass ax.figure")
    if isinstance(formats, str):
        formats = (formats,)
    fmts = [str(f).lower().lstrip(".") for f in formats]
    if not fmts:
        raise ValueError("formats is empty; pass e.g. formats=('png', 'pdf')")
    supported = fig.canvas.get_supported_filetypes()
    bad = [f for f in fmts if f not in supported]
    if bad:
        raise ValueError(f"formats {bad} are not supported by matplotlib; choose from {sorted(supported)}")
    check_figure_name(name, list(supported))
    out = Path(out_dir)
    paths = []
    with style_context():  # savefig settings (dpi, bbox, font embedding) are read at save time
        for fmt in dict.fromkeys(fmts):
            metadata = {"CreationDate": None, "Creator": "cfviz"} if fmt == "pdf" else None

            def write(tmp: Path, fmt: str = fmt, metadata: Any = metadata) -> None:
                # the temporary file has no meaningful extension: name the format explicitly
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)

            paths.append(atomic_write_with(out / f"{name}.{fmt}", write))
    return paths
