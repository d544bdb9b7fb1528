"""Figures of the advanced evaluation: weights vs prior, predictive uncertainty, calibration,
selective prediction, example messages, prior sensitivity and model size.

Drawing only: every function takes the numbers computed by :mod:`pyro_spam.evaluate` /
:mod:`pyro_spam.studies` (plain dicts and arrays, as stored in ``summary.json``) and ``ax=`` or
``axes=``, and returns what it drew on.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullLocator

HAM, SPAM, WRONG = "#2a9d8f", "#e76f51", "#c1121f"
VI, SKLEARN = "C0", "C1"
KIND_COLORS = {"polynomial": "C0", "linear": "C2"}


def plain_log(axis: Any) -> None:
    """Log-scale tick labels as plain numbers (0.01, 0.1, 1) and no minor ticks: easier to read,
    and much cheaper to draw than mathtext powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def _axes(axes: Any, n: int, figsize: tuple[float, float], **kw: Any) -> Sequence[plt.Axes]:
    if axes is not None:
        return axes
    # Fixed spacing instead of a layout engine: the figures are saved with a tight bounding box,
    # and constrained layout would cost another full text-layout pass per figure.
    gs = {"wspace": 0.3, **kw.pop("gridspec_kw", {})}
    _, axes = plt.subplots(1, n, figsize=figsize, gridspec_kw=gs, **kw)
    return np.atleast_1d(axes)


# ---------------------------------------------------------------- 1. weights


