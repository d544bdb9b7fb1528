"""Figures of the ELBO-estimator comparison: variance versus particles, training curves.

Drawing only: the numbers come from :func:`pyro_spam.studies.estimator_variance` and
:func:`pyro_spam.studies.training_curves`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullLocator

from .evaluation import plain_log

#: label → (colour, line style, marker): MC KL in blue, analytic KL in orange; Pyro solid, manual dashed.
STYLES = {
    "Pyro Trace_ELBO": ("C0", "-", "o"),
    "Pyro TraceMeanField_ELBO": ("C1", "-", "s"),
    "manual MC KL": ("C0", "--", "^"),
    "manual analytic KL": ("C1", "--", "v"),
}
#: Drawn larger and hollow so a line that coincides with another one stays visible.
_BIG = {"Pyro Trace_ELBO", "manual MC KL"}
GUIDE_TITLES = {"initial": "initial guide", "fitted": "fitted guide"}


def _style(label: str) -> tuple[str | None, str, str]:
    return STYLES.get(label, (None, "-", "o"))


def plot_estimator_variance(est: Mapping[str, Any], fig: plt.Figure | None = None, ratio_at: int = 64) -> plt.Figure:
    """One row per guide: (a) variance of the ELBO estimate, (b) total gradient variance, both
    against S on log-log axes, and (c) the Trace_ELBO / TraceMeanField_ELBO variance ratios with
    paired-bootstrap 95 % intervals; the gradient ratio at S = ``ratio_at`` is written on (c).

    est : output of ``compare.estimator_variance``
    """
    guides = list(dict.fromkeys(r["guide"] for r in est["table"]))
    if fig is None:
        fig = plt.figure(figsize=(14, 4.6 * len(guides)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(guides), 3, squeeze=False))
    labels = list(dict.fromkeys(r["estimator"] for r in est["table"]))
    for gi, g in enumerate(guides):
        rows = [r for r in est["table"] if r["guide"] == g]
        title = GUIDE_TITLES.get(g, g)
        for ci, (key, ylab) in enumerate((("var_elbo", "variance of the ELBO estimate (nats²)"),
                                          ("var_grad", "gradient variance, trace of covariance"))):
            ax = axes[gi, ci]
            for lab in labels:
                rr = sorted((r for r in rows if r["estimator"] == lab), key=lambda r: r["S"])
                col, ls, mk = _style(lab)
                big = lab in _BIG
                ax.loglog([r["S"] for r in rr], [r[key] for r in rr], ls=ls, marker=mk, color=col, lw=2.2 if big else 1.3,
                          ms=10 if big else 5, mfc="none" if big else col, mew=1.5, label=lab, zorder=2 if big else 3)
            s = np.array(sorted({r["S"] for r in rows}), dtype=float)
            ref = [r for r in rows if r["estimator"] == labels[1] and r["S"] == s[0]]
            if ref:
                ax.loglog(s, ref[0][key] * s[0] / s, color="0.6", lw=0.8, ls=":", label="∝ 1/S")
            plain_log(ax.yaxis)
            ax.set_xlabel("particles S (log scale)")
            ax.set_ylabel(ylab)
            ax.set_title(f"({'ab'[ci]}{gi + 1}) {'ELBO estimate' if ci == 0 else 'Gradient'} variance, {title}", fontsize=10)
            ax.set_xticks(s, [f"{int(v)}" for v in s])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8.5)
        ax = axes[gi, 2]
        rat = [r for r in est["ratios"] if r["guide"] == g]
        rr = sorted((r for r in rat if r["pair"] == "pyro"), key=lambda r: r["S"])
        for what, col, off, lab in (("grad", "C2", 0.94, "gradient variance"), ("elbo", "C4", 1.06, "ELBO-estimate variance")):
            if not rr:
                break
            s = np.array([r["S"] for r in rr], dtype=float) * off
            v = np.array([r[f"{what}_ratio"] for r in rr])
            err = np.abs(np.array([[r[f"{what}_lo"] for r in rr], [r[f"{what}_hi"] for r in rr]]) - v)
            ax.errorbar(s, v, yerr=err, marker="o", ms=5, color=col, capsize=3, lw=1.5, label=f"{lab} ratio, 95 % CI")
        ax.axhline(1.0, color="0.3", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        s_all = sorted({r["S"] for r in rat})
        ax.set_xticks(s_all, [str(v) for v in s_all])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("particles S (log scale)")
        ax.set_ylabel("variance ratio Trace_ELBO ÷ TraceMeanField_ELBO")
        lo_all = min([r[f"{w}_lo"] for r in rr for w in ("grad", "elbo")] + [0.5])
        hi_all = max([r[f"{w}_hi"] for r in rr for w in ("grad", "elbo")] + [2.0])
        ax.set_ylim(lo_all / 1.5, hi_all * 6)  # headroom above the data for the legend and the note
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo_all / 1.5 <= t <= hi_all * 6]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        at = [r for r in rat if r["pair"] == "pyro" and r["S"] == ratio_at]
        if at:
            a = at[0]
            if a["grad_lo"] <= 1 <= a["grad_hi"]:
                short = "no detectable change"
            else:
                change = 1 - 1 / a["grad_ratio"] if a["grad_ratio"] > 1 else 1 / a["grad_ratio"] - 1
                short = f"analytic KL {'lowers' if a['grad_ratio'] > 1 else 'raises'} it by {100 * change:.2g} %"
            ax.text(0.03, 0.97, f"gradient ratio at S = {ratio_at}:\n{a['grad_ratio']:.4f} [{a['grad_lo']:.4f}, {a['grad_hi']:.4f}]\n{short}",
                    transform=ax.transAxes, fontsize=8.5, va="top", ha="left", bbox={"fc": "white", "ec": "0.7", "alpha": 0.9})
        ax.set_title(f"(c{gi + 1}) MC KL ÷ analytic KL (Pyro, paired noise), {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.70))
    return fig


def plot_training_curves(curves: Mapping[str, Mapping[str, Any]], axes: Sequence[plt.Axes] | None = None,
                         smooth: int = 20) -> Sequence[plt.Axes]:
    """Training ELBO of each estimator (running mean over ``smooth`` steps) versus step (a) and
    versus wall-clock seconds (b).

    curves : mapping of label → {``elbo`` (steps,), ``seconds``, ``steps``}
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(13, 4.3), layout="constrained")
    tails = []
    for lab, c in curves.items():
        e = np.asarray(c["elbo"], dtype=float)
        if e.size == 0:
            continue
        k = max(1, min(smooth, e.size))
        sm = np.convolve(e, np.ones(k) / k, mode="valid")
        steps = np.arange(k, e.size + 1)
        t = steps * (float(c["seconds"]) / e.size)
        col, ls, _ = _style(lab)
        ms = 1000 * float(c["seconds"]) / e.size
        axes[0].plot(steps, sm, color=col, ls=ls, lw=1.5, label=f"{lab} ({e.size} steps)")
        axes[1].plot(t, sm, color=col, ls=ls, lw=1.5, label=f"{lab} ({ms:.1f} ms/step)")
        tails.append(sm[sm.size // 5 :])
    if tails:
        v = np.concatenate(tails)
        lo, hi = np.percentile(v, [2, 100])
        pad = 0.15 * (hi - lo + 1)
        for ax in axes:
            ax.set_ylim(lo - pad, hi + pad)
    axes[0].set_xlabel("optimiser step")
    axes[1].set_xlabel("wall-clock time (s; fit time spread evenly over its steps)")
    for ax, t in zip(axes, ("(a) ELBO versus step", "(b) ELBO versus wall-clock time")):
        ax.set_ylabel(f"training ELBO (nats, running mean of {smooth})")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return axes
