"""ArviZ figures of a fit: forest plot (VI fits and NUTS), posterior densities with the prior, PPC.

Drawing only: the InferenceData objects (and standardised draws) are built in
:mod:`pyro_spam.inference_data` / :mod:`pyro_spam.diagnostics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az
    from arviz.labels import NoModelLabeller, NoVarLabeller, mix_labellers

# Coefficient names only: models are told apart by colour and the legend.
_CoefLabeller = mix_labellers((NoModelLabeller, NoVarLabeller))

REFERENCE_COLOR = "black"
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def _colors(labels: list[str]) -> list[str]:
    out, i = [], 0
    for label in labels:
        if label.startswith("NUTS"):
            out.append(REFERENCE_COLOR)
        else:
            out.append(_COLORS[i % len(_COLORS)])
            i += 1
    return out


def plot_forest_compare(
    models: Mapping[str, az.InferenceData],
    standardised: Mapping[str, az.InferenceData] | None = None,
    *,
    reference: str = "NUTS",
    hdi_prob: float = 0.94,
    axes: np.ndarray | None = None,
) -> np.ndarray:
    """Forest plot of every coefficient for each model, side by side (94 % HDI, IQR, mean).

    models : mapping of label to InferenceData
        Posterior ``w`` with dimension ``coef``; one colour per model.
    standardised : mapping of label to InferenceData or None
        The same draws as ``(w − mean_ref) / sd_ref``: drawn in a second panel where the
        reference sits at 0 ± 1 and a narrower or shifted approximation is obvious even for
        coefficients whose raw scale dwarfs their uncertainty.
    reference : str
        Name of the reference in the second panel's labels.
    axes : array of 1 or 2 Axes or None
    """
    labels = list(models)
    n_panels = 1 if standardised is None else 2
    n_coef = int(next(iter(models.values())).posterior["w"].sizes["coef"])
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, 1.2 + 0.75 * n_coef * max(1, len(labels)) ** 0.5),
                               sharey=True, squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    colors = _colors(labels)
    kw = dict(model_names=labels, var_names=["w"], combined=True, hdi_prob=hdi_prob, colors=colors,
              labeller=_CoefLabeller(), markersize=7, linewidth=2.5, textsize=11)
    az.plot_forest(list(models.values()), ax=axes[0], legend=False, **kw)
    axes[0].set_title(f"Coefficients: mean, IQR (thick) and {hdi_prob:.0%} HDI (thin)", fontsize=11)
    axes[0].set_xlabel("coefficient (log-odds per sd of term)")
    axes[0].axvline(0.0, color="0.6", lw=0.8, ls=":")
    if standardised is not None:
        az.plot_forest(list(standardised.values()), ax=axes[1], legend=False, **kw)
        axes[1].axvspan(-1.0, 1.0, color="0.92", zorder=0)
        axes[1].axvline(0.0, color="0.5", lw=0.8)
        axes[1].set_title(f"Same draws, centred and scaled by {reference}: (w − mean) / sd", fontsize=11)
        axes[1].set_xlabel(f"{reference} posterior sds from the {reference} mean (grey band: ±1 sd)")
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2.5, label=lab) for lab, c in zip(labels, colors)]
    fig = axes[0].figure
    fig.legend(handles=handles, loc="lower center", ncol=len(labels), fontsize=10, frameon=False)
    fig.suptitle("Posterior of each coefficient by method", fontsize=13)
    fig.subplots_adjust(bottom=0.16, top=0.9)
    return axes


def plot_posterior_prior(
    idata: az.InferenceData,
    prior_scale: float = 1.0,
    *,
    label: str = "VI",
    reference: az.InferenceData | None = None,
    hdi_prob: float = 0.94,
    axes: np.ndarray | None = None,
) -> np.ndarray:
    """Posterior density of each coefficient (mean and 94 % HDI) with the N(0, s²) prior overlaid.

    reference : InferenceData or None
        NUTS draws, drawn as a black dashed density on the same panels.
    """
    names = [str(n) for n in idata.posterior["w"].coords["coef"].values]
    if axes is None:
        ncols = 3
        nrows = int(np.ceil(len(names) / ncols))
        _, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.2 * nrows), squeeze=False)
    axes = np.asarray(axes)
    flat = axes.ravel()
    for ax in flat[len(names):]:
        ax.set_visible(False)
    az.plot_posterior(idata, var_names=["w"], hdi_prob=hdi_prob, point_estimate="mean", labeller=NoVarLabeller(),
                      ax=flat[: len(names)], textsize=9, color="tab:blue")
    for j, (ax, name) in enumerate(zip(flat, names)):
        if reference is not None:
            az.plot_kde(reference.posterior["w"].values[..., j].ravel(), ax=ax,
                        plot_kwargs={"color": REFERENCE_COLOR, "linestyle": "--", "linewidth": 1.5})
        lo, hi = ax.get_xlim()
        grid = np.linspace(lo, hi, 200)
        ax.plot(grid, norm.pdf(grid, 0.0, prior_scale), color="tab:red", lw=1.5, ls=":")
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("coefficient (log-odds per sd of term)", fontsize=8)
        ax.tick_params(labelsize=9)
    handles = [plt.Line2D([], [], color="tab:blue", lw=2, label=f"posterior, {label}"),
               plt.Line2D([], [], color="tab:red", ls=":", lw=1.5, label=f"prior N(0, {prior_scale:g}²) (flat at this zoom)")]
    if reference is not None:
        handles.insert(1, plt.Line2D([], [], color=REFERENCE_COLOR, ls="--", lw=1.5, label="posterior, NUTS"))
    fig = flat[0].figure
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"Posterior density of each coefficient ({label}: mean and {hdi_prob:.0%} HDI), prior overlaid", fontsize=12)
    fig.subplots_adjust(bottom=0.14, hspace=0.45, top=0.88)
    return axes


def plot_ppc_rate(idata: az.InferenceData, *, label: str = "VI", axes: np.ndarray | None = None) -> np.ndarray:
    """Posterior predictive check: replicated spam rate against the observed one, train and test.

    Each panel shows the distribution over draws of the spam fraction in replicated labels
    (``az.plot_bpv`` with ``t_stat="mean"``) and the observed fraction with its Bayesian p-value.
    """
    variables = [v for v in ("y", "y_test") if v in idata.posterior_predictive]
    if axes is None:
        _, axes = plt.subplots(1, len(variables), figsize=(5.5 * len(variables), 3.8), squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    for ax, var in zip(axes, variables):
        az.plot_bpv(idata, kind="t_stat", t_stat="mean", var_names=[var], ax=ax, textsize=10, color="tab:blue")
        obs = idata.observed_data[var].values
        ax.axvline(float(obs.mean()), color="black", lw=1.5, ls="--", label=f"observed rate {obs.mean():.3f}")
        ax.legend(fontsize=9)
        n = int(obs.size)
        ax.set_title(f"{'training' if var == 'y' else 'held-out'} messages (n = {n})", fontsize=11)
        ax.set_xlabel("spam rate (fraction of messages labelled spam)")
        ax.set_ylabel("density over posterior draws")
        ax.tick_params(labelsize=9)
    axes[0].figure.suptitle(f"Posterior predictive check ({label}): replicated vs observed spam rate", fontsize=12)
    axes[0].figure.subplots_adjust(top=0.82)
    return axes
