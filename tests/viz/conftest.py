"""Fixtures for the figure tests: a small texture sample, a real capture on the tiny pipeline,
and helpers that inspect figures (colour bars, image panels, overlapping text)."""

from __future__ import annotations

import types

import numpy as np
import pytest


def _all_axes(fig):
    """Figure axes plus their inset (child) axes, where per-panel colour bars live."""
    out = []
    for ax in fig.axes:
        out.append(ax)
        out.extend(ax.child_axes)
    return out


def _colorbars(fig):
    return [ax for ax in _all_axes(fig) if ax.get_gid() == "cfviz-colorbar"]


def _colorbar_labels(fig):
    return [ax.get_ylabel() or ax.get_xlabel() for ax in _colorbars(fig)]


def _panels(fig):
    """Axes that are not colour bars."""
    return [ax for ax in fig.axes if ax.get_gid() != "cfviz-colorbar"]


def _heatmaps(ax):
    return [im for im in ax.get_images() if im.get_gid() == "cfviz-heatmap"]


def _texts(fig):
    """Visible, non-empty text artists with their on-canvas boxes (after a draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    found, seen = [], set()

    def add(t, where):
        if t is not None and id(t) not in seen and t.get_visible() and t.get_text().strip():
            seen.add(id(t))
            found.append((where, t.get_text(), t.get_window_extent(renderer)))

    for t in fig.texts:
        add(t, "figure")
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        add(getattr(fig, name, None), "figure")
    for i, ax in enumerate(_all_axes(fig)):
        add(ax.title, f"ax{i}.title")
        add(ax._left_title, f"ax{i}.title")
        add(ax._right_title, f"ax{i}.title")
        add(ax.xaxis.label, f"ax{i}.xlabel")
        add(ax.yaxis.label, f"ax{i}.ylabel")
        for t in ax.get_xticklabels() + ax.get_yticklabels():
            add(t, f"ax{i}.tick")
        for t in ax.texts:
            add(t, f"ax{i}.text")
        leg = ax.get_legend()
        if leg is not None:
            for t in [leg.get_title(), *leg.get_texts()]:
                add(t, f"ax{i}.legend")
    return found


def _overlapping_text(fig, tol=1.0):
    """Pairs of text artists whose boxes overlap by more than ``tol`` pixels each way."""
    texts = _texts(fig)
    clashes = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = texts[i][2], texts[j][2]
            dx = min(a.x1, b.x1) - max(a.x0, b.x0)
            dy = min(a.y1, b.y1) - max(a.y0, b.y0)
            if dx > tol and dy > tol:
                clashes.append((texts[i][:2], texts[j][:2]))
    return clashes


@pytest.fixture(scope="session")
def figs():
    """Helpers that read figures."""
    return types.SimpleNamespace(colorbars=_colorbars, colorbar_labels=_colorbar_labels, panels=_panels,
                                 heatmaps=_heatmaps, overlapping_text=_overlapping_text)


@pytest.fixture(scope="session")
def textures(tmp_path_factory):
    """A small generated texture data set (64 px, brick only): test samples with masks."""
    from cfviz.data import TexturesDataset

    root = tmp_path_factory.mktemp("textures")
    params = dict(seed=0, image_size=64, n_train=1, n_test_good=1, n_per_defect=1, categories_generated=("brick",))
    return list(TexturesDataset(root, **params))


@pytest.fixture(scope="session")
def defect(textures):
    return next(s for s in textures if s.label == 1 and s.mask.any())


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
