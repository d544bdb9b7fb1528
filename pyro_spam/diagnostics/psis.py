"""How good is the mean-field approximation? PSIS k̂ of q and PSIS-LOO (maths only, no run-directory I/O).

* **k̂ of q** (Yao et al. 2018, "Yes, but did it work?"): importance ratios
  ``log p(w, y) − log q(w)`` over the guide's draws, Pareto-smoothed with ``az.psislw``. The
  fitted shape k̂ says how heavy the ratios' tail is: < 0.5 good, 0.5–0.7 usable, > 0.7 the
  approximation cannot be trusted (nor corrected by reweighting). k̂ is itself noisy (about
  ±0.2 at 2000 draws for a true k near 0.8); with NUTS draws, :func:`gaussian_khat` gives the
  value a Gaussian posterior of NUTS's covariance implies, as a check. We use ``az.psislw`` rather
  than Pyro's ``psis_diagnostic`` because the run already holds every draw's full-data
  log-likelihood (no model re-execution), because it returns the smoothed weights needed for
  the reweighted means as well as k̂, and because it is the same estimator ``az.loo`` uses, so
  the two k̂ readings are comparable; it also takes plain arrays, which lets the tests feed it a
  conjugate toy whose answer is known.
* **PSIS-LOO** (``az.loo``) on the variational draws, with ArviZ's Pareto-k warnings captured
  and reported instead of printed.

The NUTS reference is in :mod:`pyro_spam.diagnostics.nuts`; writing the results into a run
directory (``pyro-spam run`` and ``pyro-spam diagnose``) is :mod:`pyro_spam.pipeline.diagnose`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from ..inference_data import az

KHAT_GOOD = 0.5
KHAT_OK = 0.7
# Log ratios closer than this (nats) are constant: q is the posterior up to its normaliser and the
# Pareto fit is undefined (ArviZ returns k̂ = inf for an exactly flat tail).
CONSTANT_RATIO_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# PSIS k̂ of the variational approximation
# --------------------------------------------------------------------------------------------


def khat_reading(khat: float) -> str:
    """The usual reading of a Pareto k̂: ``"good"``, ``"usable"`` or ``"unreliable"``."""
    if not khat < KHAT_OK:  # NaN reads as unreliable
        return "unreliable"
    return "good" if khat < KHAT_GOOD else "usable"


def pareto_khat(log_p: np.ndarray, log_q: np.ndarray) -> tuple[float, np.ndarray]:
    """Pareto k̂ of the importance ratios p/q and the smoothed, normalised log weights.

    log_p : ndarray of shape (n_draws,)
        Unnormalised log target at each draw (e.g. ``log p(w, y)``).
    log_q : ndarray of shape (n_draws,)
        Log density of the proposal at the same draws (e.g. ``log q(w)``).

    Returns ``(khat, log_weights)`` with ``logsumexp(log_weights) == 0``. When the ratios are
    constant (q equals the target up to its normaliser) k̂ is ``-inf`` and the weights uniform.
    """
    log_ratio = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    if log_ratio.ndim != 1 or log_ratio.size < 2:
        raise ValueError(f"need a 1-D array of at least 2 log ratios, got shape {log_ratio.shape}")
    if not np.all(np.isfinite(log_ratio)):
        raise ValueError("log ratios must be finite")
    if np.ptp(log_ratio) <= CONSTANT_RATIO_TOL * max(1.0, float(np.max(np.abs(log_ratio)))):
        return float("-inf"), np.full(log_ratio.size, -np.log(log_ratio.size))
    log_weights, khat = az.psislw(log_ratio, reff=1.0)
    return float(khat), np.asarray(log_weights)


def log_prior(w: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """log N(w; 0, prior_scale² I) per draw, shape (n_draws,)."""
    return norm.logpdf(w, 0.0, prior_scale).sum(axis=-1)


def log_q(w: np.ndarray, loc: np.ndarray, scale: np.ndarray, cov: np.ndarray | None = None) -> np.ndarray:
    """log N(w; loc, diag(scale²)) per draw, shape (n_draws,); with ``cov``, log N(w; loc, cov)."""
    if cov is not None:
        return np.atleast_1d(multivariate_normal(mean=loc, cov=cov).logpdf(w))
    return norm.logpdf(w, loc, scale).sum(axis=-1)


@dataclass(frozen=True)
class KhatResult:
    """PSIS diagnostic of q as an importance-sampling proposal for the posterior.

    khat : float
        Pareto shape of the ratio tail (``-inf``: constant ratios).
    reading : str
        ``"good"`` (k̂ < 0.5), ``"usable"`` (< 0.7) or ``"unreliable"``.
    log_weights : ndarray of shape (n_draws,)
        Pareto-smoothed normalised log importance weights.
    ess : float
        Importance-sampling effective sample size ``1 / Σ w²`` of the smoothed weights.
    mean_q, sd_q : ndarray of shape (K+1,)
        Moments of the draws under q (unweighted).
    mean_is, sd_is : ndarray of shape (K+1,) or None
        Importance-reweighted moments (only when k̂ < 0.7: beyond it the estimate is not trusted).
    """

    khat: float
    reading: str
    log_weights: np.ndarray
    ess: float
    mean_q: np.ndarray
    sd_q: np.ndarray
    mean_is: np.ndarray | None
    sd_is: np.ndarray | None

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready numbers (no weights)."""
        out: dict[str, Any] = {"khat": self.khat, "reading": self.reading, "ess": self.ess,
                               "n_draws": int(self.log_weights.size)}
        if self.mean_is is not None:
            out["reweighted"] = [
                {"name": n, "mean_q": float(a), "mean_is": float(b), "sd_q": float(c), "sd_is": float(d)}
                for n, a, b, c, d in zip(names, self.mean_q, self.mean_is, self.sd_q, self.sd_is, strict=True)
            ]
        else:
            out["reweighted"] = None
        return out


