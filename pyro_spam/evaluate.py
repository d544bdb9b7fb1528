"""Numbers that judge a fit: ELBO pieces, held-out predictive scores, calibration (numpy only).

The advanced evaluations exploit the variational posterior rather than a point prediction:

1. :func:`weight_summary`: which coefficients left the prior (posterior-to-prior sd ratio, KL);
2. :func:`predictive_uncertainty` / :func:`uncertainty_summary`: per-message mean p(spam), a
   credible interval, and the total predictive entropy split into aleatoric and epistemic
   (mutual information) parts;
3. :func:`reliability_curve`, :func:`ece_null`, :func:`logistic_baseline`: calibration against
   scikit-learn's point estimate of the same model;
4. :func:`selective_prediction`: accuracy versus coverage when uncertain messages are deferred;
5. :func:`most_uncertain`, :func:`most_confidently_wrong`: the messages worth reading.

Everything here takes and returns numpy arrays and plain numbers: no drawing, no torch.
Entropies are in nats (a fair coin has ln 2 ≈ 0.693 nats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import entr, expit, logsumexp
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

#: A coefficient "left the prior" when its posterior sd is below this fraction of the prior sd,
#: i.e. the data removed at least three quarters of the prior variance.
LEFT_PRIOR_SD_RATIO = 0.5


def kl_normal(loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """KL(N(loc, scale²) ‖ N(0, prior_scale²)) per coefficient, in nats."""
    r = (scale / prior_scale) ** 2
    return 0.5 * (r + (loc / prior_scale) ** 2 - 1.0 - np.log(r))


def elbo_estimate(loglik: np.ndarray, loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0,
                  cov: np.ndarray | None = None) -> dict[str, float]:
    """ELBO = E_q[Σ_i log p(y_i|x_i,w)] − KL(q‖p) from pointwise log-likelihoods (n_draws, n); ``cov``:
    q's full covariance (full and low-rank guides; default ``diag(scale²)``).

    Returns the ELBO, its parts and the Monte Carlo standard error of the expectation.
    """
    per_draw = loglik.sum(axis=1)
    kl = float(kl_normal(loc, scale, prior_scale).sum()) if cov is None else kl_gaussian(loc, cov, prior_scale)
    ell = float(per_draw.mean())
    return {
        "elbo": ell - kl,
        "expected_loglik": ell,
        "kl": kl,
        "mc_se": float(per_draw.std(ddof=1) / np.sqrt(per_draw.shape[0])),
    }


def kl_gaussian(loc: np.ndarray, cov: np.ndarray, prior_scale: float = 1.0) -> float:
    """``KL(N(loc, cov) ‖ N(0, s² I))`` in closed form: ``½[tr(cov)/s² + ‖loc‖²/s² − K − log|cov| + K log s²]``."""
    loc, cov = np.asarray(loc, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    k, s2 = loc.size, float(prior_scale) ** 2
    logdet = np.linalg.slogdet(cov)[1]
    return float(0.5 * ((np.trace(cov) + loc @ loc) / s2 - k - logdet + k * np.log(s2)))


def lppd_pointwise(loglik: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """log mean_s p(y_i | w_s) per message, shape (n,), from pointwise log-likelihoods (n_draws, n);
    ``chunk`` messages at a time (the same numbers, temporaries of draws × chunk floats)."""
    n = loglik.shape[1]
    out = np.empty(n)
    for lo in range(0, n, chunk):
        out[lo : lo + chunk] = logsumexp(loglik[:, lo : lo + chunk], axis=0)
    return out - np.log(loglik.shape[0])


def calibration_bins(p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin index of each p(spam), shape (n,): the binning of every ECE here."""
    return np.clip((np.asarray(p) * n_bins).astype(int), 0, n_bins - 1)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins on p(spam): Σ_b (n_b/n)·|mean(y_b) − mean(p_b)| = Σ_b |Σ_{i∈b}(y_i − p_i)| / n."""
    p = np.asarray(p, dtype=np.float64)
    resid = np.bincount(calibration_bins(p, n_bins), weights=np.asarray(y, dtype=np.float64) - p, minlength=n_bins)
    return float(np.abs(resid).sum() / p.size)


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


def log_loss_per_message(p: np.ndarray, y: np.ndarray) -> float:
    """Mean log p(y_i) of predictive probabilities ``p`` (the held-out lppd of a point predictor)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y) > 0.5
    with np.errstate(divide="ignore"):
        return float(np.mean(np.where(y, np.log(p), np.log1p(-p))))


