"""Simulation-based calibration figures: rank ECDF-difference grids and interval coverage.

Drawing only: the numbers are the JSON-friendly summaries of
:func:`pyro_spam.diagnostics.sbc.sbc_summary` (ranks included), grouped as
``{study_label: {approx_label: summary}}``, e.g. ``{"prior SBC": {"mean-field": s1,
"full covariance": s2}, "posterior SBC": {...}}``; so every figure can be redrawn from
``summary.json``. Nothing here imports torch or Pyro.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..inference_data import az

_MARKERS = ("o", "s", "^", "D", "v", "P")
BAND_COLOR = "0.55"

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]


def _prepare(results: Results, names: Sequence[str]) -> tuple[list[str], list[tuple[str, str, Mapping[str, Any]]], dict[str, tuple[str, str]]]:
    """Names as strings (refusing none), the (study, approximation, summary) columns and a style per approximation."""
    names = [str(n) for n in names]
    if not names:
        raise ValueError("names is empty: expected one name per coefficient")
    return names, _columns(results), _approx_styles(results)


def _columns(results: Results) -> list[tuple[str, str, Mapping[str, Any]]]:
    cols = [(study, approx, s) for study, by_approx in results.items() for approx, s in by_approx.items()]
    if not cols:
        raise ValueError("results is empty: expected {study_label: {approx_label: sbc_summary dict}}")
    return cols


def _approx_styles(results: Results) -> dict[str, tuple[str, str]]:
    """approximation label → (colour, marker), the same in every study."""
    labels = list(dict.fromkeys(a for by_approx in results.values() for a in by_approx))
    return {a: (f"C{i % 10}", _MARKERS[i % len(_MARKERS)]) for i, a in enumerate(labels)}


def _levels(summary: Mapping[str, Any]) -> set[str]:
    """Suffixes of the ``coverage_<pct>`` keys (e.g. {"50", "90"}); the same rule as ``diagnostics.sbc.summary_levels``,
    repeated because plots and diagnostics are independent layers."""
    return {m.group(1) for k in summary if (m := re.fullmatch(r"coverage_(\d+(?:_\d+)?)", k))}


def _ranks(summary: Mapping[str, Any], n_coef: int, where: str) -> tuple[np.ndarray, int]:
    ranks = np.asarray(summary["ranks"], dtype=int)
    if ranks.ndim != 2 or ranks.shape[1] != n_coef:
        raise ValueError(f"{where}: ranks of shape {ranks.shape} do not match the {n_coef} coefficient names")
    return ranks, int(summary["n_draws"])


def _uniform_cdf(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def _eval_points(n_bins: int, max_points: int) -> np.ndarray:
    """Rank boundaries k/(L+1), k = 0..L+1 (thinned to about ``max_points`` + 1 of them): fixed before seeing the ranks."""
    k = np.unique(np.linspace(0, n_bins, min(n_bins, max_points) + 1).round().astype(int))
    return k / n_bins


def _rank_band(n_sims: int, n_bins: int, eval_points: np.ndarray, conf: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's simultaneous ``conf`` band of ECDF − uniform at ``eval_points`` for ``n_sims`` ranks uniform on 0..L.

    The same computation as ``az.plot_ecdf(..., difference=True, confidence_bands=method)``
    (``arviz.stats.ecdf_utils.ecdf_confidence_band``), done here once per (n_sims, L) because a
    grid of P × columns panels would otherwise repeat it in every panel (about 0.3 s each).
    """
    if method not in ("optimized", "simulated"):
        raise ValueError(f"band_method must be 'optimized' or 'simulated' (a simultaneous band), got {method!r}")

    def rvs(n: int, random_state: Any = None) -> np.ndarray:
        return (np.random.default_rng(random_state).integers(0, n_bins, n) + 0.5) / n_bins

    cdf = _uniform_cdf(eval_points)
    extra = {"rvs": rvs, "random_state": np.random.default_rng(0)} if method == "simulated" else {}
    lower, upper = az.stats.ecdf_utils.ecdf_confidence_band(n_sims, eval_points, cdf, prob=conf, method=method, **extra)
    return lower - cdf, upper - cdf


