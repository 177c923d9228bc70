"""Ablation figures from tidy DataFrames: annotated heat maps, alpha curves, metric bars.

The inputs are the long ("tidy") frames the experiment runners return: one row per measured
configuration, with columns naming the setting (``query_t``, ``alpha``, ``method``, ...) and
one column holding the value. Repeated settings must be averaged on purpose (``aggfunc=``), so a
figure never averages seeds or categories without saying so.

Example
-------
>>> import pandas as pd
>>> frame = pd.DataFrame([{"query t": q, "reference t": r, "AUROC": 90 - abs(q - r) / 10}
...                       for q in (100, 261, 400) for r in (100, 261, 400)])
>>> fig = ablation_heatmap(frame, index="query t", columns="reference t", values="AUROC")
>>> len([p for p in fig.axes[0].patches if p.get_gid() == "cfviz-matched"])
3
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cfviz.viz.style import CATEGORICAL, HIGHLIGHT_COLOR, METRIC_CMAP, add_note, new_figure, style_context

#: Default marks of :func:`alpha_curves`: the paper's alpha for segmentation and classification.
ALPHA_MARKS: tuple[float, float] = (0.25, 0.75)
ALPHA_MARK_LABELS: tuple[str, str] = ("segmentation", "classification")


def _check_columns(frame: Any, needed: dict[str, Any]) -> None:
    if not hasattr(frame, "columns"):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = {arg: col for arg, col in needed.items() if col is not None and col not in frame.columns}
    if missing:
        shown = ", ".join(f"{arg}={col!r}" for arg, col in missing.items())
        raise KeyError(f"frame has no column for {shown}; its columns are {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("frame is empty: nothing to plot")


def _check_unique(frame: Any, keys: list[str], what: str, fix: str) -> None:
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        example = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"frame has {int(dup.sum())} rows that share {what} (e.g. {example}); {fix}")


def _owned_figure(ax: Any, width: float, height: float) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(width, height)
    return fig, fig.add_subplot()


def _is_numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column)) and not pd.api.types.is_bool_dtype(column)


def _lightness(color: Any) -> float:
    """Relative luminance of a colour (0 black, 1 white)."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.isclose(float(a), float(b)))
    except (TypeError, ValueError):
        return str(a) == str(b)


