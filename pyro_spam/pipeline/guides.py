"""The guide leaderboard of a run, for ``summary["diagnostics"]["guides"]`` and ``guides_pair.png``.

Rows (:func:`pyro_spam.diagnostics.guides.leaderboard`): every fit of the run with its covariance,
the linear-response correction of the primary fit (already in the ``linear_response`` section:
reused, not recomputed), the primary fit's draws resampled by PSIS weights, and the Laplace
approximation at the MAP; ``pyro-spam diagnose --nuts`` adds NUTS and the columns that compare with
it. What is already known is reused: each mean-field fit's k̂ repeats (``per_fit``) and draws (the
run's own, so the held-out lppd is the fit section's), the LRVB k̂ repeats and draws.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..diagnostics.guides import laplace, leaderboard, psis_resample, timed
from ..io.rundir import save_figure
from ..posterior import draw_weights, loglik_sum
from ..report.guides import GUIDES_FIGURE
from ..summary import primary_fit
from ..training.engines import fit
from ..types import FitResult
from .lrvb import lr_draws

__all__ = ["GUIDES_FIGURE", "REFERENCE_KHAT_DRAWS", "draw_guides_figure", "fit_covariances", "guides_section"]

_GUIDE_LABELS = {"meanfield": "mean-field", "fullrank": "full-rank", "lowrank": "low-rank"}

REFERENCE_KHAT_DRAWS = 16_000
"""Draws per k̂ set in the leaderboard against NUTS (``diagnose``). Sets of the run's 1000 draws can
overstate a k̂ near 0.5, and scatter it: on the default data the median of 10 sets (middle of three
draw streams) at 1000, 4000, 8000 and 16,000 draws per set is 0.52, 0.39, 0.34, 0.31 for the
linear-response Gaussian and 0.42, 0.53, 0.49, 0.42 for the full-rank optimum (streams at 16,000:
0.30–0.33 and 0.41–0.44); mean-field stays at 0.75–0.80. Ten sets of 16,000 cost ~2.4 s per
approximation here (4,459 messages), about what NUTS takes."""


def _guide(fr: FitResult) -> str:
    return str(getattr(fr, "guide", "meanfield") or "meanfield")


def fit_covariances(fits: Mapping[str, FitResult], fit_sections: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Covariance of each fit's q: its Cholesky factor when it has one, else ``summary["fits"][name]["cov"]``,
    else ``diag(scale²)`` (a mean-field guide, or a run directory written before full covariances)."""
    out = {}
    for kind, fr in fits.items():
        saved = (fit_sections or {}).get(kind, {}).get("cov")
        if getattr(fr, "scale_tril", None) is not None:
            out[kind] = np.asarray(fr.cov, dtype=np.float64)
        elif saved is not None:
            out[kind] = np.asarray(saved, dtype=np.float64)
        else:
            out[kind] = np.diag(np.asarray(fr.scale, dtype=np.float64) ** 2)
    return out


def _is_diagonal(cov: np.ndarray) -> bool:
    return bool(np.all(cov[~np.eye(cov.shape[0], dtype=bool)] == 0.0))