# ---------------------------------------------------------------- 1. posterior weights


def weight_summary(
    loc: np.ndarray,
    scale: np.ndarray,
    names: Sequence[str],
    prior_scale: float = 1.0,
    interval: float = 0.90,
    threshold: float = LEFT_PRIOR_SD_RATIO,
) -> dict[str, Any]:
    """Posterior N(loc, scale²) of each coefficient against its prior N(0, prior_scale²).

    Parameters
    ----------
    loc, scale : ndarray of shape (K+1,)
        Guide parameters, bias first.
    names : sequence of str
        Coefficient names, same order.
    prior_scale : float, default=1.0
    interval : float, default=0.90
        Mass of the central credible interval.
    threshold : float, default=LEFT_PRIOR_SD_RATIO
        A coefficient left the prior when ``scale / prior_scale < threshold``.

    Returns
    -------
    dict
        ``rows``: one dict per coefficient with ``name, mean, sd, lo, hi, sd_ratio, kl`` (nats),
        ``z = mean/sd``, ``left_prior`` and ``excludes_zero`` (the interval misses 0);
        ``kl_total``, ``n_left``, ``left`` (names), ``excludes_zero`` (names), ``threshold``,
        ``interval``, ``prior_scale``, ``largest_kl`` (name).
    """
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if loc.shape != scale.shape or loc.shape[0] != len(names):
        raise ValueError(f"loc {loc.shape}, scale {scale.shape} and {len(names)} names do not match")
    zq = float(norm.ppf(0.5 + interval / 2))
    kl = kl_normal(loc, scale, prior_scale)
    ratio = scale / prior_scale
    rows = []
    for j, name in enumerate(names):
        lo, hi = loc[j] - zq * scale[j], loc[j] + zq * scale[j]
        rows.append({
            "name": str(name), "mean": float(loc[j]), "sd": float(scale[j]), "lo": float(lo), "hi": float(hi),
            "sd_ratio": float(ratio[j]), "kl": float(kl[j]), "z": float(loc[j] / scale[j]),
            "left_prior": bool(ratio[j] < threshold), "excludes_zero": bool(lo > 0 or hi < 0),
        })
    return {
        "rows": rows,
        "kl_total": float(kl.sum()),
        "n_left": int(sum(r["left_prior"] for r in rows)),
        "left": [r["name"] for r in rows if r["left_prior"]],
        "excludes_zero": [r["name"] for r in rows if r["excludes_zero"]],
        "largest_kl": rows[int(np.argmax(kl))]["name"],
        "threshold": float(threshold),
        "interval": float(interval),
        "prior_scale": float(prior_scale),
    }


