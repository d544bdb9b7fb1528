"""Figures of the estimator lab: gradient variance versus particles, the Monte Carlo / subsampling
split under mini-batches, and one training run per estimator.

Drawing only: the numbers come from :mod:`pyro_spam.estimator_lab` (``summary["estimators"]``
and ``estimator_curves.npz``). Every estimator keeps one colour, line style and marker across the
figures (:data:`STYLES`); ``quad`` has zero Monte Carlo variance, which a log axis cannot show, so
the variance panels say so in a note instead of drawing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from ..summary import elbo_label

__all__ = ["STYLES", "GUIDE_TITLES", "estimator_style", "plot_estimator_variance", "plot_minibatch_split", "plot_training_runs"]

STYLES: dict[str, tuple[str, str, str]] = {
    "trace": ("C0", "-", "o"),
    "meanfield": ("C1", "--", "s"),
    "stl": ("C2", "-", "^"),
    "rqmc": ("C3", "-", "D"),
    "quad": ("black", "-", "*"),
    "iwae": ("C4", "-.", "v"),
    "score": ("C5", "-", "P"),
    "score_nobaseline": ("C5", ":", "X"),
}
"""Estimator → (colour, line style, marker), shared by every figure of the lab."""
GUIDE_TITLES = {"initial": "initial guide", "fitted": "fitted guide (exact optimum)"}
_BIG = {"trace"}
"""Drawn larger and hollow, so an estimator that coincides with it (meanfield's gradient) stays visible."""


def estimator_style(kind: str) -> tuple[str, str, str]:
    """(colour, line style, marker) of an estimator; grey for one :data:`STYLES` does not know."""
    return STYLES.get(kind, ("0.5", "-", "o"))


def _label(kind: str) -> str:
    return f"{kind}: {elbo_label(kind)}"


def _line(ax: plt.Axes, kind: str, xs: Sequence[float], ys: Sequence[float], **kw: Any) -> None:
    """One estimator's line on log-log axes, non-positive values left out."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        return
    col, ls, mk = estimator_style(kind)
    big = kind in _BIG
    style = {"color": col, "ls": ls, "marker": mk, "lw": 2.4 if big else 1.4, "ms": 10 if big else 5.5,
             "mfc": "none" if big else col, "mew": 1.5, "zorder": 2 if big else 3, **kw}
    ax.plot(x[ok], y[ok], **style)


def _log_axes(ax: plt.Axes, s_values: Sequence[int], xlabel: str = "particles S (log scale)") -> None:
    """Log–log axes with S as plain tick labels and powers of ten on y."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(s_values), [str(int(v)) for v in s_values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if 1e-3 <= v < 1e5 else f"1e{np.log10(v):.0f}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, which="major")


def _note(ax: plt.Axes, text: str, *, loc: str = "lower left") -> None:
    """A small boxed note in a corner of the axes."""
    x, ha = (0.02, "left") if "left" in loc else (0.98, "right")
    y, va = {"lower": (0.03, "bottom"), "upper": (0.97, "top"), "center": (0.5, "center")}[loc.split()[0]]
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=8.5,
            bbox={"fc": "white", "ec": "0.7", "alpha": 0.9, "boxstyle": "round,pad=0.3"})


def _ref_line(ax: plt.Axes, s: np.ndarray, y0: float, power: float, label: str) -> None:
    """A grey dotted reference ∝ S^-power through ``y0`` at the smallest S."""
    if np.isfinite(y0) and y0 > 0:
        ax.plot(s, y0 * (s[0] / s) ** power, color="0.55", lw=1.0, ls=":", zorder=1, label=label)


