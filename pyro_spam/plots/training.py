"""Training curves and posterior weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..summary import ELBO_LABELS
from ..types import FitResult


def _smooth(a: np.ndarray, w: int) -> np.ndarray:
    if a.size < w or w <= 1:
        return a
    c = np.cumsum(np.insert(a, 0, 0.0))
    out = np.empty_like(a)
    out[w - 1 :] = (c[w:] - c[:-w]) / w
    out[: w - 1] = c[1:w] / np.arange(1, w)
    return out


def plot_elbo_history(fits: Mapping[str, FitResult], axes: Sequence[plt.Axes] | None = None, smooth: int = 20):
    """ELBO per step (top) and its two parts, expected log-likelihood and KL (bottom), per fit."""
    if axes is None:
        _, axes = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    ax_e, ax_l, ax_k = axes
    for name, fit in fits.items():
        h = fit.history
        label = ELBO_LABELS.get(name, name)
        steps = np.arange(1, len(h) + 1)
        line = ax_e.plot(steps, _smooth(h.elbo, smooth), label=label)[0]
        ax_e.plot(steps, h.elbo, color=line.get_color(), alpha=0.15, lw=0.6)
        ax_l.plot(steps, _smooth(h.loglik, smooth), color=line.get_color(), label=label)
        ax_k.plot(steps, _smooth(h.kl, smooth), color=line.get_color(), label=label)
        _mark_convergence(axes, (fit.extra or {}).get("convergence") or {}, line.get_color())
    ax_e.set_title(f"Training ELBO and its parts (running mean over {smooth} steps)")
    ax_e.set_ylabel("ELBO (nats)")
    ax_l.set_ylabel("E_q[log p(y|X,w)] (nats)")
    ax_k.set_ylabel("KL(q‖p) (nats)")
    ax_k.set_xlabel("optimiser step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # Early steps are far below the plateau; show the part of the curve that carries information.
    for ax, key in ((ax_e, "elbo"), (ax_l, "loglik")):
        vals = np.concatenate([getattr(f.history, key)[len(f.history) // 10 :] for f in fits.values()])
        if vals.size:
            lo, hi = np.percentile(vals, [1, 100])
            ax.set_ylim(lo - 0.1 * (hi - lo + 1), hi + 0.1 * (hi - lo + 1))
    return axes


def _mark_convergence(axes: Sequence[plt.Axes], evidence: Mapping, color: str) -> None:
    """Shade the averaging window of the returned guide and draw a dotted line at each learning-rate decay."""
    window = evidence.get("averaging_window")
    decays = evidence.get("lr_decays") or evidence.get("decays") or []
    for ax in axes:
        if window:
            ax.axvspan(window[0] + 1, window[1], color=color, alpha=0.08, lw=0)
        for d in decays:
            ax.axvline(d["step"], color=color, ls=":", lw=0.9)


def plot_weights(
    fits: Mapping[str, FitResult], names: Sequence[str], prior_scale: float = 1.0, ax: plt.Axes | None = None
) -> plt.Axes:
    """Posterior mean ± 1 sd of every coefficient per fit, with the prior's ±1 sd band."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 3), 4))
    x = np.arange(len(names))
    width = 0.8 / max(1, len(fits))
    ax.axhspan(-prior_scale, prior_scale, color="0.9", label=f"prior N(0, {prior_scale:g}²) ±1 sd")
    ax.axhline(0, color="0.5", lw=0.8)
    for i, (name, fit) in enumerate(fits.items()):
        ax.errorbar(x + (i - (len(fits) - 1) / 2) * width, fit.loc, yerr=fit.scale, fmt="o", capsize=4,
                    label=f"{ELBO_LABELS.get(name, name)}: mean ± sd")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("coefficient (log-odds per sd of term)")
    ax.set_title("Posterior mean ± sd of each coefficient under q")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax
