"""Figures of the ELBO-estimator comparison: variance versus particles, training curves.

Drawing only: the numbers come from :func:`pyro_spam.compare.estimator_variance` and
:func:`pyro_spam.compare.training_curves`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

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
GUIDE_TITLES = {"initial": "initial guide (loc 0, small scale)", "fitted": "fitted guide"}


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
        fig = plt.figure(figsize=(15, 4.3 * len(guides)), layout="constrained")
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
                ax.loglog([r["S"] for r in rr], [r[key] for r in rr], ls=ls, marker=mk, color=col, lw=1.5, ms=6,
                          mfc="none" if ls == "--" else col, label=lab)
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
            ax.legend(fontsize=7.5)
        ax = axes[gi, 2]
        rat = [r for r in est["ratios"] if r["guide"] == g]
        for pair, off in (("pyro", -0.06), ("manual", 0.06)):
            rr = sorted((r for r in rat if r["pair"] == pair), key=lambda r: r["S"])
            if not rr:
                continue
            s = np.array([r["S"] for r in rr], dtype=float) * (1 + off)
            ls = "-" if pair == "pyro" else "--"
            for what, col in (("grad", "C2"), ("elbo", "C4")):
                v = np.array([r[f"{what}_ratio"] for r in rr])
                err = np.abs(np.array([[r[f"{what}_lo"] for r in rr], [r[f"{what}_hi"] for r in rr]]) - v)
                ax.errorbar(s, v, yerr=err, ls=ls, marker="o", ms=4, color=col, capsize=3, mfc="none" if ls == "--" else col,
                            label=f"{'gradient' if what == 'grad' else 'ELBO-estimate'} variance ({pair})")
        ax.axhline(1.0, color="0.3", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        s_all = sorted({r["S"] for r in rat})
        ax.set_xticks(s_all, [str(v) for v in s_all])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("particles S (log scale)")
        ax.set_ylabel("variance ratio MC KL / analytic KL")
        at = [r for r in rat if r["pair"] == "pyro" and r["S"] == ratio_at]
        if at:
            a = at[0]
            verdict = "analytic KL lowers it" if a["grad_hi"] < 1 else "analytic KL raises it" if a["grad_lo"] > 1 else "no detectable change"
            ax.text(0.02, 0.03, f"gradient ratio at S={ratio_at}: {a['grad_ratio']:.3f}\n"
                    f"95 % CI [{a['grad_lo']:.3f}, {a['grad_hi']:.3f}]: {verdict}",
                    transform=ax.transAxes, fontsize=8.5, va="bottom", bbox={"fc": "white", "ec": "0.7", "alpha": 0.9})
        ax.set_title(f"(c{gi + 1}) Trace_ELBO ÷ TraceMeanField_ELBO, {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper right")
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