# ---------------------------------------------------------------- 2. predictive uncertainty


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of Bernoulli(p) in nats; exact at p = 0 and 1 (no clipping)."""
    p = np.asarray(p, dtype=np.float64)
    return entr(p) + entr(1.0 - p)


def binary_entropy_logit(z: np.ndarray) -> np.ndarray:
    """Entropy of Bernoulli(logits=z) in nats, computed on the logit.

    ``H = log(1 + e^-|z|) + |z| σ(-|z|)``: both terms are positive, so there is no cancellation
    for large |z| (where ``1 − σ(z)`` would round to 0 in probability space).
    """
    a = np.abs(np.asarray(z, dtype=np.float64))
    e = np.exp(-a)  # in (0, 1]: σ(-|z|) = e / (1 + e)
    return np.log1p(e) + a * e / (1.0 + e)


def predictive_uncertainty(logit: np.ndarray, interval: float = 0.90) -> dict[str, np.ndarray]:
    """Per-message posterior predictive summaries from logit draws.

    Parameters
    ----------
    logit : ndarray of shape (n_draws, n)
        Logit of p(spam) per posterior draw and message.
    interval : float, default=0.90
        Mass of the central credible interval of p(spam).

    Returns
    -------
    dict of ndarray of shape (n,)
        ``p_mean`` (posterior predictive p(spam)), ``p_lo``/``p_hi`` (interval of p(spam) over
        draws), ``total`` (entropy of the predictive, nats), ``aleatoric`` (mean entropy of the
        per-draw predictions) and ``epistemic`` (their difference: the mutual information
        between the label and w, ≥ 0 by Jensen, up to rounding). ``total = aleatoric + epistemic``.
    """
    z = np.asarray(logit, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logit draws must have shape (n_draws, n), got {z.shape}")
    p_mean = expit(z).mean(axis=0)
    # Quantiles commute with the monotone σ: take them on the logit, where they are well resolved.
    lo, hi = np.quantile(z, [0.5 - interval / 2, 0.5 + interval / 2], axis=0)
    total = binary_entropy(p_mean)
    aleatoric = binary_entropy_logit(z).mean(axis=0)
    return {
        "p_mean": p_mean, "p_lo": expit(lo), "p_hi": expit(hi),
        "total": total, "aleatoric": aleatoric, "epistemic": total - aleatoric,
    }


def _group_stats(pu: dict[str, np.ndarray], m: np.ndarray) -> dict[str, float]:
    n = int(m.sum())
    if n == 0:
        return {"n": 0, "total_mean": float("nan"), "aleatoric_mean": float("nan"), "epistemic_mean": float("nan"),
                "epistemic_median": float("nan"), "interval_width_mean": float("nan"), "epistemic_share": float("nan")}
    tot, ep = float(pu["total"][m].mean()), float(pu["epistemic"][m].mean())
    return {
        "n": n,
        "total_mean": tot,
        "aleatoric_mean": float(pu["aleatoric"][m].mean()),
        "epistemic_mean": ep,
        "epistemic_median": float(np.median(pu["epistemic"][m])),
        "interval_width_mean": float((pu["p_hi"][m] - pu["p_lo"][m]).mean()),
        "epistemic_share": ep / tot if tot > 0 else float("nan"),
    }


def uncertainty_summary(pu: dict[str, np.ndarray], y: np.ndarray, interval: float = 0.90) -> dict[str, Any]:
    """How uncertainty is split and how it differs between correct and wrong predictions.

    Parameters
    ----------
    pu : dict
        Output of :func:`predictive_uncertainty`.
    y : ndarray of shape (n,)
        True labels 0/1.

    Returns
    -------
    dict
        ``all``/``correct``/``wrong``: ``n``, mean total, aleatoric and epistemic entropy (nats),
        median epistemic, mean interval width, epistemic share of the total;
        ``n_straddle``: messages whose credible interval contains 0.5 (the decision could flip
        under the posterior); ``error_auroc_total`` / ``error_auroc_epistemic``: how well each
        uncertainty ranks wrong above correct predictions (0.5 = no better than chance, NaN when
        one group is empty); ``wrong_to_correct_total``: ratio of the groups' mean total entropy.
    """
    y = np.asarray(y) > 0.5
    wrong = (pu["p_mean"] > 0.5) != y
    out: dict[str, Any] = {
        "interval": float(interval),
        "all": _group_stats(pu, np.ones_like(wrong)),
        "correct": _group_stats(pu, ~wrong),
        "wrong": _group_stats(pu, wrong),
        "n_straddle": int(np.sum((pu["p_lo"] <= 0.5) & (pu["p_hi"] >= 0.5))),
        "max_entropy": math.log(2.0),
    }
    both = 0 < wrong.sum() < wrong.size
    out["error_auroc_total"] = float(roc_auc_score(wrong, pu["total"])) if both else float("nan")
    out["error_auroc_epistemic"] = float(roc_auc_score(wrong, pu["epistemic"])) if both else float("nan")
    c, w = out["correct"]["total_mean"], out["wrong"]["total_mean"]
    out["wrong_to_correct_total"] = float(w / c) if both and c > 0 else float("nan")
    return out


# ---------------------------------------------------------------- 3. calibration


def reliability_curve(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Equal-width reliability diagram of predictive p(spam), with its ECE.

    Returns
    -------
    dict
        ``edges`` (n_bins+1,), and per bin ``count``, ``mean_p`` and ``freq`` (observed spam
        rate; NaN in empty bins), ``ece`` (same as :func:`expected_calibration_error`) and
        ``mce`` (largest gap over non-empty bins).
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    bins = calibration_bins(p, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / count
        freq = np.bincount(bins, weights=y, minlength=n_bins) / count
    gap = np.abs(freq - mean_p)
    nonempty = count > 0
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "mean_p": mean_p,
        "freq": freq,
        "ece": expected_calibration_error(p, y, n_bins),
        "mce": float(gap[nonempty].max()) if nonempty.any() else float("nan"),
    }


def ece_null(p: np.ndarray, n_bins: int = 10, n_sim: int = 1000, seed: int = 0) -> dict[str, float]:
    """ECE a perfectly calibrated predictor with these ``p`` would show, from finite-sample noise alone.

    Simulates labels ``y* ~ Bernoulli(p)`` ``n_sim`` times and computes the ECE of ``p`` against
    each: an observed ECE inside this distribution is not evidence of miscalibration.

    Returns
    -------
    dict
        ``mean``, ``q95`` and ``q99`` of the simulated ECEs, and ``n_sim``.
    """
    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bins = calibration_bins(p, n_bins)
    onehot = np.zeros((p.size, n_bins))
    onehot[np.arange(p.size), bins] = 1.0
    sims = np.empty(n_sim)
    chunk = max(1, min(n_sim, 2_000_000 // max(1, p.size)))
    for start in range(0, n_sim, chunk):
        m = min(chunk, n_sim - start)
        ystar = (rng.random((m, p.size)) < p).astype(np.float64)
        # expected_calibration_error for m label sets at once
        sims[start : start + m] = np.abs((ystar - p) @ onehot).sum(axis=1) / p.size
    return {"mean": float(sims.mean()), "q95": float(np.quantile(sims, 0.95)), "q99": float(np.quantile(sims, 0.99)), "n_sim": int(n_sim)}


def logistic_baseline(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """p(spam) on ``X_test`` from scikit-learn's ``LogisticRegression`` on the same features.

    ``C = prior_scale²`` makes its L2 penalty ``‖w‖²/(2C)`` the negative log of the same
    N(0, prior_scale²) prior on the slopes (the intercept is unpenalised), so this is the MAP
    point estimate of our model: the comparison isolates averaging over the posterior.
    """
    lr = LogisticRegression(C=float(prior_scale) ** 2, max_iter=1000, tol=1e-8)
    lr.fit(np.asarray(X_train, dtype=np.float64), np.asarray(y_train) > 0.5)
    return lr.predict_proba(np.asarray(X_test, dtype=np.float64))[:, 1]


# ---------------------------------------------------------------- 4. selective prediction


def selective_prediction(
    p: np.ndarray, y: np.ndarray, uncertainty: np.ndarray, coverages: Sequence[float] | None = None
) -> dict[str, Any]:
    """Accuracy on the messages kept when the most uncertain ones are deferred.

    At coverage c the ``ceil(c·n)`` messages with the lowest ``uncertainty`` are kept (ties keep
    the earlier message: a stable sort), and accuracy is measured on them at threshold 0.5.
    Coverage 1.0 is the plain accuracy.

    Parameters
    ----------
    p : ndarray of shape (n,)
        Predictive p(spam).
    y : ndarray of shape (n,)
    uncertainty : ndarray of shape (n,)
        Larger = defer first (e.g. total predictive entropy).
    coverages : sequence of float in (0, 1], default 0.01, 0.02, …, 1.00

    Returns
    -------
    dict
        ``coverage``, ``accuracy``, ``kept`` (arrays), ``area`` (mean accuracy over the grid),
        ``full_accuracy`` and ``accuracy_at`` (accuracy at coverage 0.8, 0.9 and 0.95).
    """
    p = np.asarray(p, dtype=np.float64)
    correct = ((p > 0.5) == (np.asarray(y) > 0.5)).astype(np.float64)
    n = p.size
    order = np.argsort(np.asarray(uncertainty, dtype=np.float64), kind="stable")
    acc_k = np.cumsum(correct[order]) / np.arange(1, n + 1)

    def at(c: float) -> tuple[int, float]:
        if not 0 < c <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        k = max(1, math.ceil(c * n - 1e-9))
        return k, float(acc_k[k - 1])

    cov = np.asarray(coverages if coverages is not None else np.arange(1, 101) / 100, dtype=np.float64)
    res = [at(float(c)) for c in cov]
    return {
        "coverage": cov,
        "accuracy": np.array([a for _, a in res]),
        "kept": np.array([k for k, _ in res]),
        "area": float(np.mean([a for _, a in res])),
        "full_accuracy": float(correct.mean()),
        "accuracy_at": {f"{c:.2f}": at(c)[1] for c in (0.8, 0.9, 0.95)},
    }


def oracle_selective(p: np.ndarray, y: np.ndarray, coverages: Sequence[float] | None = None) -> dict[str, Any]:
    """The best possible deferral curve: wrong predictions deferred first (an upper bound)."""
    wrong = ((np.asarray(p) > 0.5) != (np.asarray(y) > 0.5)).astype(np.float64)
    return selective_prediction(p, y, wrong, coverages)


# ---------------------------------------------------------------- 5. qualitative


def most_uncertain(total_entropy: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` messages with the largest predictive entropy, most uncertain first."""
    h = np.asarray(total_entropy, dtype=np.float64)
    return np.argsort(-h, kind="stable")[: min(k, h.size)]