def plot_rank_ecdf(
    results: Results,
    names: Sequence[str],
    *,
    conf: float = 0.95,
    band_method: str = "optimized",
    max_points: int = 100,
    fig: plt.Figure | None = None,
) -> plt.Figure:
    """Grid of SBC rank ECDF-difference plots: one row per coefficient, one column per (study, approximation).

    Each panel shows ECDF(u) − u of the fractional ranks u = (rank + ½)/(L + 1) of the
    ``sims`` true values, evaluated at the rank boundaries k/(L + 1) (at most ``max_points`` of
    them, fixed in advance so the band is calibrated), where the ECDF counts the ranks below k and
    the uniform CDF is exactly k/(L + 1). The curve is drawn by ``az.plot_ecdf(...,
    difference=True)``; the shaded band is ArviZ's simultaneous ``conf`` confidence band for
    uniform ranks, the one ``az.plot_ecdf(confidence_bands=band_method)`` draws (Säilynoja et al.
    2022; "optimized" is exact for discrete ranks), computed once per (n_sims, L) and shared by
    the panels: a calibrated approximation's curve leaves it anywhere with probability about
    1 − conf. A ∪-shaped rank histogram (approximation too narrow) draws an S-curve
    (up at the left, down at the right), a ∩ shape (too wide) the mirror image, a shifted mean a
    one-signed hump. The chi-square rank-uniformity p-value is written in each panel's corner.

    results : ``{study_label: {approx_label: sbc_summary dict}}``
    names : the P coefficient names, in coefficient order
    band_method : "optimized" (exact, default) or "simulated" (Monte Carlo, seed 0)
    """
    names, cols, styles = _prepare(results, names)
    n_coef = len(names)
    ncols = len(cols)
    if fig is None:
        fig = plt.figure(figsize=(1.2 + 2.0 * ncols, 1.1 + 0.85 * n_coef))
    axes = np.asarray(fig.subplots(n_coef, ncols, sharex=True, sharey="row", squeeze=False,
                                   gridspec_kw={"hspace": 0.12, "wspace": 0.06}))
    # Margins in inches, so that labels keep their room whatever P.
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=min(0.4, 1.0 / w), right=1 - 0.15 / w, top=1 - 0.75 / h, bottom=0.5 / h)

    bands: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for c, (study, approx, summary) in enumerate(cols):
        ranks, n_draws = _ranks(summary, n_coef, f"results[{study!r}][{approx!r}]")
        n_sims, n_bins = len(ranks), n_draws + 1
        eval_points = _eval_points(n_bins, max_points)
        if (n_sims, n_bins) not in bands:
            bands[n_sims, n_bins] = _rank_band(n_sims, n_bins, eval_points, conf, band_method)
        lower, upper = bands[n_sims, n_bins]
        color = styles[approx][0]
        rank_p = summary.get("rank_p") or [None] * n_coef
        for j in range(n_coef):
            ax = axes[j, c]
            az.plot_ecdf((ranks[:, j] + 0.5) / n_bins, eval_points=eval_points, cdf=_uniform_cdf, difference=True, ax=ax,
                         plot_kwargs={"color": color, "lw": 1.0})
            # The band as az.plot_ecdf(confidence_bands=...) draws it, computed once per (n_sims, L).
            ax.fill_between(eval_points, lower, upper, step="post", color=BAND_COLOR, alpha=0.3, lw=0)
            ax.axhline(0.0, color="0.3", lw=0.5, ls=":")
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.set_xlim(0.0, 1.0)
            ax.grid(alpha=0.25, lw=0.4)
            p = rank_p[j]
            ax.text(0.98, 0.94, "rank p n/a" if p is None else f"rank p {p:.2g}", transform=ax.transAxes, ha="right", va="top",
                    fontsize=5.5, color="C3" if p is not None and p < float(summary.get("alpha", 0.01)) else "0.35")
            if j == 0:
                ax.set_title(f"{study}\n{approx} (L={n_draws}, n={len(ranks)})", fontsize=7, pad=3)
            if c == 0:
                ax.set_ylabel(names[j], fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
            if j == n_coef - 1:
                ax.set_xlabel("fractional rank", fontsize=6.5, labelpad=1)
    fig.suptitle(f"SBC ranks: ECDF − uniform with simultaneous {100 * conf:g} % bands (Säilynoja et al. 2022)",
                 fontsize=9, y=1 - 0.12 / fig.get_size_inches()[1], va="top")
    return fig


def plot_coverage(
    results: Results,
    names: Sequence[str],
    *,
    fig: plt.Figure | None = None,
) -> plt.Figure:
    """Empirical interval coverage per coefficient, with the binomial bands shaded.

    One panel per (study, interval level), studies side by side and, within a study, the levels
    (e.g. 50 % and 90 %) in increasing order; coefficients run down the shared vertical axis, one
    colour and marker per approximation (the same in every study). The shaded band is each
    summary's ``coverage_band_<pct>`` (exact binomial quantiles at ``band_conf``), the dashed
    line the nominal level; a marker left of the band is an interval that is too narrow (or off
    centre), right of it too wide.

    results : ``{study_label: {approx_label: sbc_summary dict}}``
    names : the P coefficient names, in coefficient order
    """
    names, cols, styles = _prepare(results, names)
    n_coef = len(names)
    levels = sorted(set.intersection(*(_levels(s) for _, _, s in cols)), key=lambda k: float(k.replace("_", ".")))
    if not levels:
        raise ValueError("the summaries share no coverage_<pct> key")
    panels = [(study, key) for study in results for key in levels]
    if fig is None:
        fig = plt.figure(figsize=(1.4 + 2.6 * len(panels), 1.9 + 0.28 * n_coef))
    axes = np.atleast_1d(np.asarray(fig.subplots(1, len(panels), sharey=True, squeeze=False, gridspec_kw={"wspace": 0.12}))).ravel()
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=min(0.4, 1.1 / w), right=1 - 0.15 / w, top=1 - 0.6 / h, bottom=0.85 / h)
    y = np.arange(n_coef)
    confs = set()
    for ax, (study, key) in zip(axes, panels):
        approxs = list(results[study].items())
        m = len(approxs)
        nominal = float(key.replace("_", ".")) / 100
        xs = [nominal]
        panel_bands = {tuple(float(v) for v in s[f"coverage_band_{key}"]) for _, s in approxs}
        shared = len(panel_bands) == 1
        if shared:
            ax.axvspan(*next(iter(panel_bands)), color=BAND_COLOR, alpha=0.3, lw=0)
        for i, (approx, s) in enumerate(approxs):
            cov = np.array([np.nan if v is None else v for v in s[f"coverage_{key}"]], dtype=float)
            if cov.shape != (n_coef,):
                raise ValueError(f"results[{study!r}][{approx!r}]: coverage_{key} has {cov.size} entries for {n_coef} coefficient names")
            lo, hi = (float(v) for v in s[f"coverage_band_{key}"])
            confs.add(float(s.get("band_conf", np.nan)))
            color, marker = styles[approx]
            dy = 0.7 / m
            off = (i - (m - 1) / 2) * dy
            if not shared:  # approximations run with different n_sims: each band behind its own markers
                for yy in y + off:
                    ax.fill_betweenx([yy - dy / 2, yy + dy / 2], lo, hi, color=BAND_COLOR, alpha=0.3, lw=0)
            outside = (cov < lo) | (cov > hi)
            ax.scatter(cov[~outside], (y + off)[~outside], s=16, marker=marker, facecolors="none", edgecolors=color, lw=1.0, zorder=3)
            ax.scatter(cov[outside], (y + off)[outside], s=18, marker=marker, color=color, zorder=3)
            xs += [lo, hi, *cov[np.isfinite(cov)]]
        ax.axvline(nominal, color="0.2", lw=0.8, ls="--", zorder=1)
        span = max(xs) - min(xs)
        ax.set_xlim(max(0.0, min(xs) - 0.08 * span - 0.01), min(1.0, max(xs) + 0.08 * span + 0.01) + 0.005)
        ax.set_title(f"{study}: {key.replace('_', '.')} % intervals", fontsize=8)
        ax.set_xlabel("fraction of true values covered", fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].set_ylim(n_coef - 0.5, -0.5)
    conf_txt = ", ".join(f"{100 * c:g} %" for c in sorted(confs) if np.isfinite(c)) or "binomial"
    handles = [Line2D([], [], ls="", marker=mk, color=col, label=a) for a, (col, mk) in styles.items()]
    handles += [Patch(color=BAND_COLOR, alpha=0.3, label=f"{conf_txt} binomial band"),
                Line2D([], [], color="0.2", ls="--", lw=0.8, label="nominal level")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("SBC interval coverage (filled marker: outside the band)", fontsize=9, y=1 - 0.1 / h, va="top")
    return fig