def ablation_heatmap(frame: Any, *, index: str, columns: str, values: str, annotate: bool = True,
                     fmt: str = ".1f", mark_diagonal: bool = True, title: str | None = None,
                     aggfunc: str | None = None, cmap: Any = None, vmin: float | None = None,
                     vmax: float | None = None, label: str | None = None, xlabel: str | None = None,
                     ylabel: str | None = None, matched_label: str = "matched\n(row = column)",
                     ax: Any = None, note: str | None = None) -> Any:
    """An annotated heat map of ``values`` over ``index`` (rows) x ``columns``; return the Figure.

    E.g. query timestep x reference timestep for the visual diffusion map, with the matched
    pairs (row label == column label) outlined.

    Parameters
    ----------
    frame:
        Tidy DataFrame with the three columns.
    index, columns, values:
        Column names for rows, columns and cell values. Labels are sorted.
    annotate, fmt:
        Write each value in its cell with this format (``".1f"``, ``".3f"``, ...).
    mark_diagonal:
        Outline the cells whose row and column labels are equal (vermilion, visible on every
        viridis colour), with a legend entry ``matched_label`` under the colour bar.
    aggfunc:
        How to combine rows that share (index, columns) — e.g. ``"mean"`` over categories. By
        default such rows are an error, so nothing is averaged silently.
    cmap, vmin, vmax, label:
        Colours (default :data:`~cfviz.viz.style.METRIC_CMAP`), limits and colour-bar label
        (default: ``values``).
    xlabel, ylabel, title:
        Axis labels (default: the column names) and title.
    ax:
        Draw into this Axes instead of a new figure.
    note:
        Caption under the figure.
    """
    import seaborn as sns
    from matplotlib.patches import Rectangle

    _check_columns(frame, {"index": index, "columns": columns, "values": values})
    with style_context():
        if aggfunc is None:
            _check_unique(frame, [index, columns], f"({index}, {columns})",
                          "pass aggfunc='mean' (or another pandas aggregation) to combine them")
            table = frame.pivot(index=index, columns=columns, values=values)
        else:
            table = frame.groupby([index, columns])[values].agg(aggfunc).unstack(columns)
        table = table.sort_index(axis=0).sort_index(axis=1).astype(float)
        n_rows, n_cols = table.shape
        cell = 0.42 if annotate else 0.3
        fig, ax = _owned_figure(ax, max(2.4, n_cols * cell + 1.6), max(1.8, n_rows * cell * 0.8 + 1.2))
        sns.heatmap(table, ax=ax, annot=annotate, fmt=fmt, cmap=cmap or METRIC_CMAP, vmin=vmin, vmax=vmax,
                    linewidths=0.4, linecolor="white", square=False,
                    annot_kws={"fontsize": 6.5 if n_cols <= 8 else 5.5},
                    cbar_kws={"label": label or values, "shrink": 0.9})
        ax.set_xlabel(xlabel or columns)
        ax.set_ylabel(ylabel or index)
        ax.tick_params(length=0)
        ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
        if title:
            ax.set_title(title)
        matched = []
        if mark_diagonal:
            inset = 0.06  # inside the cell, so neighbouring outlines stay apart
            for i, r in enumerate(table.index):
                for j, c in enumerate(table.columns):
                    if _same(r, c):
                        rect = Rectangle((j + inset, i + inset), 1 - 2 * inset, 1 - 2 * inset, fill=False,
                                         edgecolor=HIGHLIGHT_COLOR, linewidth=1.8, gid="cfviz-matched",
                                         zorder=4, label=matched_label)
                        ax.add_patch(rect)
                        matched.append(rect)
        if matched:
            # under the colour bar: the one free spot that constrained layout also keeps clear
            cbar_ax = ax.collections[0].colorbar.ax if ax.collections and ax.collections[0].colorbar else ax
            cbar_ax.legend(handles=[matched[0]], loc="upper left", bbox_to_anchor=(0.0, -0.03),
                           frameon=False, handlelength=1.0, handleheight=1.0, fontsize="x-small",
                           borderaxespad=0)
        add_note(fig, note)
        return fig


def _palette(levels: Sequence[Any], numeric: bool, palette: Any) -> dict[Any, Any]:
    import matplotlib as mpl

    if isinstance(palette, dict):
        return palette
    if palette is not None:
        colors = mpl.colormaps[palette] if isinstance(palette, str) else palette
        if callable(colors):
            return {v: colors(i / max(1, len(levels) - 1)) for i, v in enumerate(levels)}
        return {v: colors[i % len(colors)] for i, v in enumerate(levels)}
    if numeric:  # shots, sizes: ordered colours, each at least 3 : 1 against white (viridis stops
        # before its light yellow-green end, which had a contrast ratio near 1.7 : 1)
        cmap = mpl.colormaps["viridis"]
        return {v: cmap(0.55 * i / max(1, len(levels) - 1)) for i, v in enumerate(levels)}
    if len(levels) <= len(CATEGORICAL) - 1:  # keep black for the mean
        return {v: CATEGORICAL[i] for i, v in enumerate(levels)}
    cmap = mpl.colormaps["tab20"]
    return {v: cmap(i % 20) for i, v in enumerate(levels)}