def vi_khat(w: np.ndarray, loglik: np.ndarray, loc: np.ndarray, scale: np.ndarray,
            prior_scale: float = 1.0, cov: np.ndarray | None = None) -> KhatResult:
    """k̂ of q(w) = N(loc, diag(scale²)), or N(loc, cov) when ``cov`` is given, from its draws ``w`` (n_draws, K+1).

    loglik : ndarray of shape (n_draws, n) or (n_draws,)
        Pointwise (or already summed) training log-likelihood at each draw.
    """
    w = np.asarray(w, dtype=np.float64)
    ll = np.asarray(loglik, dtype=np.float64)
    ll_sum = ll.sum(axis=1) if ll.ndim == 2 else ll
    khat, lw = pareto_khat(ll_sum + log_prior(w, prior_scale), log_q(w, loc, scale, cov))
    wt = np.exp(lw)
    mean_q, sd_q = w.mean(axis=0), w.std(axis=0, ddof=1)
    mean_is = sd_is = None
    if khat < KHAT_OK:
        mean_is = wt @ w
        sd_is = np.sqrt(np.maximum(wt @ (w - mean_is) ** 2, 0.0))
    return KhatResult(khat=khat, reading=khat_reading(khat), log_weights=lw, ess=float(1.0 / np.sum(wt**2)),
                      mean_q=mean_q, sd_q=sd_q, mean_is=mean_is, sd_is=sd_is)


# --------------------------------------------------------------------------------------------
# PSIS-LOO
# --------------------------------------------------------------------------------------------


