"""Cross-check figures: the four ELBO implementations side by side, and the MC-KL error versus S.

Drawing only: the numbers come from :mod:`pyro_spam.crosscheck` (``summarize_replicates`` and
``mc_kl_error_vs_s``); nothing here imports torch or Pyro.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

_MARKERS = {"Pyro": "o", "manual": "s"}


def plot_elbo_estimates(summary: Sequence[Mapping[str, Any]], ax: plt.Axes | None = None, *, se_mult: float = 2.0) -> plt.Axes:
    """Mean ELBO estimate of each implementation with ±``se_mult`` Monte Carlo SE error bars.

    summary : sequence of mappings with keys ``name``, ``mean``, ``se`` (nats) and ``n``
        One entry per implementation, e.g. from ``crosscheck.summarize_replicates``.
    Values are drawn relative to the mean of the four means (stated in the axis label), since
    they differ by fractions of a nat on an ELBO of thousands.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    means = np.array([float(s["mean"]) for s in summary])
    ref = float(means.mean()) if means.size else 0.0
    for i, s in enumerate(summary):
        name = str(s["name"])
        marker = _MARKERS["Pyro"] if name.startswith("Pyro") else _MARKERS["manual"]
        ax.errorbar(
            [i],
            [float(s["mean"]) - ref],
            yerr=[se_mult * float(s["se"])],
            fmt=marker,
            capsize=5,
            label=f"{name} (n={int(s.get('n', 0))})",
        )
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([str(s["name"]) for s in summary], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"ELBO − {ref:.2f} (nats)")
    ax.set_xlabel("implementation")
    ax.set_title(f"ELBO estimates at the fitted guide (mean ± {se_mult:g} SE over replicates)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_mc_kl_error(kl_error: Any, ax: plt.Axes | None = None) -> plt.Axes:
    """RMS error of the Monte Carlo KL against the closed form versus the number of draws S.

    kl_error : object with attributes ``S``, ``rms`` (nats), ``slope``, ``intercept`` and ``reps``
        e.g. ``crosscheck.McKlError``. Drawn on log-log axes with the least-squares fit and a
        1/√S reference line (slope −½ fitted through the same points).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    s = np.asarray(kl_error.S, dtype=float)
    rms = np.asarray(kl_error.rms, dtype=float)
    ax.loglog(s, rms, "o", label=f"MC KL, RMS over {int(kl_error.reps)} estimates")
    grid = np.geomspace(s.min(), s.max(), 50)
    ax.loglog(grid, np.exp(kl_error.intercept) * grid**kl_error.slope, "-", lw=1.2, label=f"fit: slope {kl_error.slope:.3f}")
    c = np.exp(np.mean(np.log(rms) + 0.5 * np.log(s)))
    ax.loglog(grid, c / np.sqrt(grid), "--", color="0.4", lw=1.0, label="reference ∝ 1/√S")
    ax.set_xlabel("Monte Carlo draws S")
    ax.set_ylabel("RMS error of MC KL vs analytic KL (nats)")
    ax.set_title("Monte Carlo KL converges to the closed form at rate 1/√S")
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return ax


def plot_crosscheck(summary: Sequence[Mapping[str, Any]], kl_error: Any, fig: plt.Figure | None = None) -> plt.Figure:
    """Both panels side by side: (a) :func:`plot_elbo_estimates`, (b) :func:`plot_mc_kl_error`."""
    own = fig is None
    if own:
        # Fixed margins (inches) instead of tight_layout, which costs a layout pass over every
        # artist: 1 in between the panels for (b)'s tick labels and y label; the outer margins only
        # need to be large enough, since pyro_spam.io.rundir.save_figure crops to what is drawn.
        w, h, gap, left, right = 13.0, 4.5, 1.0, 1.0, 0.15
        panel = (w - left - right - gap) / 2
        fig = plt.figure(figsize=(w, h))
        ax_a, ax_b = fig.subplots(1, 2, gridspec_kw={"left": left / w, "right": 1 - right / w, "bottom": 0.95 / h,
                                                     "top": 1 - 0.35 / h, "wspace": gap / panel})
    else:
        ax_a, ax_b = fig.subplots(1, 2)
    plot_elbo_estimates(summary, ax=ax_a)
    plot_mc_kl_error(kl_error, ax=ax_b)
    ax_a.set_title("(a) " + ax_a.get_title(), fontsize=10)
    ax_b.set_title("(b) " + ax_b.get_title(), fontsize=10)
    if not own:
        fig.tight_layout()
    return fig