def most_confidently_wrong(p: np.ndarray, y: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` wrong predictions with the largest log-loss −log p(true label), worst first."""
    p = np.asarray(p, dtype=np.float64)
    yb = np.asarray(y) > 0.5
    wrong = np.nonzero((p > 0.5) != yb)[0]
    with np.errstate(divide="ignore"):
        loss = -np.where(yb[wrong], np.log(p[wrong]), np.log1p(-p[wrong]))
    return wrong[np.argsort(-loss, kind="stable")][:k]


# ---------------------------------------------------------------- all of 1–5 at once


def advanced_evaluation(
    *,
    loc: np.ndarray,
    scale: np.ndarray,
    coef_names: Sequence[str],
    prior_scale: float,
    logit_test: np.ndarray,
    y_test: np.ndarray,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    msg_test: np.ndarray | None = None,
    row_test: np.ndarray | None = None,
    n_examples: int = 6,
    n_bins: int = 10,
    interval: float = 0.90,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluations 1–5 of one fitted guide from its posterior draws on the test set.

    Parameters
    ----------
    loc, scale : ndarray of shape (K+1,)
    coef_names : sequence of str
    prior_scale : float
    logit_test : ndarray of shape (n_draws, n_test)
        Logits of the guide's posterior draws on the test messages.
    y_test : ndarray of shape (n_test,)
    X_train, y_train, X_test : ndarray
        The model inputs, for the scikit-learn baseline on the same features.
    msg_test : ndarray of str of shape (n_test,), optional
        Message texts for the qualitative evaluation.
    row_test : ndarray of int of shape (n_test,), optional
        Row of each test message in the source data set.
    n_examples : int, default=6
        Messages listed per qualitative category.
    seed : int, default=0
        For the simulated ECE reference.

    Returns
    -------
    summary : dict
        JSON-able numbers under ``weights``, ``uncertainty``, ``calibration``, ``selective``,
        ``qualitative``.
    arrays : dict of ndarray
        Per-message arrays (``p_mean, p_lo, p_hi, total, aleatoric, epistemic, y, p_sklearn``).
    """
    y_test = np.asarray(y_test, dtype=np.float64)
    weights = weight_summary(loc, scale, coef_names, prior_scale, interval)
    pu = predictive_uncertainty(logit_test, interval)
    unc = uncertainty_summary(pu, y_test, interval)

    p_lr = logistic_baseline(X_train, y_train, X_test, prior_scale)
    cal = {"n_bins": n_bins, "models": {}}
    for name, p in (("vi", pu["p_mean"]), ("sklearn", p_lr)):
        rc = reliability_curve(p, y_test, n_bins)
        cal["models"][name] = {
            **rc,
            "ece_null": ece_null(p, n_bins, seed=seed),
            "lppd_per_message": log_loss_per_message(p, y_test),
            **{k: v for k, v in classification_scores(p, y_test).items() if k != "ece"},
        }
    cal["max_abs_diff_p"] = float(np.max(np.abs(pu["p_mean"] - p_lr)))

    sel = {
        "total": selective_prediction(pu["p_mean"], y_test, pu["total"]),
        "epistemic": selective_prediction(pu["p_mean"], y_test, pu["epistemic"]),
        "oracle": oracle_selective(pu["p_mean"], y_test),
    }

    def rows(idx: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for i in idx:
            out.append({
                "test_index": int(i),
                "row": int(row_test[i]) if row_test is not None else int(i),
                "text": str(msg_test[i]) if msg_test is not None else "",
                "label": "spam" if y_test[i] > 0.5 else "ham",
                "p_mean": float(pu["p_mean"][i]), "p_lo": float(pu["p_lo"][i]), "p_hi": float(pu["p_hi"][i]),
                "total": float(pu["total"][i]), "epistemic": float(pu["epistemic"][i]),
            })
        return out

    qual = {
        "most_uncertain": rows(most_uncertain(pu["total"], n_examples)),
        "confidently_wrong": rows(most_confidently_wrong(pu["p_mean"], y_test, n_examples)),
    }
    summary = {"weights": weights, "uncertainty": unc, "calibration": cal, "selective": sel, "qualitative": qual}
    arrays = {**pu, "y": y_test, "p_sklearn": p_lr}
    return summary, arrays


def ratio_verdict(ratio: float, lo: float, hi: float, what: str = "gradient variance", negligible: float = 0.01) -> str:
    """Words for a variance ratio var(MC-KL estimator) / var(analytic-KL estimator) and its 95 % interval.

    A ratio above 1 means the analytic KL *lowers* the variance. Changes smaller than
    ``negligible`` (relative) are called negligible even when the interval excludes 1.
    """
    if not all(map(math.isfinite, (ratio, lo, hi))):
        return "not determined"
    if lo > 1:
        change, direction = 1 - 1 / ratio, "lowers"
    elif hi < 1:
        change, direction = 1 / ratio - 1, "raises"
    else:
        return f"no detectable difference: the analytic KL does not change the {what}"
    size = "a negligible " if change < negligible else ""
    pct = 100 * change
    text = f"{pct:.0f}" if pct >= 10 else f"{pct:.1f}" if pct >= 1 else f"{pct:.2g}"
    return f"the analytic KL {direction} the {what} by {size}{text} %"
