"""The shared style, captions, atomic figure saving and the light import of cfviz.viz."""

from __future__ import annotations

import subprocess
import sys

import matplotlib as mpl
import pytest

from cfviz.viz.style import (DIVERGING_CMAP, SCORE_CMAP, add_note, apply_style, check_figure_name, new_figure,
                             save_figure, style_context, style_rc, symmetric_limits)


def _small_figure():
    fig = new_figure(2.0, 1.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("x")
    return fig


def test_style_choices_are_perceptual_and_paper_sized():
    rc = style_rc()
    assert rc["image.cmap"] == SCORE_CMAP == "inferno"
    assert DIVERGING_CMAP in mpl.colormaps and SCORE_CMAP in mpl.colormaps
    assert rc["pdf.fonttype"] == 42 and rc["savefig.dpi"] >= 300
    assert 7 <= rc["font.size"] <= 9  # readable in a two-column paper
    assert rc["figure.constrained_layout.use"]


def test_style_context_restores_and_apply_style_keeps_overrides():
    before = mpl.rcParams["font.size"]
    with style_context(font_size=13):
        assert mpl.rcParams["font.size"] == 13
    assert mpl.rcParams["font.size"] == before
    saved = dict(mpl.rcParams)
    try:
        apply_style(axes_titlesize=10)
        assert mpl.rcParams["image.cmap"] == "inferno"
        with style_context():
            assert mpl.rcParams["axes.titlesize"] == 10  # the override follows into cfviz figures
    finally:
        from cfviz.viz import style

        style._OVERRIDES.clear()
        mpl.rcParams.update(saved)
    with pytest.raises(KeyError, match="not a matplotlib rcParam"):
        style_rc(no_such_param=1)


def test_symmetric_limits():
    assert symmetric_limits([-3.0, 1.0]) == (-3.0, 3.0)
    assert symmetric_limits([0.0, 0.0]) == (-1.0, 1.0)
    assert symmetric_limits([float("nan"), 2.0]) == (-2.0, 2.0)


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    fig = _small_figure()
    paths = save_figure(fig, "fig1_demo", out_dir=tmp_path / "figures")
    assert [p.name for p in paths] == ["fig1_demo.png", "fig1_demo.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["fig1_demo.pdf", "fig1_demo.png"]
    assert b"CreationDate" not in paths[1].read_bytes()


def test_save_figure_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    fig = _small_figure()
    (path,) = save_figure(fig, "keep", tmp_path, formats=("png",))
    old = path.read_bytes()

    def broken(fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"half")  # a partial write, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, "keep", tmp_path, formats=("png",))
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


@pytest.mark.parametrize("name, message", [
    ("figs/a", "file stem"), ("a b", "file stem"), ("", "file stem"), ("../x", "file stem"),
    ("fig.png", "extension"), ("fig.PDF", "extension"),
])
def test_save_figure_rejects_bad_names(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        save_figure(_small_figure(), name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_save_figure_rejects_bad_formats_and_non_figures(tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        save_figure(_small_figure(), "a", tmp_path, formats=("png", "docx"))
    with pytest.raises(ValueError, match="empty"):
        save_figure(_small_figure(), "a", tmp_path, formats=())
    fig = _small_figure()
    with pytest.raises(TypeError, match="ax.figure"):
        save_figure(fig.axes[0], "a", tmp_path)
    assert check_figure_name("fig_alpha-0.25") == "fig_alpha-0.25"
    assert [p.suffix for p in save_figure(fig, "b", tmp_path, formats=".svg")] == [".svg"]


def test_note_is_wrapped_below_the_axes_and_kept_when_saving(tmp_path, figs):
    fig = _small_figure()
    note = "Offline tiny random-weight models: " + "pipeline check only. " * 6
    text = add_note(fig, note)
    assert text.get_gid() == "cfviz-note" and "\n" in text.get_text()  # wrapped to the width
    assert add_note(fig, None) is None and add_note(fig, "  ") is None
    assert figs.overlapping_text(fig) == []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = text.get_window_extent(renderer)
    assert box.y1 <= fig.axes[0].get_tightbbox(renderer).y0 + 1  # below everything else
    tight = fig.get_tightbbox(renderer)  # what savefig(bbox_inches="tight") keeps, in inches
    assert tight.y0 * fig.dpi <= box.y0 + 1 and tight.x0 * fig.dpi <= box.x0 + 1
    (png,) = save_figure(fig, "noted", tmp_path, formats=("png",))
    assert png.stat().st_size > 1000


def test_importing_cfviz_viz_is_light():
    code = (
        "import sys, cfviz.viz as v\n"
        "heavy = [m for m in ('matplotlib', 'seaborn', 'torch', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert v.SCORE_CMAP == 'inferno'\n"
        "assert 'matplotlib' not in sys.modules\n"
        "import numpy as np\n"
        "fig = v.maps_row(np.zeros((8, 8, 3), np.uint8), {'m': np.eye(4)})\n"
        "assert 'matplotlib' in sys.modules and 'torch' not in sys.modules\n"
        "print(sorted(set(v.__all__) - set(dir(v))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves():
    import cfviz.viz as v

    for name in v.__all__:
        assert getattr(v, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        v.not_a_function  # noqa: B018


def test_overlap_checker_catches_clashing_text(figs):
    fig = _small_figure()
    fig.axes[0].set_title("a title")
    assert figs.overlapping_text(fig) == []
    fig.text(0.5, 0.5, "first")
    fig.text(0.5, 0.5, "second")
    clashes = figs.overlapping_text(fig)
    assert [(a[1], b[1]) for a, b in clashes] == [("first", "second")]


def test_figures_show_themselves_in_ipython_without_pyplot():
    pytest.importorskip("IPython")
    from IPython.core.formatters import DisplayFormatter

    fig = _small_figure()
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_pickle_as_their_own_class():
    import pickle

    fig = _small_figure()
    back = pickle.loads(pickle.dumps(fig))
    assert type(back) is type(fig) and back._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