def _legend_handles(kinds: Sequence[str], extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[Line2D]:
    handles = []
    for k in kinds:
        col, ls, mk = estimator_style(k)
        big = k in _BIG
        handles.append(Line2D([], [], color=col, ls=ls, marker=mk, lw=2.4 if big else 1.4, ms=9 if big else 5.5,
                              mfc="none" if big else col, mew=1.5, label=_label(k)))
    handles += [Line2D([], [], label=lab, **kw) for lab, kw in extra]
    return handles


def plot_estimator_variance(est: Mapping[str, Any], fig: plt.Figure | None = None) -> plt.Figure:
    """One row per guide: variance of one gradient estimate w.r.t. loc (a) and w.r.t. log-scale (b),
    summed over coefficients, and the sd of one ELBO estimate (c), against S on log–log axes, one
    line per estimator, with a ∝ 1/S (∝ 1/√S for the sd) reference through ``trace``.

    est : ``summary["estimators"]`` (:func:`pyro_spam.estimator_lab.estimator_variance`).
    ``quad`` (zero variance) is named in a note; estimators whose ELBO *estimate* equals
    ``trace``'s (stl and score only change the gradient) are named in (c) instead of overdrawn.
    """
    table = est["table"]
    guides = list(dict.fromkeys(r["guide"] for r in table))
    kinds = [k for k in est.get("estimators") or dict.fromkeys(r["estimator"] for r in table)
             if any(r["estimator"] == k for r in table)]
    if fig is None:
        fig = plt.figure(figsize=(16, 4.4 * len(guides) + 1.2), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(guides), 3, squeeze=False))
    panels = (("grad_var_loc", "Var of ∂ELBO/∂loc (sum over coefficients)", 1.0),
              ("grad_var_log_scale", "Var of ∂ELBO/∂log-scale (sum over coefficients)", 1.0),
              ("elbo_sd", "sd of one ELBO estimate (nats)", 0.5))
    for gi, gname in enumerate(guides):
        rows = [r for r in table if r["guide"] == gname]
        by = {(r["estimator"], r["S"]): r for r in rows}
        s_all = np.array(sorted({r["S"] for r in rows}), dtype=float)
        same_as_trace = [k for k in kinds if k != "trace" and all(
            (k, s) in by and ("trace", s) in by and np.isclose(by[(k, s)]["elbo_sd"], by[("trace", s)]["elbo_sd"], rtol=1e-4)
            for s in s_all)]
        for ci, (key, ylab, power) in enumerate(panels):
            ax = axes[gi, ci]
            zero = []
            for k in kinds:
                rr = sorted((r for r in rows if r["estimator"] == k), key=lambda r: r["S"])
                vals = [r[key] if r[key] is not None else np.nan for r in rr]
                if rr and all(v == 0 for v in vals):
                    zero.append(k)
                    continue
                if ci == 2 and k in same_as_trace:
                    continue
                _line(ax, k, [r["S"] for r in rr], vals)
            tr = by.get(("trace", int(s_all[0])))
            if tr:
                _ref_line(ax, s_all, float(tr[key]), power, "∝ 1/S" if power == 1 else "∝ 1/√S")
            _log_axes(ax, s_all)
            ax.set_ylabel(ylab)
            what = ("gradient w.r.t. loc", "gradient w.r.t. log-scale", "ELBO estimate")[ci]
            ax.set_title(f"({'abc'[ci]}{gi + 1}) {what}, {GUIDE_TITLES.get(gname, gname)}", fontsize=10)
            notes = [f"{k}: 0 (exact, not drawn)" for k in zero]
            if ci == 2 and same_as_trace:
                notes.append("same ELBO estimate as trace:\n" + ", ".join(same_as_trace))
            if notes:
                _note(ax, "\n".join(notes))
    extra = [("∝ 1/S (∝ 1/√S for the sd), through trace", {"color": "0.55", "ls": ":", "lw": 1.0})]
    fig.legend(handles=_legend_handles([k for k in kinds if k != "quad"], extra), loc="outside lower center", ncol=4,
               fontsize=8.5, frameon=False)
    fig.suptitle(f"Estimator noise against the number of particles S ({est.get('reps', '?')} replicates per point; "
                 "rqmc at powers of two only)", fontsize=11)
    return fig


def _resolved(row: Mapping[str, Any], what: str, reps: int) -> float:
    """iwae's subsampling part, or NaN when it is within 2 standard errors of 0: it is estimated as
    Var((g1 + g2)/2) − MC/2, whose SE is about (sub + MC/2)·√(2/(R − 1)), so a large Monte Carlo
    part leaves it unresolved. (The unbiased estimators' part is exact given the batches.)"""
    sub, mc = float(row[f"subsampling_{what}"]), float(row[f"mc_{what}"])
    se = (sub + mc / 2) * np.sqrt(2 / max(reps - 1, 1))
    return sub if sub > 2 * se else float("nan")