def plot_weight_evaluation(weights: Mapping[str, Any], axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """(a) posterior mean and credible interval per coefficient on the prior's interval,
    (b) posterior-to-prior sd ratio with the "left the prior" threshold, (c) KL per coefficient.

    weights : mapping
        Output of ``evaluate.weight_summary``.
    """
    axes = _axes(axes, 3, (13, 4.2))
    rows = weights["rows"]
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    left = np.array([r["left_prior"] for r in rows])
    colors = np.where(left, "C0", "0.6")
    ps, pct = weights["prior_scale"], int(round(100 * weights["interval"]))
    zq = (np.array([r["hi"] for r in rows]) - np.array([r["mean"] for r in rows])) / np.array([r["sd"] for r in rows])

    ax = axes[0]
    ax.axhspan(-zq[0] * ps, zq[0] * ps, color="0.9", label=f"prior N(0, {ps:g}²): {pct} % interval")
    ax.axhline(0, color="0.5", lw=0.8)
    mean = np.array([r["mean"] for r in rows])
    err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] for r in rows]).T
    ax.errorbar(x, mean, yerr=err, fmt="o", color="C0", ecolor="C0", capsize=5, label=f"posterior mean, {pct} % interval")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("coefficient (log-odds per sd of term)")
    ax.set_title("(a) Posterior against the prior")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    ratio = np.array([r["sd_ratio"] for r in rows])
    ax.bar(x, ratio, color=colors)
    ax.axhline(1.0, color="0.4", lw=1, ls=":", label="prior sd (ratio 1)")
    ax.axhline(weights["threshold"], color=WRONG, lw=1.2, ls="--", label=f"threshold {weights['threshold']:g}: left the prior below")
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_ylim(min(ratio.min() * 0.5, 0.01), 2)
    for xi, r in zip(x, ratio):
        ax.annotate(f"{r:.2g}", (xi, r), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("posterior sd / prior sd (log scale)")
    ax.set_title(f"(b) {weights['n_left']} of {len(rows)} coefficients left the prior")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    kl = np.array([r["kl"] for r in rows])
    ax.bar(x, kl, color=colors)
    for xi, k in zip(x, kl):
        ax.annotate(f"{k:.1f}", (xi, k), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("KL(q ‖ prior) per coefficient (nats)")
    ax.set_title(f"(c) Information gained: total KL {weights['kl_total']:.1f} nats")
    ax.set_ylim(0, kl.max() * 1.15 if kl.max() > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    return axes


# ---------------------------------------------------------------- 2. uncertainty


def plot_uncertainty(arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any],
                     axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """(a) p(spam) with its credible interval for every test message, sorted; (b) total entropy
    against its epistemic part per message, correct vs wrong; (c) mean entropy split into
    aleatoric and epistemic parts for correct and wrong predictions.

    arrays : mapping with ``p_mean, p_lo, p_hi, total, aleatoric, epistemic, y`` (n,)
    summary : output of ``evaluate.uncertainty_summary``
    """
    axes = _axes(axes, 3, (14, 4.3))
    p, lo, hi, y = (np.asarray(arrays[k]) for k in ("p_mean", "p_lo", "p_hi", "y"))
    wrong = (p > 0.5) != (y > 0.5)
    pct = int(round(100 * summary["interval"]))

    ax = axes[0]
    order = np.argsort(p, kind="stable")
    rank = np.arange(p.size)
    ax.fill_between(rank, lo[order], hi[order], color="C0", alpha=0.35, lw=0, label=f"{pct} % credible interval")
    ax.plot(rank, p[order], color="C0", lw=1.2, label="posterior mean p(spam)")
    spam = y[order] > 0.5
    ax.plot(rank[spam], np.full(spam.sum(), 1.04), "|", color=SPAM, ms=6, label="true spam")
    ax.plot(rank[~spam], np.full((~spam).sum(), -0.04), "|", color=HAM, ms=6, label="true ham")
    ax.axhline(0.5, color="0.4", ls="--", lw=0.8)
    ax.set_xlabel("test message (sorted by p(spam))")
    ax.set_ylabel("p(spam)")
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"(a) Predictive p(spam) of {p.size} test messages")
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1]
    tot, ep = np.asarray(arrays["total"]), np.asarray(arrays["epistemic"])
    floor = max(float(np.min(ep[ep > 0])) if (ep > 0).any() else 1e-12, 1e-12)
    ep_plot = np.maximum(ep, floor)  # rounding can make the MI a hair below zero; show it at the floor
    ax.scatter(tot[~wrong], ep_plot[~wrong], s=7, alpha=0.45, color="C0", label=f"correct ({(~wrong).sum()})")
    ax.scatter(tot[wrong], ep_plot[wrong], s=14, alpha=0.9, color=WRONG, marker="x", label=f"wrong ({wrong.sum()})")
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.axvline(np.log(2), color="0.4", ls=":", lw=0.8, label="ln 2: coin flip")
    ax.set_xlabel("total predictive entropy (nats)")
    ax.set_ylabel("epistemic part: mutual information (nats, log)")
    ax.set_title("(b) Uncertainty per message")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)

    ax = axes[2]
    groups = ["all", "correct", "wrong"]
    al = np.array([summary[g]["aleatoric_mean"] for g in groups], dtype=float)
    epm = np.array([summary[g]["epistemic_mean"] for g in groups], dtype=float)
    xs = np.arange(len(groups))
    # Side by side on a log axis: the epistemic part is ~100x smaller and would vanish in a stack.
    ax.bar(xs - 0.2, al, width=0.4, color="0.6", label="aleatoric: mean entropy per draw")
    ax.bar(xs + 0.2, np.maximum(epm, 1e-12), width=0.4, color="C3", label="epistemic: mutual information")
    for xi, a, e in zip(xs, al, epm):
        if np.isfinite(a):
            ax.annotate(f"{a:.3f}", (xi - 0.2, a), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
            share = 100 * e / (a + e) if a + e > 0 else 0.0
            ax.annotate(f"{e:.1e}\n({share:.1f} %)", (xi + 0.2, max(e, 1e-12)), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    finite = np.concatenate([al[np.isfinite(al) & (al > 0)], epm[np.isfinite(epm) & (epm > 0)]])
    if finite.size:
        ax.set_ylim(finite.min() / 4, finite.max() * 8)
    ax.set_xticks(xs, [f"{g}\n(n={summary[g]['n']})" for g in groups])
    ax.set_ylabel("mean over messages (nats, log scale)")
    ax.set_title("(c) Total entropy = aleatoric + epistemic")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return axes


# ---------------------------------------------------------------- 3. calibration


def plot_calibration(calibration: Mapping[str, Any], axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """(a) Reliability diagram of the variational posterior predictive and scikit-learn's
    logistic regression, (b) how many test messages fall in each bin.

    calibration : mapping with ``models: {vi, sklearn}`` (each ``evaluate.reliability_curve``
        output plus ``ece_null``) and ``n_bins``
    """
    axes = _axes(axes, 2, (11, 4.4), gridspec_kw={"width_ratios": [1.25, 1]})
    labels = {"vi": ("variational posterior predictive", VI, "o"), "sklearn": ("scikit-learn LogisticRegression (MAP)", SKLEARN, "s")}
    ax = axes[0]
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfect calibration")
    for name, m in calibration["models"].items():
        lab, col, mk = labels.get(name, (name, None, "o"))
        mp, fr = np.asarray(m["mean_p"], dtype=float), np.asarray(m["freq"], dtype=float)
        ok = np.isfinite(mp) & np.isfinite(fr)
        ax.plot(mp[ok], fr[ok], marker=mk, color=col, lw=1.4, ms=6,
                label=f"{lab}\nECE {m['ece']:.3f} (chance level ≤ {m['ece_null']['q95']:.3f})")
    ax.set_xlabel("mean predicted p(spam) in bin")
    ax.set_ylabel("observed spam fraction in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(f"(a) Reliability diagram ({calibration['n_bins']} equal-width bins)")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.95)
    ax.grid(alpha=0.3)

    ax = axes[1]
    first = next(iter(calibration["models"].values()))
    edges = np.asarray(first["edges"], dtype=float)
    width = np.diff(edges)
    n_models = len(calibration["models"])
    for i, (name, m) in enumerate(calibration["models"].items()):
        lab, col, _ = labels.get(name, (name, None, "o"))
        ax.bar(edges[:-1] + width * (0.1 + 0.8 * i / n_models), np.asarray(m["count"]), width=0.8 * width / n_models,
               align="edge", color=col, label=lab)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_xlabel("predicted p(spam) bin")
    ax.set_ylabel("test messages in bin (log scale)")
    ax.set_title("(b) Most messages are confidently ham")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return axes


# ---------------------------------------------------------------- 4. selective prediction


def plot_selective(selective: Mapping[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """Accuracy on the kept messages versus coverage, deferring the most uncertain first.

    selective : mapping of curve name (``total``, ``epistemic``, ``oracle``) to
        ``evaluate.selective_prediction`` output
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = {
        "total": ("defer by total predictive entropy", "C0", "-"),
        "epistemic": ("defer by epistemic part (mutual information)", "C3", "-"),
        "oracle": ("oracle: defer the errors first (upper bound)", "0.5", ":"),
    }
    full = None
    for name, cur in selective.items():
        lab, col, ls = styles.get(name, (name, None, "-"))
        cov, acc = 100 * np.asarray(cur["coverage"]), 100 * np.asarray(cur["accuracy"])
        ax.plot(cov, acc, color=col, ls=ls, lw=1.8, label=f"{lab} (area {100 * cur['area']:.2f})")
        full = cur["full_accuracy"]
    if full is not None:
        ax.axhline(100 * full, color="0.3", ls="--", lw=1, label=f"random deferral = no deferral ({100 * full:.1f} %)")
    if "total" in selective:
        a90 = selective["total"]["accuracy_at"]["0.90"]
        ax.plot([90], [100 * a90], "o", color="C0", ms=7)
        ax.annotate(f"{100 * a90:.1f} % at 90 % coverage", (90, 100 * a90), textcoords="offset points", xytext=(-10, -22),
                    ha="right", fontsize=9, color="C0")
    ax.set_xlabel("coverage: messages decided automatically (%)")
    ax.set_ylabel("accuracy on decided messages (%)")
    ax.set_xlim(0, 100)
    lo = min(100 * full if full is not None else 90, *(100 * np.min(c["accuracy"]) for c in selective.values()))
    ax.set_ylim(max(0, lo - 2), 100.5)
    ax.set_title("Selective prediction: accuracy when uncertain messages go to a human")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return ax


# ---------------------------------------------------------------- 5. examples


def _short(text: str, width: int = 60) -> str:
    one_line = " ".join(str(text).split())
    return textwrap.shorten(one_line, width=width, placeholder="…") if one_line else "(empty)"


def _example_label(row: Mapping[str, Any], width: int) -> str:
    return f"[{row['label']}] {_short(row['text'], width)}"


def _text_width_inches(texts: Sequence[str], size: float) -> float:
    """Width of the widest of ``texts`` at ``size`` points, in inches (font metrics, no drawing)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size)
    return max((text_to_path.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts), default=0.0) / 72


def plot_examples(qualitative: Mapping[str, Sequence[Mapping[str, Any]]], axes: Sequence[plt.Axes] | None = None,
                  width: int = 55) -> Sequence[plt.Axes]:
    """Predictive p(spam) and credible interval of the listed messages, text as the label.

    qualitative : mapping with ``most_uncertain`` and ``confidently_wrong`` lists of rows
        (``text, label, p_mean, p_lo, p_hi``), as from ``evaluate.advanced_evaluation``
    """
    groups = [("most_uncertain", "(a) Most uncertain test messages"),
              ("confidently_wrong", "(b) Most confidently wrong test messages")]
    label_size = 8.5
    if axes is None:
        n = max(1, max(len(qualitative.get(g, [])) for g, _ in groups))
        # Room on the left for the longest message label (measured), so the labels stay on the
        # canvas; the axes keep their 8.5 in whatever the labels' length.
        labels = [_example_label(r, width) for g, _ in groups for r in qualitative.get(g, [])]
        left = _text_width_inches(labels, label_size) + 0.3
        fig_w = left + 8.5 + 0.6
        _, axes = plt.subplots(2, 1, figsize=(fig_w, 1.2 + 0.95 * n),
                               gridspec_kw={"hspace": 0.55, "left": left / fig_w, "right": 1 - 0.6 / fig_w})
    for ax, (key, title) in zip(axes, groups):
        rows = list(qualitative.get(key, []))
        if not rows:
            ax.text(0.5, 0.5, "none (every test message classified correctly)", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ys = np.arange(len(rows))[::-1]
        for yi, r in zip(ys, rows):
            col = SPAM if r["label"] == "spam" else HAM
            ax.plot([r["p_lo"], r["p_hi"]], [yi, yi], color=col, lw=3, alpha=0.6)
            ax.plot([r["p_mean"]], [yi], "o", color=col, ms=7)
        ax.set_yticks(ys, [_example_label(r, width) for r in rows], fontsize=label_size)
        ax.axvline(0.5, color="0.4", ls="--", lw=0.8)
        ax.set_xscale("logit")
        lo = max(min(min(r["p_lo"] for r in rows), 0.01) / 2, 1e-6)
        hi = min(1 - (1 - max(max(r["p_hi"] for r in rows), 0.99)) / 2, 1 - 1e-6)
        ax.set_xlim(lo, hi)
        ticks = [t for t in (1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("p(spam), logit scale (dot: posterior mean; bar: 90 % credible interval)")
        ax.set_title(title + "  — green: true ham, red: true spam", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return axes


# ---------------------------------------------------------------- 6. prior sensitivity


def plot_prior_sensitivity(prior: Mapping[str, Any], axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """(a) Held-out lppd per message (± 1 SE) for each prior scale, (b) the weights under each.

    prior : output of ``compare.prior_sensitivity``
    """
    axes = _axes(axes, 2, (12, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    rows = prior["rows"]
    scales = np.array([r["prior_scale"] for r in rows])
    ax = axes[0]
    ax.errorbar(scales, [r["lppd"] for r in rows], yerr=[r["se"] for r in rows], fmt="o-", capsize=5, color="C0",
                label="held-out lppd ± 1 SE")
    diffs = [f"s = {r['prior_scale']:g}: {r['diff_vs_1']:+.4f} ± {r['diff_se']:.4f}" for r in rows
             if "diff_vs_1" in r and r["prior_scale"] != 1.0]
    if diffs:
        ax.text(0.03, 0.04, "lppd change vs s = 1 (paired SE):\n" + "\n".join(diffs), transform=ax.transAxes, fontsize=8,
                va="bottom", bbox={"fc": "white", "ec": "0.7", "alpha": 0.9})
    ax.set_xscale("log")
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("prior sd s of every coefficient, N(0, s²) (log scale)")
    ax.set_ylabel("held-out lppd (nats per message)")
    ax.set_title("(a) Predictive fit versus prior scale")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ymin = min(r["lppd"] - r["se"] for r in rows)
    ymax = max(r["lppd"] + r["se"] for r in rows)
    ax.set_ylim(ymin - 0.45 * (ymax - ymin + 1e-3), ymax + 0.1 * (ymax - ymin + 1e-3))

    ax = axes[1]
    names = prior.get("coef_names") or [f"w{j}" for j in range(len(rows[0]["loc"]))]
    x = np.arange(len(names))
    w = 0.8 / len(rows)
    for i, r in enumerate(rows):
        ax.errorbar(x + (i - (len(rows) - 1) / 2) * w, r["loc"], yerr=r["scale"], fmt="o", capsize=3, ms=5,
                    label=f"prior sd {r['prior_scale']:g}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("coefficient, mean ± sd (log-odds per sd of term)")
    ax.set_title("(b) Posterior weights under each prior")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return axes


# ---------------------------------------------------------------- 7. model size


def plot_model_size(size: Mapping[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """Held-out lppd per message (± 1 SE band) versus K for polynomial and linear terms.

    size : output of ``compare.model_size_sweep`` (optionally with ``run_k``)
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.6))
    ks = np.asarray(size["ks"])
    labels = {"polynomial": "polynomial terms x_j^j (the course's model)", "linear": "linear terms x_j"}
    for kind, res in size["kinds"].items():
        col = KIND_COLORS.get(kind)
        lp, se = np.asarray(res["lppd"]), np.asarray(res["se"])
        ax.plot(ks, lp, "o-", color=col, label=f"{labels.get(kind, kind)}: best K={res['best_k']}")
        ax.fill_between(ks, lp - se, lp + se, color=col, alpha=0.15, lw=0)
        b = list(ks).index(res["best_k"])
        ax.plot([ks[b]], [lp[b]], "*", color=col, ms=15, mec="k", mew=0.6)
    lo = min(min(np.asarray(r["lppd"]) - np.asarray(r["se"])) for r in size["kinds"].values())
    hi = max(max(np.asarray(r["lppd"]) + np.asarray(r["se"])) for r in size["kinds"].values())
    pad = 0.08 * (hi - lo + 1e-3)
    if size["intercept_only"] >= lo - 3 * pad:
        ax.axhline(size["intercept_only"], color="0.4", ls=":", lw=1.2, label=f"intercept only ({size['intercept_only']:.3f})")
        lo = min(lo, size["intercept_only"])
    else:  # far below the curves: say so instead of squashing them
        ax.plot([], [], " ", label=f"intercept only: {size['intercept_only']:.3f} (below the axis)")
    ax.set_ylim(lo - pad, hi + pad)
    if size.get("run_k") is not None:
        ax.axvline(size["run_k"], color="0.5", ls="--", lw=1, label=f"this run's K={size['run_k']}")
    ax.set_xticks(ks)
    ax.set_xlabel("number of PCA components K")
    ax.set_ylabel("held-out lppd (nats per message, higher is better)")
    ax.set_title("Model size: held-out predictive fit versus K\n(band: ± 1 SE across messages; differences between K are paired, far more precise)",
                 fontsize=10.5)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return ax


# ---------------------------------------------------------------- run figures


def evaluation_figures(evaluation: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, plt.Figure]:
    """The five run-time evaluation figures, keyed by file name."""
    return {
        "eval_weights.png": plot_weight_evaluation(evaluation["weights"])[0].figure,
        "eval_uncertainty.png": plot_uncertainty(arrays, evaluation["uncertainty"])[0].figure,
        "eval_calibration.png": plot_calibration(evaluation["calibration"])[0].figure,
        "eval_selective.png": plot_selective(evaluation["selective"]).figure,
        "eval_examples.png": plot_examples(evaluation["qualitative"])[0].figure,
    }