def loo_summary(idata: az.InferenceData) -> dict[str, Any]:
    """``az.loo`` of an InferenceData with a ``log_likelihood`` group, as JSON-ready numbers.

    ArviZ's warnings (Pareto k above its threshold, too few draws) are captured and returned
    in ``warning_messages``; ``warning`` is ArviZ's own flag.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k)
    good_k = float(getattr(res, "good_k", KHAT_OK))
    n = int(res.n_data_points)
    return {
        "elpd": float(res.elpd_loo),
        "se": float(res.se),
        "p_loo": float(res.p_loo),
        "elpd_per_message": float(res.elpd_loo) / n,
        "warning": bool(res.warning),
        "warning_messages": sorted({str(w.message).split(". ")[0] for w in caught}),
        "n_obs": n,
        "n_draws": int(res.n_samples),
        "good_k": good_k,
        "k_max": float(np.max(k)),
        "pareto_k_counts": {
            f"k<={good_k:.2f}": int(np.sum(k <= good_k)),
            f"{good_k:.2f}<k<=1": int(np.sum((k > good_k) & (k <= 1))),
            "k>1": int(np.sum(k > 1)),
        },
    }


def gaussian_khat(cov_p: np.ndarray, scale_q: np.ndarray) -> float:
    """k of the ratios p/q when p = N(m, cov_p) and q = N(m, diag(scale_q²)) exactly: ``1 − λ_min``.

    ``λ_min`` is the smallest eigenvalue of ``cov_p⁻¹ diag(scale_q²)``: along that direction q's sd
    is ``√λ_min`` times p's, and the log ratio under q grows like ``(1 − λ_min) χ²/2``, a Pareto
    tail with shape ``1 − λ_min``. A value ≤ 0 means bounded ratios. With a NUTS covariance this
    predicts what PSIS should find if the posterior were Gaussian: a check on a noisy k̂.
    """
    lam = np.linalg.eigvals(np.linalg.solve(np.asarray(cov_p, dtype=np.float64), np.diag(np.asarray(scale_q) ** 2)))
    return float(1.0 - np.min(lam.real))



# --------------------------------------------------------------------------------------------
# k̂ with its uncertainty, and PSIS-LOO corrected for the approximation
# --------------------------------------------------------------------------------------------

KHAT_REPEATS = 10
"""Independent sets of draws behind a reported k̂: one k̂ from 1000 draws varies by about ±0.1."""


def khat_repeats(loglik_fn: Any, loc: np.ndarray, scale: np.ndarray, *, cov: np.ndarray | None = None,
                 prior_scale: float = 1.0, n_draws: int = 1000, repeats: int = KHAT_REPEATS, seed: int = 0) -> dict[str, Any]:
    """k̂ of a Gaussian approximation over ``repeats`` independent sets of ``n_draws`` draws.

    loglik_fn : callable
        ``w (n_draws, K+1) -> training log-likelihood per draw (n_draws,)``.
    cov : ndarray of shape (K+1, K+1) or None
        Full covariance of q (None: diagonal ``scale²``).

    Returns ``{"median", "min", "max", "values", "n_draws", "repeats", "reading"}``; the reading is
    that of the median. The spread is the Monte Carlo uncertainty of a single k̂.
    """
    loc = np.asarray(loc, dtype=np.float64)
    chol = np.linalg.cholesky(cov) if cov is not None else None
    vals = []
    for r in range(repeats):
        eps = np.random.default_rng([seed, 11, r]).standard_normal((n_draws, loc.size))
        w = loc + (eps @ chol.T if chol is not None else eps * scale)
        k, _ = pareto_khat(np.asarray(loglik_fn(w)) + log_prior(w, prior_scale), log_q(w, loc, scale, cov))
        vals.append(float(k))
    med = float(np.median(vals))
    return {"median": med, "min": float(np.min(vals)), "max": float(np.max(vals)), "values": vals,
            "n_draws": int(n_draws), "repeats": int(repeats), "reading": khat_reading(med)}


_PSIS_CHUNK = 256
"""Rows smoothed at once by :func:`psis_rows` (its largest temporary is rows × ~40 × tail floats)."""


def psis_rows(log_ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalised log weights and k̂ for each row of ``log_ratios`` (n, n_draws).

    ArviZ's ``az.psislw`` (relative efficiency 1) computed for all rows at once: the same tail
    cut, the same empirical-Bayes generalised-Pareto fit (Zhang & Stephens 2009, as ArviZ's
    ``_gpdfit``) and the same smoothing, vectorised over rows, where ArviZ loops over them in
    Python (4,459 rows × 1000 draws: ~0.1 s instead of ~1.7 s). Rows whose tail is not exactly
    the expected number of draws (ties at the cut) or whose fit is degenerate go through ArviZ
    itself. ``tests/test_calibration.py`` checks the agreement with ``az.psislw`` to 1e-10.
    """
    lw = np.array(log_ratios, dtype=np.float64, copy=True)
    if lw.ndim != 2:
        raise ValueError(f"expected log ratios of shape (n, n_draws), got {lw.shape}")
    n, n_draws = lw.shape
    tail = int(np.ceil(min(n_draws / 5.0, 3 * n_draws**0.5)))
    cutoffmin = np.log(np.finfo(float).tiny)
    khat = np.full(n, np.inf)
    m_est = 30 + int(tail**0.5)
    base = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
    probs = np.arange(0.5, tail) / tail
    for lo in range(0, n, _PSIS_CHUNK):
        x = lw[lo : lo + _PSIS_CHUNK]
        x -= x.max(axis=1, keepdims=True)
        order = np.argsort(x, axis=1)
        xs = np.take_along_axis(x, order, axis=1)
        xcut = np.maximum(xs[:, -tail - 1], cutoffmin)
        # ties at or inside the tail make the order of equal values (and so which draw gets which
        # smoothed weight) depend on the sort algorithm: those rows go to ArviZ
        regular = ((x > xcut[:, None]).sum(axis=1) == tail) & (tail > 4) & ~np.any(np.diff(xs[:, -tail - 1 :], axis=1) == 0, axis=1)
        ary = np.exp(xs[:, -tail:]) - np.exp(xcut)[:, None]  # the tail, ascending
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            b = base[None, :] / (3.0 * ary[:, int(tail / 4 + 0.5) - 1])[:, None] + (1.0 / ary[:, -1])[:, None]
            k_ary = np.log1p(-b[:, :, None] * ary[:, None, :]).mean(axis=2)
            len_scale = tail * (np.log(-(b / k_ary)) - k_ary - 1)
            weights = 1.0 / np.exp(len_scale[:, None, :] - len_scale[:, :, None]).sum(axis=2)
            weights = np.where(weights >= 10 * np.finfo(float).eps, weights, 0.0)
            weights /= weights.sum(axis=1, keepdims=True)
            b_post = (b * weights).sum(axis=1)
            k_post = np.log1p(-b_post[:, None] * ary).mean(axis=1)
            sigma = -k_post / b_post
            k_post = (tail * k_post + 10 * 0.5) / (tail + 10)
            small = np.abs(k_post) < np.finfo(float).eps
            q = np.where(small[:, None], -np.log1p(-probs)[None, :],
                         np.expm1(-k_post[:, None] * np.log1p(-probs)[None, :]) / np.where(small, 1.0, k_post)[:, None])
            smoothed = np.log(q * sigma[:, None] + np.exp(xcut)[:, None])
        fine = regular & np.isfinite(k_post) & (sigma > 0) & np.all(np.isfinite(smoothed), axis=1)
        rows = np.flatnonzero(fine)
        sub = x[rows]
        np.put_along_axis(sub, order[rows, -tail:], smoothed[rows], axis=1)
        sub[sub > 0] = 0
        x[rows] = sub
        khat[lo + rows] = k_post[rows]
        for i in np.flatnonzero(~fine):  # ties at the cut, a short tail or a failed fit: ArviZ decides
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w_i, k_i = az.psislw(x[i].copy())
            x[i], khat[lo + i] = np.asarray(w_i), float(k_i)
        x[rows] -= logsumexp(x[rows], axis=1, keepdims=True)
    return lw, khat