def plot_minibatch_split(split: Mapping[str, Any], fig: plt.Figure | None = None) -> plt.Figure:
    """The gradient variance under mini-batches split into its Monte Carlo part (solid, per estimator) and
    its subsampling part (black dashed: the same for every unbiased estimator; iwae's own thin dashed line
    where resolved, see :func:`_resolved`), against S, for loc
    (a) and log-scale (b); (c) the subsampling share of the loc-gradient variance.

    split : ``summary["estimators"]["minibatch_split"]`` (:func:`pyro_spam.estimator_lab.minibatch_split`).
    Only the Monte Carlo part falls with S or with a better estimator; when the subsampling part
    dominates, variance reduction stops paying for loc.
    """
    rows = split["rows"]
    kinds = list(dict.fromkeys(r["estimator"] for r in rows))
    s_all = np.array(sorted({r["S"] for r in rows}), dtype=float)
    if fig is None:
        fig = plt.figure(figsize=(16, 5.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ai, what in enumerate(("loc", "log_scale")):
        ax = axes[ai]
        zero = []
        for k in kinds:
            rr = sorted((r for r in rows if r["estimator"] == k), key=lambda r: r["S"])
            mc = [r[f"mc_{what}"] for r in rr]
            if all(v == 0 for v in mc):
                zero.append(k)
            else:
                _line(ax, k, [r["S"] for r in rr], mc)
            if k == "iwae":
                _line(ax, k, [r["S"] for r in rr], [_resolved(r, what, split["reps"]) for r in rr], ls="--", lw=1.0, ms=3.5,
                      alpha=0.55, mfc=estimator_style(k)[0], zorder=1)
        # every unbiased estimator has the same subsampling part (the exact batch gradients' variance): one black line
        ref = sorted((r for r in rows if r["estimator"] not in ("iwae",)), key=lambda r: r["S"])
        ref = list({r["S"]: r for r in ref}.values())
        if ref:
            ax.plot([r["S"] for r in ref], [r[f"subsampling_{what}"] for r in ref], color="black", ls="--", lw=1.8, zorder=4)
            ax.annotate("subsampling part\n(every unbiased estimator)", (ref[-1]["S"], ref[-1][f"subsampling_{what}"]), xytext=(-4, 6),
                        textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.1")
        _log_axes(ax, s_all)
        name = "loc" if what == "loc" else "log-scale"
        ax.set_ylabel(f"Var of ∂ELBO/∂{name} (sum over coefficients)")
        ax.set_title(f"({'ab'[ai]}) ∂ELBO/∂{name}: Monte Carlo (solid), subsampling (dashed)", fontsize=10)
        if zero:
            _note(ax, "\n".join(f"{k}: Monte Carlo part 0\n(exact; dashed only)" for k in zero))
    ax = axes[2]
    for k in kinds:
        rr = sorted((r for r in rows if r["estimator"] == k), key=lambda r: r["S"])
        col, ls, mk = estimator_style(k)
        share = [r["subsampling_share_loc"] if r["subsampling_share_loc"] is not None else np.nan for r in rr]
        ax.plot([r["S"] for r in rr], share, color=col, ls=ls, marker=mk, lw=2.4 if k in _BIG else 1.4,
                ms=9 if k in _BIG else 5, mfc="none" if k in _BIG else col, mew=1.4)
    ax.set_xscale("log")
    ax.set_xticks(list(s_all), [str(int(v)) for v in s_all])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(-0.02, 1.08)
    ax.axhline(1.0, color="0.4", lw=0.8)
    ax.set_xlabel("particles S (log scale)")
    ax.set_ylabel("subsampling ÷ (Monte Carlo + subsampling)")
    ax.set_title("(c) share of the loc-gradient variance due to subsampling", fontsize=10)
    ax.grid(alpha=0.3)
    tr = [r for r in rows if r["estimator"] == "trace"]
    if tr:
        lo, hi = min(r["subsampling_share_loc"] for r in tr), max(r["subsampling_share_loc"] for r in tr)
        _note(ax, f"trace: {100 * lo:.0f}–{100 * hi:.0f} % from subsampling:\na better Monte Carlo estimator\n"
                  "cannot remove it", loc="center right")
    extra = [("Monte Carlo part E_batch Var(g | batch)", {"color": "0.3", "ls": "-", "lw": 1.4}),
             ("subsampling part Var_batch E(g | batch) (iwae: its own, where resolved)", {"color": "black", "ls": "--", "lw": 1.6})]
    fig.legend(handles=_legend_handles(kinds, extra), loc="outside lower center", ncol=3, fontsize=8.5, frameon=False)
    fig.suptitle(f"Mini-batches of B = {split['batch_size']} of N = {split['n']} messages: where the gradient noise comes "
                 f"from ({split['reps']} replicates per point)", fontsize=11)
    return fig


def _running_mean(e: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, e.size))
    return np.convolve(e, np.ones(k) / k, mode="valid")


def plot_training_runs(curves: Mapping[str, Mapping[str, Any]], fig: plt.Figure | None = None, smooth: int = 20,
                       reference_elbo: float | None = None) -> plt.Figure:
    """One training run per estimator: the ELBO estimate (running mean over ``smooth`` steps)
    against the step (a) and the wall-clock time (b), and the time each run took (c): hatched bars
    ran out of budget (a lower bound on the time to a converged fit), the text says whether the run
    reached the exact optimum.

    curves : estimator → {``elbo`` (steps,), ``seconds``, ``steps``, ``stop_reason``, ``reached``,
    ``dist_loc_sd``, ...} (:func:`pyro_spam.estimator_lab.training_runs`). ``reference_elbo``: the
    exact ELBO at the optimum, drawn as a line. iwae's curve is its own bound, above the ELBO.
    """
    if fig is None:
        fig = plt.figure(figsize=(17, 5.4), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.1, 1.0]})
    tails = []
    kinds = [k for k, c in curves.items() if np.asarray(c["elbo"]).size]
    smoothed = {k: _running_mean(np.asarray(curves[k]["elbo"], dtype=float), smooth) for k in kinds}
    noise = {k: float(np.std(np.diff(sm[sm.size // 2:]))) if sm.size > 3 else 0.0 for k, sm in smoothed.items()}
    quiet = float(np.median(list(noise.values()))) if noise else 0.0
    for k in kinds:
        c, sm = curves[k], smoothed[k]
        n = np.asarray(c["elbo"]).size
        steps = np.arange(n - sm.size + 1, n + 1)
        t = steps * (float(c["seconds"]) / n)
        col, ls, _ = estimator_style(k)
        # the noisiest curves go to the back, faded, so they do not hide the others
        noisy = noise[k] > 3 * quiet
        kw = {"color": col, "ls": ls, "lw": 2.4 if k in _BIG else 1.0 if noisy else 1.4, "alpha": 0.5 if noisy else 1.0,
              "zorder": 1 if noisy else 3}
        axes[0].plot(steps, sm, label=f"{k} (its own bound)" if k == "iwae" else k, **kw)
        axes[1].plot(t, sm, **kw)
        tails.append(sm[sm.size // 4:])
    if tails:
        v = np.concatenate(tails)
        lo, hi = np.percentile(v, [5, 100])
        if reference_elbo is not None:
            lo, hi = min(lo, reference_elbo), max(hi, reference_elbo)
        pad = 0.12 * (hi - lo + 1)
        for ax in axes[:2]:
            ax.set_ylim(lo - pad, hi + pad)
    for ax, xlab, title in ((axes[0], "optimiser step", "(a) ELBO estimate versus step"),
                            (axes[1], "wall-clock seconds (each run's time spread evenly over its steps)",
                             "(b) ELBO estimate versus wall-clock time")):
        if reference_elbo is not None:
            ax.axhline(reference_elbo, color="0.3", lw=1.0, ls=":", label="exact ELBO at the optimum" if ax is axes[0] else None)
        ax.set_xlabel(xlab)
        ax.set_ylabel(f"training ELBO estimate (nats, running mean of {smooth})")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax = axes[2]
    ypos = np.arange(len(kinds))[::-1]
    secs = [float(curves[k]["seconds"]) for k in kinds]
    for y, k, sec in zip(ypos, kinds, secs, strict=True):
        c = curves[k]
        col = estimator_style(k)[0]
        budget = c.get("stop_reason") != "converged"
        ax.barh(y, sec, color=col, alpha=0.35 if budget else 0.85, hatch="///" if budget else None, edgecolor=col, height=0.65)
        reached = c.get("reached")
        mark = "✓ optimum" if reached else "✗ off the optimum" if reached is not None else ""
        dist = c.get("dist_loc_sd")
        dist_txt = f" ({dist:.2g} sd)" if dist is not None and np.isfinite(dist) and not reached else ""
        ax.text(sec, y, f"  {c.get('steps')} steps, {c.get('stop_reason')}, {mark}{dist_txt}", va="center", fontsize=8.5)
    ax.set_yticks(ypos, kinds)
    ax.set_xlim(0, max(secs + [1e-9]) * 2.0)
    ax.set_xlabel("seconds to the end of the run")
    ax.set_title("(c) time to a converged fit", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    handles = [*axes[0].get_legend_handles_labels()[0],
               Patch(fc="0.5", alpha=0.85, label="(c) converged: stop rule met"),
               Patch(fc="0.5", alpha=0.35, hatch="///", label="(c) budget: max steps (time is a lower bound)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8.5, frameon=False)
    return fig