def alpha_curves(frame: Any, *, x: str = "alpha", y: str = "value", hue: str | None = "category",
                 marks: Sequence[float] = ALPHA_MARKS, mark_labels: Sequence[str] | None = ALPHA_MARK_LABELS,
                 mean_line: bool = True, title: str | None = None, xlabel: str | None = None,
                 ylabel: str | None = None, palette: Any = None, legend: bool = True, ax: Any = None,
                 note: str | None = None) -> Any:
    """One thin line per ``hue`` value (category or shots), a bold mean, and marks at alpha values.

    Parameters
    ----------
    frame:
        Tidy DataFrame with one row per (hue, x).
    x, y:
        Columns of the fusion weight and of the metric.
    hue:
        Column that splits the curves (``"category"``; ``"shots"`` gets ordered colours). None
        draws one curve.
    marks, mark_labels:
        Vertical dashed lines labelled on a top axis (default: alpha 0.25 "segmentation" and
        0.75 "classification", the paper's choices).
    mean_line:
        Bold black mean over the hue curves. It is taken only at the x values every curve has;
        other x values are left out with a warning that counts them.
    ax, note, title, xlabel, ylabel, palette, legend:
        As usual (legend outside the axes on the right).
    """
    _check_columns(frame, {"x": x, "y": y, "hue": hue})
    if mark_labels is not None and len(mark_labels) != len(marks):
        raise ValueError(f"mark_labels has {len(mark_labels)} entries for {len(marks)} marks")
    with style_context():
        keys = [x] if hue is None else [hue, x]
        _check_unique(frame, keys, "(" + ", ".join(keys) + ")",
                      "average repeated runs first (e.g. frame.groupby([...]).mean()) or use another hue")
        data = frame[[*keys, y]].dropna(subset=[y]).sort_values(x)
        if hue is None:
            groups = [(None, data)]
            colors: dict[Any, Any] = {None: CATEGORICAL[0]}
        else:
            numeric = _is_numeric(data[hue])
            levels = sorted(data[hue].unique()) if numeric else list(dict.fromkeys(data[hue]))
            colors = _palette(levels, numeric, palette)
            groups = [(v, data[data[hue] == v]) for v in levels]
        n_legend = len(groups) + (mean_line and hue is not None)
        fig, ax = _owned_figure(ax, 3.5 + (1.0 if legend and hue else 0),
                                       max(2.4, 0.13 * n_legend + 0.8) if legend and hue else 2.4)
        # thin, translucent lines only under a bold mean; without one the lines are the message
        thin = len(groups) > 1 and mean_line and hue is not None
        many = len(groups) > 1
        for value, g in groups:
            ax.plot(g[x], g[y], color=colors[value], linewidth=0.9 if thin else 1.6,
                    alpha=0.75 if thin else 1.0, label=str(value) if value is not None else y,
                    marker="o" if g[x].nunique() <= 12 and len(groups) <= 5 else None, markersize=2.0,
                    gid="cfviz-curve")
        if mean_line and hue is not None and many:
            table = data.pivot(index=x, columns=hue, values=y)
            complete = table.dropna()
            dropped = len(table) - len(complete)
            if dropped:
                warnings.warn(f"alpha_curves: the mean line leaves out {dropped} {x} value(s) that not every "
                              f"{hue} has", UserWarning, stacklevel=2)
            ax.plot(complete.index, complete.mean(axis=1), color="black", linewidth=2.0,
                    label=f"mean of {table.shape[1]} curves", gid="cfviz-mean", zorder=5)
        marks = [float(m) for m in marks]
        for m in marks:
            ax.axvline(m, color="0.35", linestyle="--", linewidth=0.8, gid="cfviz-mark", zorder=1)
        if marks and mark_labels is not None:
            top = ax.secondary_xaxis("top")
            top.set_xticks(marks, labels=[f"{lab}\nα = {m:g}" for lab, m in zip(mark_labels, marks)])
            top.tick_params(length=0, labelsize="x-small", pad=1)
            top.spines["top"].set_visible(False)
        ax.set_xlabel(xlabel or ("fusion weight α (share of the CLIP maps)" if x == "alpha" else x))
        ax.set_ylabel(ylabel or y)
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
        if title:
            ax.set_title(title)
        if legend and (hue is not None):
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title=hue,
                      ncol=1 if n_legend <= 18 else 2, handlelength=1.4, borderaxespad=0,
                      fontsize="x-small" if n_legend > 8 else None)
        add_note(fig, note)
        return fig


