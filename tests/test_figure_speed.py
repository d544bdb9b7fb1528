"""save_figure draws a figure once and crops it like bbox_inches="tight"; the run's figures fit the
canvas it draws on (structure only: no timings)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from pyro_spam.io import rundir
from pyro_spam.io.rundir import save_figure
from pyro_spam.plots.crosscheck import plot_crosscheck
from pyro_spam.plots.evaluation import plot_examples
from pyro_spam.plots.guides import plot_guides_pair

DPI = 50


def _tight_size(fig: Figure) -> tuple[int, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return Image.open(buf).size


def _saved(tmp_path, fig: Figure, name: str = "f.png") -> Image.Image:
    save_figure(fig, tmp_path / name, dpi=DPI)
    im = Image.open(tmp_path / name)
    im.load()
    return im


@pytest.fixture
def draws(monkeypatch):
    """Counts Figure.draw calls (a full pass over every artist)."""
    count = {"n": 0}
    orig = Figure.draw

    def counting(self, renderer):
        count["n"] += 1
        return orig(self, renderer)

    monkeypatch.setattr(Figure, "draw", counting)
    return count


def _labelled_figure(long_label: str = "a y label") -> Figure:
    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 3))
    a.plot([0, 1], [0, 1], label="line")
    b.bar([0, 1], [3, 1])
    a.set_ylabel(long_label)
    b.set_xticks([0, 1], ["first category", "second"], rotation=30, ha="right")
    fig.suptitle("a suptitle")
    fig.legend(loc="lower center", ncol=2)  # no anchor of its own: follows fig.bbox
    return fig


def test_crop_matches_tight_bbox_in_one_draw(tmp_path, draws):
    """Same picture size as bbox_inches="tight" (a pixel or two of border aside), a single draw, RGB."""
    fig = _labelled_figure()
    tight = _tight_size(fig)
    draws["n"] = 0
    im = _saved(tmp_path, fig)
    assert draws["n"] == 1
    assert im.mode == "RGB"
    assert abs(im.size[0] - tight[0]) <= 4 and abs(im.size[1] - tight[1]) <= 4
    assert not plt.fignum_exists(fig.number)


def test_figure_legend_is_not_lost(tmp_path):
    """The figure legend below the axes is in the picture: its bottom rows hold ink, the crop is as tall as the tight one."""
    fig = _labelled_figure()
    tight = _tight_size(fig)
    im = np.asarray(_saved(tmp_path, fig))
    assert abs(im.shape[0] - tight[1]) <= 4
    bottom = im[-int(0.4 * DPI):]
    assert (bottom < 200).any()  # legend text near the bottom edge


def test_content_beyond_the_margin_falls_back_to_tight_bbox(tmp_path, draws):
    """A label sticking out further than the extra canvas is not clipped: the tight bounding box is used."""
    fig = _labelled_figure(long_label="x" * 40)
    fig.axes[0].yaxis.set_label_coords(-2.5, 0.5)  # far left of the figure
    tight = _tight_size(fig)
    draws["n"] = 0
    im = _saved(tmp_path, fig)
    assert draws["n"] >= 2  # the fast draw, then the tight bounding box's
    assert abs(im.size[0] - tight[0]) <= 4


def test_constrained_figure_with_outside_legend_keeps_its_room(tmp_path):
    """Under constrained layout the "outside" legend keeps its reserved room (no anchor is imposed on it)."""
    fig = plt.figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xlabel("x label")
    leg = fig.legend(loc="outside lower center")
    _saved(tmp_path, fig)
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    assert leg.get_window_extent(renderer).y1 <= ax.xaxis.label.get_window_extent(renderer).y0


def test_pngs_are_small_and_valid(tmp_path):
    fig = _labelled_figure()
    save_figure(fig, tmp_path / "f.png", dpi=110)
    data = (tmp_path / "f.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def _canvas_holds_everything(fig: Figure) -> bool:
    fig.set_dpi(DPI)
    renderer = fig._get_renderer()
    fig.draw_without_rendering()
    bb = fig.get_tightbbox(renderer)
    w, h = fig.get_size_inches()
    m = rundir._FIGURE_MARGIN
    return bb.x0 > -m and bb.y0 > -m and bb.x1 < w + m and bb.y1 < h + m


def _no_overlap(left_ax, right_ax, renderer) -> bool:
    """The right panel's y tick labels and label start right of the left panel's axes box."""
    texts = [t for t in right_ax.get_yticklabels() if t.get_text()] + [right_ax.yaxis.label]
    x0 = min(t.get_window_extent(renderer).x0 for t in texts if t.get_text())
    return x0 > left_ax.get_window_extent(renderer).x1


def test_examples_labels_fit_the_canvas():
    """Long message labels get room on the left: nothing needs the tight-bbox fallback."""
    rows = [{"text": "FREE entry!! " * 8, "label": "spam", "p_mean": 0.4, "p_lo": 0.2, "p_hi": 0.7},
            {"text": "ok see you", "label": "ham", "p_mean": 0.6, "p_lo": 0.5, "p_hi": 0.8}]
    axes = plot_examples({"most_uncertain": rows, "confidently_wrong": rows[:1]})
    fig = axes[0].figure
    try:
        assert _canvas_holds_everything(fig)
        fig.set_dpi(DPI)
        renderer = fig._get_renderer()
        fig.draw_without_rendering()
        labels = [t for t in axes[0].get_yticklabels() if t.get_text()]
        assert min(t.get_window_extent(renderer).x0 for t in labels) >= 0  # inside the figure itself
    finally:
        plt.close(fig)


def test_crosscheck_panels_do_not_overlap():
    summary = [{"name": n, "mean": -663.6 + 0.01 * i, "se": 0.03, "n": 30}
               for i, n in enumerate(("Pyro Trace_ELBO", "Pyro TraceMeanField_ELBO", "manual MC KL", "manual analytic KL"))]
    s = np.array([4, 16, 64, 256, 1024, 4096])
    kl = SimpleNamespace(S=s, rms=0.9 / np.sqrt(s / 4), slope=-0.5, intercept=0.0, reps=200)
    fig = plot_crosscheck(summary, kl)
    try:
        assert fig.get_layout_engine() is None  # fixed margins: no layout pass when saved
        assert _canvas_holds_everything(fig)
        assert _no_overlap(*fig.axes, fig._get_renderer())
    finally:
        plt.close(fig)


def test_guides_panels_do_not_overlap():
    names = ["w0 (bias)", "x1", "x2^2", "a much longer coefficient name"]
    rng = np.random.default_rng(0)

    def row(key, name, kind):
        cov = np.diag(rng.uniform(0.01, 0.02, 2))
        return {"key": key, "name": name, "kind": kind, "pair_mean": [-4.1, 2.7], "pair_cov": cov.tolist(), "pair_rho": 0.0,
                "mean": rng.normal(size=4).tolist(), "sd": rng.uniform(0.05, 0.1, 4).tolist()}

    section = {"rows": [row("trace", "mean-field VI", "fit"), row("laplace", "Laplace at the MAP", "reference")],
               "coef_names": names, "pair": [0, 1], "pair_source": "Laplace at the MAP"}
    fig = plot_guides_pair(section)
    try:
        assert fig.get_layout_engine() is None
        assert _canvas_holds_everything(fig)
        assert _no_overlap(*fig.axes, fig._get_renderer())
    finally:
        plt.close(fig)
