"""The linear-response correction of a run's mean-field fit (:mod:`pyro_spam.linear_response`) and its
diagnostics, for ``summary["diagnostics"]["linear_response"]``.

The mean-field fit is first polished to the exact optimum of its ELBO (L-BFGS on the quadrature
ELBO from the fit's own guide: a few iterations), because the linear-response formula holds at
the optimum; then the LRVB covariance, its k̂ (median and range over repeated draws), PSIS-LOO
corrected for the approximation and naive, and the held-out lppd of its draws.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..diagnostics.nuts import strongest_correlation
from ..diagnostics.psis import khat_repeats, log_prior, log_q, vi_corrected_loo
from ..evaluate import lppd_pointwise
from ..linear_response import lr_covariance
from ..posterior import loglik_matrix, loglik_sum
from ..training.engines import fit, torch_threads
from ..types import ElboHistory, FitResult, TrainState

__all__ = ["linear_response_section", "lr_draws"]


def lr_draws(loc: np.ndarray, cov: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """``n_draws`` draws of N(loc, cov), shape (n_draws, K+1)."""
    eps = np.random.default_rng([seed, 21]).standard_normal((n_draws, np.asarray(loc).size))
    return np.asarray(loc) + eps @ np.linalg.cholesky(cov).T


def linear_response_section(fr: FitResult, kind: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                            y_test: np.ndarray, coef_names: Sequence[str], *, prior_scale: float, n_draws: int,
                            seed: int) -> dict[str, Any]:
    """LRVB covariance of the mean-field fit ``fr`` (the fit ``kind`` of a run) and its diagnostics."""
    t0 = time.perf_counter()
    e = np.empty(0)
    warm = TrainState(loc=fr.loc, scale=fr.scale, history=ElboHistory(e, e, e, e), lr=1.0, decays_done=0)
    polish = fit(x_train, y_train, TrainConfig(optimizer="lbfgs", prior_scale=prior_scale), resume=warm)
    with torch_threads(1):
        lr = lr_covariance(x_train, y_train, polish.loc, polish.scale, prior_scale)
    t_cov = time.perf_counter() - t0  # what the correction costs; the rest is its diagnostics
    w = lr_draws(lr.loc, lr.cov, n_draws, seed)
    # the draws × n_train matrix first and alone: the run's memory peaks here otherwise
    ll = loglik_matrix(w, x_train, y_train)
    log_ratio = ll.sum(axis=1) + log_prior(w, prior_scale) - log_q(w, lr.loc, lr.scale, lr.cov)
    loo_corrected, loo_naive = vi_corrected_loo(ll, log_ratio), vi_corrected_loo(ll, np.zeros(ll.shape[0]))
    del ll
    lppd_test = float(lppd_pointwise(loglik_matrix(w, x_test, y_test)).mean())
    reps = khat_repeats(lambda v: loglik_sum(v, x_train, y_train), lr.loc, lr.scale, cov=lr.cov,
                        prior_scale=prior_scale, n_draws=n_draws, seed=seed)
    return {
        "fitted_from": kind,
        "optimizer": "lbfgs",
        "polish": {"stop_reason": polish.stop_reason, "iterations": polish.steps,
                   "grad_max": polish.extra["convergence"]["grad_max"],
                   "max_loc_shift_in_sd": float(np.max(np.abs(polish.loc - fr.loc) / polish.scale))},
        "coef_names": list(coef_names),
        "loc": lr.loc, "scale": lr.scale, "cov": lr.cov,
        "meanfield_scale": polish.scale,
        "strongest_correlation": strongest_correlation(w, coef_names),
        "khat_median": reps["median"], "khat_range": [reps["min"], reps["max"]], "khat_repeats": reps,
        "loo_corrected": loo_corrected,
        "loo_naive": loo_naive,
        "lppd_test_per_message": lppd_test,
        "n_draws": int(n_draws),
        "seconds_covariance": t_cov,
        "seconds": time.perf_counter() - t0,
    }