def vi_corrected_loo(loglik: np.ndarray, log_ratio: np.ndarray) -> dict[str, Any]:
    """PSIS-LOO from draws of an approximation q, corrected for q (Magnusson et al. 2019).

    loglik : ndarray of shape (n_draws, n)
        ``log p(y_i | w_s)`` at draws ``w_s ~ q``.
    log_ratio : ndarray of shape (n_draws,)
        ``log p(w_s, y) − log q(w_s)``: the weights that turn q's draws into posterior draws.

    The leave-one-out importance ratios are ``p(w | y_−i) / q(w) ∝ exp(log_ratio − log p(y_i | w))``;
    each column is Pareto-smoothed (``az.psislw``) and ``elpd_i = log Σ_s w̃_is p(y_i | w_s)``.
    Naive LOO on q's draws treats q as the posterior; this one does not. Its k̂ per message says
    whether the correction itself is reliable (< 0.7). ``p_loo`` is the importance-weighted lppd
    minus elpd_loo.
    """
    ll = np.asarray(loglik, dtype=np.float64)
    lr = np.asarray(log_ratio, dtype=np.float64)
    if ll.ndim != 2 or lr.shape != (ll.shape[0],):
        raise ValueError(f"expected loglik (n_draws, n) and log_ratio (n_draws,), got {ll.shape} and {lr.shape}")
    lr = lr - lr.max()
    lw, k = psis_rows((lr[:, None] - ll).T)  # one row per message: (n, n_draws)
    lw = lw.T
    lw_full, _ = psis_rows(lr[None, :])
    lw_full = lw_full[0]
    elpd_i = logsumexp(lw + ll, axis=0)
    lppd_i = logsumexp(lw_full[:, None] + ll, axis=0)
    n = ll.shape[1]
    elpd = float(elpd_i.sum())
    return {
        "elpd": elpd, "se": float(np.sqrt(n * np.var(elpd_i))), "p_loo": float(lppd_i.sum() - elpd),
        "elpd_per_message": elpd / n, "n_obs": int(n), "n_draws": int(ll.shape[0]), "k_max": float(k.max()),
        "pareto_k_counts": {f"k<={KHAT_OK:.2f}": int(np.sum(k <= KHAT_OK)), f"{KHAT_OK:.2f}<k<=1": int(np.sum((k > KHAT_OK) & (k <= 1))),
                            "k>1": int(np.sum(k > 1))},
    }
