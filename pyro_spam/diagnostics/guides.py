"""Which approximation of the posterior to trust: a leaderboard of Gaussian guides and their corrections.

Every approximation of ``p(w | y)`` the package can produce, side by side on the same numbers:

* :func:`exact_elbo_gaussian`: the ELBO of a full-covariance Gaussian ``q = N(loc, cov)`` without
  Monte Carlo noise. Each logit ``z_i = x̃_i · w`` is exactly normal under q, with mean ``x̃_i · loc``
  and variance ``x̃_iᵀ cov x̃_i``, so the expected log-likelihood is one Gauss–Hermite sum per
  message (as :mod:`pyro_spam.exact` does for the diagonal case); the KL to ``N(0, s² I)`` is closed form.
* :func:`laplace`: the MAP by Newton's method on the (strictly concave) log joint and the inverse
  negative Hessian there: the classical reference Gaussian.
* :func:`psis_resample`: importance resampling of a Gaussian's draws by Pareto-smoothed weights
  (Yao, Vehtari, Simpson & Gelman 2018): non-Gaussian draws that move toward the posterior, but only
  trustworthy when k̂ ≤ 0.7.
* :func:`leaderboard`: exact ELBO, k̂ (median and range over repeated draw sets), held-out lppd and
  wall time per approximation; with NUTS draws also sd ratios, mean shifts and 1-Wasserstein
  distances per coefficient in NUTS sd units.

numpy, scipy and ArviZ only (no torch, no Pyro): an independent reference like :mod:`pyro_spam.exact`.
Writing the leaderboard into a run directory is :mod:`pyro_spam.pipeline.guides`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit, logsumexp
from scipy.stats import wasserstein_distance

from ..exact import laplace_approximation
from .psis import KHAT_OK, KHAT_REPEATS, khat_reading, khat_repeats, log_prior, log_q, pareto_khat

__all__ = ["N_NODES", "PSIS_WARNING", "Laplace", "PsisResample", "exact_elbo_gaussian", "gaussian_kl", "laplace",
           "leaderboard", "loglik_sum", "lppd_per_message", "most_correlated", "psis_resample", "timed", "wasserstein_in_sd"]

N_NODES = 64
"""Gauss–Hermite nodes per message (as :data:`pyro_spam.exact.N_NODES`: float64 precision on the default data)."""

PSIS_WARNING = ("k̂ > 0.7: the Pareto-smoothed weights are dominated by a few draws, so the resampled draws are "
                "unreliable (their moments may be far off even though they look like posterior draws)")
"""The warning a PSIS-resampled row carries when its k̂ exceeds 0.7 (Yao et al. 2018)."""

_CHUNK_ELEMENTS = 1 << 19
"""Rows × nodes (or draws × messages) per chunk: ~4 MB per float64 temporary whatever the data size."""

LoglikSum = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``(w (S, K+1), x (n, K), y (n,)) -> Σ_i log p(y_i | x_i, w_s)`` per draw, shape (S,)."""


# --------------------------------------------------------------------------------------------
# Log-likelihood, ELBO and KL of a Gaussian q
# --------------------------------------------------------------------------------------------


def _design(x: np.ndarray) -> np.ndarray:
    """``[1, x]``: the bias column made explicit, float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.column_stack([np.ones(x.shape[0]), x])


def loglik_sum(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Σ_i log σ(±x̃_i · w_s)`` per draw, shape (S,), chunked over draws (numpy reference of
    :func:`pyro_spam.posterior.loglik_sum`)."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    a = _design(x)
    sign = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    chunk = max(1, _CHUNK_ELEMENTS // max(1, a.shape[0]))
    return np.concatenate([log_expit(sign * (w[i : i + chunk] @ a.T)).sum(axis=1) for i in range(0, w.shape[0], chunk)])


def lppd_per_message(w: np.ndarray, x: np.ndarray, y: np.ndarray, *, chunk: int = 128) -> float:
    """Log pointwise predictive density of draws ``w`` on ``(x, y)``, nats per message:
    ``mean_i log mean_s p(y_i | x_i, w_s)``; ``chunk`` messages at a time (temporaries of
    draws × chunk floats, not draws × n)."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    a, sign = _design(x), 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    out = np.empty(a.shape[0])
    for lo in range(0, a.shape[0], chunk):
        ll = log_expit(sign[lo : lo + chunk] * (w @ a[lo : lo + chunk].T))
        out[lo : lo + chunk] = logsumexp(ll, axis=0)
    return float(np.mean(out - math.log(w.shape[0])))


