"""Numbers that judge a fit: ELBO pieces, held-out predictive scores, calibration (numpy only)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score


def kl_normal(loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """KL(N(loc, scale²) ‖ N(0, prior_scale²)) per coefficient, in nats."""
    r = (scale / prior_scale) ** 2
    return 0.5 * (r + (loc / prior_scale) ** 2 - 1.0 - np.log(r))


def elbo_estimate(loglik: np.ndarray, loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0) -> dict[str, float]:
    """ELBO = E_q[Σ_i log p(y_i|x_i,w)] − KL(q‖p) from pointwise log-likelihoods (n_draws, n).

    Returns the ELBO, its parts and the Monte Carlo standard error of the expectation.
    """
    per_draw = loglik.sum(axis=1)
    kl = float(kl_normal(loc, scale, prior_scale).sum())
    ell = float(per_draw.mean())
    return {
        "elbo": ell - kl,
        "expected_loglik": ell,
        "kl": kl,
        "mc_se": float(per_draw.std(ddof=1) / np.sqrt(per_draw.shape[0])),
    }


def lppd_pointwise(loglik: np.ndarray) -> np.ndarray:
    """log mean_s p(y_i | w_s) per message, shape (n,)."""
    return logsumexp(loglik, axis=0) - np.log(loglik.shape[0])


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins on p(spam): Σ_b (n_b/n)·|mean(y_b) − mean(p_b)|."""
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def intercept_only_lppd(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out log-likelihood per message of the constant train spam rate (the baseline to beat)."""
    p = float(np.clip(y_train.mean(), 1e-12, 1 - 1e-12))
    return float(np.mean(y_test * np.log(p) + (1 - y_test) * np.log1p(-p)))


def classification_scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy (threshold 0.5), ROC AUC, Brier score and ECE (10 bins) of predictive p(spam)."""
    return {
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else float("nan"),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(p, y),
    }