def metric_bars(frame: Any, *, x: str = "method", y: str = "value", hue: str | None = None,
                order: Sequence[Any] | None = None, hue_order: Sequence[Any] | None = None,
                annotate: bool = True, fmt: str = ".1f", errorbar: Any = "sd", ylim: tuple[float, float] | None = None,
                title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
                palette: Any = None, ax: Any = None, note: str | None = None) -> Any:
    """Bars comparing methods (``x``), optionally split by ``hue`` (e.g. metric or shots).

    Rows sharing (x, hue) — e.g. categories or seeds — are averaged, and ``errorbar`` (seaborn's
    argument; default the standard deviation) shows their spread; with one row per bar no error
    bar is drawn. ``annotate`` writes each bar's value with ``fmt``.

    Example
    -------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"method": ["WinCLIP", "MapDiff", "fused"], "value": [81.0, 70.5, 85.2]})
    >>> fig = metric_bars(frame, ylabel="image AUROC (%)")
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['81.0', '70.5', '85.2']
    """
    import seaborn as sns

    _check_columns(frame, {"x": x, "y": y, "hue": hue})
    with style_context():
        keys = [x] if hue is None else [x, hue]
        repeated = frame.duplicated(keys).any()
        n_x = frame[x].nunique()
        n_hue = 1 if hue is None else frame[hue].nunique()
        fig, ax = _owned_figure(ax, max(2.4, 0.35 * n_x * max(1, n_hue) ** 0.7 + 1.2 + (0.9 if hue else 0)), 2.4)
        kwargs: dict[str, Any] = dict(data=frame, x=x, y=y, order=order, ax=ax,
                                      errorbar=errorbar if repeated else None, err_kws={"linewidth": 0.9},
                                      capsize=0.15 if repeated else 0)
        if hue is None:
            kwargs["color"] = CATEGORICAL[0]
        else:
            levels = list(hue_order) if hue_order is not None else list(dict.fromkeys(frame[hue]))
            kwargs.update(hue=hue, hue_order=levels,
                          palette=palette or _palette(levels, _is_numeric(frame[hue]), None))
        sns.barplot(**kwargs)
        if annotate:
            for container in ax.containers:
                if hasattr(container, "patches"):
                    if repeated and errorbar is not None:
                        # error bars cross the bar ends: write the values inside the bars, in black
                        # or white after the bar's lightness
                        texts = ax.bar_label(container, fmt="{:" + fmt + "}", fontsize=5.5, label_type="center",
                                             rotation=90 if n_hue > 2 else 0)
                        for text, bar in zip(texts, container.patches):
                            text.set_color("black" if _lightness(bar.get_facecolor()) > 0.55 else "white")
                    else:
                        ax.bar_label(container, fmt="{:" + fmt + "}", fontsize=6, padding=1.5)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        if sum(len(t) for t in labels) > 6 * max(1, len(labels)) or len(labels) > 6:
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
        xlab = xlabel if xlabel is not None else x
        if repeated and errorbar is not None:
            spread = errorbar if isinstance(errorbar, str) else "/".join(map(str, errorbar))
            xlab = f"{xlab}\n(bars: mean of the rows per bar; error bars: {spread})"
        ax.set_xlabel(xlab)
        ax.set_ylabel(ylabel or y)
        if ylim is not None:
            ax.set_ylim(*ylim)
        else:
            ax.margins(y=0.12)  # room for the value labels
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        if title:
            ax.set_title(title)
        if hue is not None and ax.get_legend() is not None:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title=hue, frameon=False)
        add_note(fig, note)
        return fig