def gaussian_kl(loc: np.ndarray, cov: np.ndarray, prior_scale: float = 1.0) -> float:
    """KL(N(loc, cov) ‖ N(0, s² I)) in nats: ``½ [(tr cov + ‖loc‖²)/s² − d + d log s² − log det cov]``."""
    loc = np.asarray(loc, dtype=np.float64)
    chol = np.linalg.cholesky(np.asarray(cov, dtype=np.float64))
    s2 = float(prior_scale) ** 2
    logdet = 2.0 * float(np.sum(np.log(np.diag(chol))))
    return 0.5 * (float(np.trace(cov) + loc @ loc) / s2 - loc.size + loc.size * math.log(s2) - logdet)


def exact_elbo_gaussian(x: np.ndarray, y: np.ndarray, loc: np.ndarray, cov: np.ndarray, prior_scale: float = 1.0,
                        *, n_nodes: int = N_NODES) -> float:
    """The exact ELBO (nats, full-data scale) of ``q = N(loc, cov)`` with a full covariance.

    x : ndarray of shape (n, K)
        Terms (the bias column is implicit).
    y : ndarray of shape (n,)
        Labels in {0, 1}.
    loc : ndarray of shape (K+1,)
    cov : ndarray of shape (K+1, K+1)
        Symmetric positive definite (a Cholesky failure raises ``LinAlgError``).
    n_nodes : int
        Gauss–Hermite nodes per message (at least 32).

    ``E_q[log p(y_i | w)] = Σ_k ω_k log σ(±(m_i + √(2 v_i) t_k))`` with ``m_i = x̃_i · loc`` and
    ``v_i = x̃_iᵀ cov x̃_i``: exact to quadrature precision, no Monte Carlo error.
    """
    if n_nodes < 32:
        raise ValueError(f"n_nodes must be at least 32 for float64 precision, got {n_nodes}")
    a = _design(x)
    y = np.asarray(y, dtype=np.float64)
    loc = np.asarray(loc, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if y.shape != (a.shape[0],) or loc.shape != (a.shape[1],) or cov.shape != (a.shape[1], a.shape[1]):
        raise ValueError(f"expected x (n, K), y (n,), loc (K+1,), cov (K+1, K+1); got {np.shape(x)}, {y.shape}, {loc.shape}, {cov.shape}")
    t, wq = np.polynomial.hermite.hermgauss(n_nodes)
    wq = wq / math.sqrt(math.pi)
    kl = gaussian_kl(loc, cov, prior_scale)  # checks that cov is positive definite first
    chunk = max(1, _CHUNK_ELEMENTS // n_nodes)
    ll = 0.0
    for lo in range(0, a.shape[0], chunk):
        ac, yc = a[lo : lo + chunk], y[lo : lo + chunk]
        m = ac @ loc
        v = np.einsum("ij,jk,ik->i", ac, cov, ac)
        z = m[:, None] + np.sqrt(2.0 * np.maximum(v, 0.0))[:, None] * t[None, :]
        ll += float((log_expit((2.0 * yc - 1.0)[:, None] * z) @ wq).sum())
    return ll - kl


# --------------------------------------------------------------------------------------------
# Laplace approximation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Laplace:
    """The Laplace approximation ``N(loc, cov)`` at the MAP.

    loc : ndarray of shape (K+1,)
        The MAP (maximiser of the log joint).
    cov : ndarray of shape (K+1, K+1)
        Inverse of the negative Hessian of the log joint at the MAP.
    scale : ndarray of shape (K+1,)
        ``sqrt(diag(cov))``.
    log_joint : float
        ``log p(y | loc) + log p(loc)`` at the MAP (nats).
    grad_max : float
        Largest gradient component there (≈ 0).
    """

    loc: np.ndarray
    cov: np.ndarray
    scale: np.ndarray
    log_joint: float
    grad_max: float


def _log_joint(a: np.ndarray, sign: np.ndarray, w: np.ndarray, s2: float) -> float:
    """The log joint without the prior's normalising constant (what the line search compares)."""
    return float(log_expit(sign * (a @ w)).sum() - 0.5 * (w @ w) / s2)


def laplace(x: np.ndarray, y: np.ndarray, prior_scale: float = 1.0) -> Laplace:
    """The Laplace reference row: :func:`pyro_spam.exact.laplace_approximation` (MAP by damped Newton on
    the strictly concave log joint, ``cov = (−∇² log p)⁻¹`` there), with the log joint and gradient at the MAP."""
    w, cov = laplace_approximation(x, y, prior_scale)
    a = _design(x)
    sign = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    s2 = float(prior_scale) ** 2
    g = a.T @ (0.5 * (sign + 1.0) - expit(a @ w)) - w / s2
    f = _log_joint(a, sign, w, s2)
    return Laplace(loc=w, cov=cov, scale=np.sqrt(np.diag(cov)), log_joint=f - 0.5 * a.shape[1] * math.log(2.0 * math.pi * s2),
                   grad_max=float(np.max(np.abs(g))))


def _sym_inv(h: np.ndarray) -> np.ndarray:
    c = np.linalg.inv(h)
    return 0.5 * (c + c.T)


# --------------------------------------------------------------------------------------------
# PSIS importance resampling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsisResample:
    """Draws of a Gaussian proposal resampled by their Pareto-smoothed importance weights.

    draws : ndarray of shape (n_draws, K+1)
        The resampled draws (repeats included: only about ``ess`` of them are distinct information).
    khat : float
        Pareto k̂ of the proposal's importance ratios for these draws.
    ess : float
        Effective sample size ``1 / Σ w̃²`` of the smoothed, normalised weights.
    reliable : bool
        ``khat ≤ 0.7``; beyond it the resampled draws are not to be trusted.
    warning : str or None
        :data:`PSIS_WARNING` when not reliable.
    n_unique : int
        Distinct proposal draws among the resampled ones.
    """

    draws: np.ndarray
    khat: float
    ess: float
    reliable: bool
    warning: str | None
    n_unique: int


def psis_resample(loc: np.ndarray, cov: np.ndarray, x: np.ndarray, y: np.ndarray, n_draws: int = 1000, seed: int = 0,
                  prior_scale: float = 1.0, *, loglik_fn: LoglikSum | None = None) -> PsisResample:
    """Importance resampling of ``n_draws`` draws of ``N(loc, cov)`` toward ``p(w | y)`` with PSIS weights.

    The log ratios ``log p(y | w) + log p(w) − log q(w)`` are Pareto-smoothed (``az.psislw`` via
    :func:`~pyro_spam.diagnostics.psis.pareto_khat`), then ``n_draws`` draws are taken by systematic
    resampling (one uniform, ``n_draws`` evenly spaced points on the weights' cumulative sum: lower
    variance than multinomial). ``loglik_fn`` (default :func:`loglik_sum`) computes the
    training log-likelihood per draw.
    """
    loc = np.asarray(loc, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    rng = np.random.default_rng([int(seed), 41])
    w = loc + rng.standard_normal((n_draws, loc.size)) @ np.linalg.cholesky(cov).T
    ll = (loglik_fn or loglik_sum)(w, x, y)
    khat, lw = pareto_khat(np.asarray(ll) + log_prior(w, prior_scale), log_q(w, loc, np.sqrt(np.diag(cov)), cov))
    wt = np.exp(lw - logsumexp(lw))
    cum = np.cumsum(wt)
    cum[-1] = 1.0
    idx = np.searchsorted(cum, (rng.random() + np.arange(n_draws)) / n_draws, side="right")
    idx = np.minimum(idx, n_draws - 1)
    reliable = bool(khat <= KHAT_OK)
    return PsisResample(draws=w[idx], khat=float(khat), ess=float(1.0 / np.sum(wt**2)), reliable=reliable,
                        warning=None if reliable else PSIS_WARNING, n_unique=int(np.unique(idx).size))


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def wasserstein_in_sd(draws: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """1-Wasserstein distance of each marginal of ``draws`` (S, d) to that of ``ref`` (R, d), in units
    of ``ref``'s sd per coefficient (``scipy.stats.wasserstein_distance`` on the samples)."""
    draws, ref = np.asarray(draws, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    sd = ref.std(axis=0, ddof=1)
    return np.array([wasserstein_distance(draws[:, j], ref[:, j]) / sd[j] for j in range(ref.shape[1])])


def most_correlated(cov: np.ndarray) -> tuple[int, int, float]:
    """The pair ``(i, j)``, ``i < j``, with the largest |correlation| under ``cov`` and that correlation."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape[0] < 2:
        raise ValueError("a pair needs at least two coefficients")
    sd = np.sqrt(np.diag(cov))
    iu, ju = np.triu_indices(cov.shape[0], 1)
    rho = cov[iu, ju] / (sd[iu] * sd[ju])
    k = int(np.argmax(np.abs(rho)))  # the first pair on ties (a diagonal cov: the first two coefficients)
    return int(iu[k]), int(ju[k]), float(rho[k])


def _khat_block(reps: Mapping[str, Any] | None, single: float | None = None) -> dict[str, Any]:
    if not reps:
        return {"khat": single, "khat_median": single, "khat_range": None,
                "khat_reading": None if single is None else khat_reading(single), "khat_repeats": None,
                "khat_pooled": None, "khat_pooled_draws": None}
    med = float(reps["median"])
    return {"khat": single, "khat_median": med,
            "khat_range": [float(reps["min"]), float(reps["max"])], "khat_reading": khat_reading(med),
            "khat_repeats": int(reps.get("repeats", len(reps.get("values") or []))),
            "khat_pooled": _f(reps.get("pooled")), "khat_pooled_draws": reps.get("pooled_draws")}


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def leaderboard(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                approximations: Mapping[str, Mapping[str, Any]], *, nuts_draws: np.ndarray | None = None,
                nuts_seconds: float | None = None, prior_scale: float = 1.0, n_draws: int = 1000,
                repeats: int = KHAT_REPEATS, seed: int = 0, coef_names: Sequence[str] | None = None,
                loglik_fn: LoglikSum | None = None, pair_from: str | None = None, khat_draws: int | None = None) -> dict[str, Any]:
    """One row per approximation of the posterior, on the same numbers; NUTS columns when ``nuts_draws`` are given.

    approximations : mapping of name to dict
        ``"kind"`` (``"fit"``, ``"correction"``, ``"reference"``, …), ``"seconds"`` (wall time to
        obtain it), and either ``"loc"`` and ``"cov"`` (a Gaussian) or ``"draws"`` (S, K+1) (anything
        else, e.g. PSIS-resampled draws). Optional: ``"khat"`` (a :func:`~pyro_spam.diagnostics.psis.khat_repeats`
        result to reuse instead of recomputing), ``"khat_single"``, ``"proposal"`` (``{"loc", "cov"}``:
        the Gaussian whose k̂ a draw row inherits), ``"ess"``, ``"reliable"``, ``"warning"``, ``"key"``.
    nuts_draws : ndarray of shape (chains, draws, K+1) or (S, K+1) or None
        The reference posterior: adds a NUTS row and the comparison columns.
    loglik_fn : callable or None
        Training log-likelihood per draw (default :func:`loglik_sum`; the pipeline passes torch's).
    pair_from : str or None
        Row whose covariance names the most correlated pair when there is no NUTS (default: the
        first ``"reference"`` row with a covariance, else the first ``"correction"``, else any).
    khat_draws : int or None
        Draws per k̂ set (default ``n_draws``). A k̂ near 0.5 from 1000-draw sets can read high
        (:data:`pyro_spam.pipeline.guides.REFERENCE_KHAT_DRAWS` has the measurements).

    Returns ``{"rows", "pair", "pair_names", "pair_source", "reference", "coef_names", "n_draws", "repeats",
    "khat_draws"}``. Each row: ``name``, ``key``, ``kind``, ``gaussian``, ``elbo`` (exact, Gaussian rows), ``khat``,
    ``khat_median``, ``khat_range`` ([min, max] over ``repeats`` sets of ``khat_draws`` draws: one k̂
    from 1000 draws varies by about ±0.1), ``khat_pooled`` (all those draws at once), ``khat_reading``, ``mean``, ``sd``, ``pair_mean``,
    ``pair_cov`` (2×2), ``pair_rho`` (correlation on the table's pair), ``strongest`` (its own most
    correlated pair), ``lppd_test_per_message`` (from ``n_draws`` draws), ``seconds``; with NUTS also
    ``sd_ratio`` (per coefficient), ``sd_ratio_min``/``max``, ``mean_shift_in_sd`` and its max, ``w1_in_sd`` (per
    coefficient, W1 / NUTS sd, from draws) and ``w1_max_in_sd``. W1 from two finite samples is not
    zero even for the same distribution: ``w1_floor_in_sd`` (top level) is W1 between two halves of
    the NUTS draws, the resolution of that column.
    """
    ll_fn = loglik_fn or loglik_sum
    khat_draws = int(khat_draws or n_draws)
    d = _design(x_train).shape[1]
    names = list(coef_names) if coef_names is not None else [f"w{j}" for j in range(d)]
    nuts = None
    if nuts_draws is not None:
        nd = np.asarray(nuts_draws, dtype=np.float64)
        nuts = nd.reshape(-1, nd.shape[-1])
        nuts_mean, nuts_sd = nuts.mean(axis=0), nuts.std(axis=0, ddof=1)
        nuts_cov = np.cov(nuts, rowvar=False)
    rows: list[dict[str, Any]] = []
    samples: list[np.ndarray] = []
    computed: dict[bytes, dict[str, Any]] = {}

    def khat_of(loc: np.ndarray, cov: np.ndarray) -> dict[str, Any]:
        """k̂ repeats of N(loc, cov), once per distinct Gaussian (a PSIS row's proposal is often a fit's q)."""
        key = np.asarray(loc, dtype=np.float64).tobytes() + np.asarray(cov, dtype=np.float64).tobytes()
        if key not in computed:
            computed[key] = khat_repeats(lambda w: ll_fn(w, x_train, y_train), np.asarray(loc, dtype=np.float64),
                                         np.sqrt(np.diag(cov)), cov=cov, prior_scale=prior_scale, n_draws=khat_draws,
                                         repeats=repeats, seed=seed)
        return computed[key]

    for r, (name, a) in enumerate(approximations.items()):
        gaussian = a.get("cov") is not None
        row: dict[str, Any] = {"name": name, "key": a.get("key", name), "kind": a.get("kind", "fit"), "gaussian": gaussian}
        if gaussian:
            loc, cov = np.asarray(a["loc"], dtype=np.float64), np.asarray(a["cov"], dtype=np.float64)
            draws = a.get("draws")
            if draws is None:
                eps = np.random.default_rng([int(seed), 31, r]).standard_normal((n_draws, d))
                draws = loc + eps @ np.linalg.cholesky(cov).T
            draws = np.asarray(draws, dtype=np.float64)
            mean, mcov = loc, cov
            row["cov"] = cov.tolist()  # with "mean": what an independent recomputation of k̂ and sds starts from
            row["elbo"] = exact_elbo_gaussian(x_train, y_train, loc, cov, prior_scale)
            reps = a.get("khat") or khat_of(loc, cov)
        else:
            draws = np.asarray(a["draws"], dtype=np.float64)
            mean, mcov = draws.mean(axis=0), np.cov(draws, rowvar=False)
            row["elbo"] = None
            reps = a.get("khat")
            prop = a.get("proposal")
            if reps is None and prop is not None:
                reps = khat_of(prop["loc"], np.asarray(prop["cov"], dtype=np.float64))
        row.update(_khat_block(reps, _f(a.get("khat_single"))))
        sd = np.sqrt(np.diag(mcov))
        i, j, rho = most_correlated(mcov)
        row.update({"mean": mean.tolist(), "sd": sd.tolist(),
                    "strongest": {"pair": [i, j], "names": [names[i], names[j]], "rho": rho}})
        for extra in ("ess", "reliable", "warning", "n_unique"):
            if extra in a:
                row[extra] = a[extra]
        row["lppd_test_per_message"] = lppd_per_message(draws, x_test, y_test)
        row["seconds"] = _f(a.get("seconds"))
        if nuts is not None:
            ratio = sd / nuts_sd
            shift = np.abs(mean - nuts_mean) / nuts_sd
            w1 = wasserstein_in_sd(draws, nuts)
            row.update({"sd_ratio": ratio.tolist(), "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()),
                        "mean_shift_in_sd": shift.tolist(), "mean_shift_max_in_sd": float(shift.max()),
                        "w1_in_sd": w1.tolist(), "w1_max_in_sd": float(w1.max())})
        rows.append(row)
        samples.append(mcov)
    out: dict[str, Any] = {"coef_names": names, "n_draws": int(n_draws), "repeats": int(repeats), "khat_draws": khat_draws,
                           "reference": "nuts" if nuts is not None else None}
    if nuts is not None:
        i, j, rho = most_correlated(nuts_cov)
        half = nuts.shape[0] // 2
        out.update({"pair": [i, j], "pair_source": "NUTS",
                    "w1_floor_in_sd": float(wasserstein_in_sd(nuts[:half], nuts[half:]).max())})
        nrow: dict[str, Any] = {"name": "NUTS", "key": "nuts", "kind": "mcmc", "gaussian": False, "elbo": None,
                                **_khat_block(None), "mean": nuts_mean.tolist(), "sd": nuts_sd.tolist(),
                                "strongest": {"pair": [i, j], "names": [names[i], names[j]], "rho": rho},
                                "lppd_test_per_message": lppd_per_message(nuts, x_test, y_test),
                                "seconds": _f(nuts_seconds), "n_draws": int(nuts.shape[0])}
        rows.append(nrow)
        samples.append(nuts_cov)
    else:
        src = _pair_row(rows, pair_from)
        if src is None:
            i, j = 0, min(1, d - 1)
            out.update({"pair": [i, j], "pair_source": None})
        else:
            i, j = rows[src]["strongest"]["pair"]
            out.update({"pair": [i, j], "pair_source": rows[src]["name"]})
    out["pair_names"] = [names[i], names[j]]
    for row, c in zip(rows, samples):
        sub = c[np.ix_([i, j], [i, j])]
        row["pair_mean"] = [row["mean"][i], row["mean"][j]]
        row["pair_cov"] = sub.tolist()
        row["pair_rho"] = float(sub[0, 1] / math.sqrt(sub[0, 0] * sub[1, 1]))
    out["rows"] = rows
    return out


def _pair_row(rows: Sequence[Mapping[str, Any]], pair_from: str | None) -> int | None:
    """Index of the row whose covariance names the pair when there is no NUTS."""
    if pair_from is not None:
        return next((k for k, r in enumerate(rows) if r["name"] == pair_from or r["key"] == pair_from), None)
    for kind in ("reference", "correction"):
        for k, r in enumerate(rows):
            if r["kind"] == kind and r["gaussian"]:
                return k
    return 0 if rows else None


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``: the wall time column of a row."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