def guides_section(fits: Mapping[str, FitResult], vi_section: Mapping[str, Any], x_train: np.ndarray, y_train: np.ndarray,
                   x_test: np.ndarray, y_test: np.ndarray, coef_names: Sequence[str], *, prior_scale: float, n_draws: int,
                   seed: int, covs: Mapping[str, np.ndarray] | None = None, nuts_draws: np.ndarray | None = None,
                   nuts_seconds: float | None = None, khat_draws: int | None = None) -> dict[str, Any]:
    """The leaderboard of a run's approximations (``seed`` is the draw seed, :func:`~pyro_spam.summary.draw_seed`).

    ``vi_section`` is the ``diagnostics`` section so far (``per_fit`` k̂ repeats and ``linear_response``
    are reused when they were drawn ``khat_draws`` at a time); ``covs`` defaults to
    :func:`fit_covariances` of ``fits``. With ``nuts_draws`` the rows gain the NUTS columns.
    ``khat_draws`` (default ``n_draws``): draws per k̂ set (``diagnose`` passes
    :data:`REFERENCE_KHAT_DRAWS` when NUTS is the reference).
    """
    khat_draws = int(khat_draws or n_draws)
    t0 = time.perf_counter()
    covs = dict(covs) if covs is not None else fit_covariances(fits)
    per_fit = vi_section.get("per_fit") or {}

    def ll_fn(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return loglik_sum(w, x, y)

    def reuse(kind: str) -> dict[str, Any] | None:
        """The fit's k̂ repeats, valid for its own q when that is the mean-field Gaussian they were drawn from."""
        reps = (per_fit.get(kind) or {}).get("khat_repeats")
        ok = isinstance(reps, Mapping) and reps.get("n_draws") == khat_draws and _is_diagonal(covs[kind])
        return dict(reps) if ok else None

    approx: dict[str, dict[str, Any]] = {}
    for kind, fr in fits.items():
        cov = covs[kind]
        diag = _is_diagonal(cov)
        approx[f"{_GUIDE_LABELS.get(_guide(fr), _guide(fr))} VI ({kind} ELBO)"] = {
            "key": f"fit:{kind}", "kind": "fit", "loc": fr.loc, "cov": cov, "seconds": fr.seconds, "khat": reuse(kind),
            "khat_single": (per_fit.get(kind) or {}).get("khat") if diag else None,
            # the run's own draws (same seed, same generator, same Cholesky factor): the row's lppd is the fit section's
            "draws": draw_weights(fr.loc, fr.scale, n_draws, seed=seed, scale_tril=None if diag else np.linalg.cholesky(cov))}
    main = primary_fit(list(fits))
    fr_main = fits[main]
    lr = vi_section.get("linear_response")
    if isinstance(lr, Mapping) and lr.get("cov") is not None:
        loc, cov = np.asarray(lr["loc"], dtype=np.float64), np.asarray(lr["cov"], dtype=np.float64)
        reps = lr.get("khat_repeats")
        approx["linear response (LRVB)"] = {
            "key": "lrvb", "kind": "correction", "loc": loc, "cov": cov,
            "seconds": fr_main.seconds + float(lr.get("seconds_covariance", lr.get("seconds", 0.0))),
            "khat": dict(reps) if isinstance(reps, Mapping) and reps.get("n_draws") == khat_draws else None,
            "draws": lr_draws(loc, cov, n_draws, seed)}
    res, t_psis = timed(psis_resample, fr_main.loc, covs[main], x_train, y_train, n_draws, seed, prior_scale, loglik_fn=ll_fn)
    approx[f"{_GUIDE_LABELS.get(_guide(fr_main), _guide(fr_main))} + PSIS resampling"] = {
        "key": "psis", "kind": "correction", "draws": res.draws, "seconds": fr_main.seconds + t_psis,
        "khat": reuse(main), "khat_single": res.khat, "proposal": {"loc": fr_main.loc, "cov": covs[main]},
        "ess": res.ess, "reliable": res.reliable, "warning": res.warning, "n_unique": res.n_unique}
    if not any(_guide(fr) == "fullrank" for fr in fits.values()):
        # the full-covariance Gaussian's exact optimum (L-BFGS on the quadrature ELBO, ~0.2 s): what --guide fullrank fits
        ex, t_ex = timed(fit, x_train, y_train, TrainConfig(optimizer="lbfgs", guide="fullrank", prior_scale=prior_scale))
        approx["full-rank Gaussian (exact optimum)"] = {
            "key": "fullrank_exact", "kind": "fit", "loc": ex.loc, "cov": ex.cov, "seconds": t_ex,
            "draws": draw_weights(ex.loc, ex.scale, n_draws, seed=seed, scale_tril=ex.scale_tril)}
    lap, t_lap = timed(laplace, x_train, y_train, prior_scale)
    approx["Laplace at the MAP"] = {"key": "laplace", "kind": "reference", "loc": lap.loc, "cov": lap.cov, "seconds": t_lap}
    out = leaderboard(x_train, y_train, x_test, y_test, approx, nuts_draws=nuts_draws, nuts_seconds=nuts_seconds,
                      prior_scale=prior_scale, n_draws=n_draws, seed=seed, coef_names=coef_names, loglik_fn=ll_fn,
                      khat_draws=khat_draws)
    out["primary"] = main
    out["seconds"] = time.perf_counter() - t0
    return out


def draw_guides_figure(section: Mapping[str, Any], out: Path, nuts_draws: np.ndarray | None = None) -> list[str]:
    """``guides_pair.png`` in ``out`` from the leaderboard section (and NUTS's draws for the scatter)."""
    from ..plots.guides import plot_guides_pair

    fig = plot_guides_pair(section, nuts_draws)
    save_figure(fig, out / GUIDES_FIGURE)
    return [GUIDES_FIGURE]
