"""Evaluations 1–5 on small synthetic cases with known answers (numpy only, no fitting)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from pyro_spam import evaluate as ev
from pyro_spam.io.rundir import to_jsonable

# ---------------------------------------------------------------- 1. weights


def test_weight_summary_known_values():
    """Posterior = prior gives ratio 1 and KL 0; N(1, 1) against N(0, 1) has KL ½; a narrow posterior left the prior."""
    out = ev.weight_summary(np.array([0.0, 1.0, 0.02, -3.0]), np.array([1.0, 1.0, 0.1, 0.2]), ["a", "b", "c", "d"], prior_scale=1.0)
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["a"]["sd_ratio"] == 1.0 and rows["a"]["kl"] == pytest.approx(0.0, abs=1e-15)
    assert rows["b"]["kl"] == pytest.approx(0.5, abs=1e-15)
    assert out["left"] == ["c", "d"] and out["n_left"] == 2
    # c is pinned near 0 (left the prior, interval contains 0); d's 90 % interval −3 ± 1.645·0.2 excludes 0.
    assert out["excludes_zero"] == ["d"]
    assert rows["d"]["lo"] == pytest.approx(-3 - 1.6448536 * 0.2, abs=1e-6)
    assert out["largest_kl"] == "d"
    assert out["kl_total"] == pytest.approx(sum(r["kl"] for r in out["rows"]))


def test_weight_summary_prior_scale_and_mismatch():
    """The ratio is relative to the prior sd; mismatched lengths raise."""
    out = ev.weight_summary(np.zeros(2), np.array([1.0, 4.0]), ["a", "b"], prior_scale=10.0)
    assert [r["sd_ratio"] for r in out["rows"]] == [0.1, 0.4] and out["n_left"] == 2
    with pytest.raises(ValueError):
        ev.weight_summary(np.zeros(2), np.ones(2), ["a"])


# ---------------------------------------------------------------- 2. predictive uncertainty


def test_entropy_on_logits_matches_probability_formula_and_stays_finite():
    """H on the logit equals −p log p − (1−p) log(1−p) where that is accurate (|z| ≤ 15), follows the
    asymptote (1 + |z|) e^−|z| in the tails (where 1 − σ(z) loses digits), and is finite at |z| = 800."""
    z = np.linspace(-15, 15, 31)
    p = expit(z)
    ref = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    np.testing.assert_allclose(ev.binary_entropy_logit(z), ref, rtol=1e-8)
    np.testing.assert_allclose(ev.binary_entropy(p), ref, rtol=1e-9)
    tail = np.array([-40.0, 30.0, 60.0])
    np.testing.assert_allclose(ev.binary_entropy_logit(tail), (1 + np.abs(tail)) * np.exp(-np.abs(tail)), rtol=1e-10)
    big = ev.binary_entropy_logit(np.array([-800.0, 800.0, 0.0]))
    assert np.all(np.isfinite(big)) and big[2] == pytest.approx(math.log(2))


def test_mutual_information_zero_when_all_draws_agree():
    """Identical draws: epistemic part 0 (to rounding), aleatoric = total."""
    row = np.array([-3.0, -0.2, 0.0, 1.5, 7.0])
    pu = ev.predictive_uncertainty(np.tile(row, (50, 1)))
    np.testing.assert_allclose(pu["epistemic"], 0.0, atol=1e-12)
    np.testing.assert_allclose(pu["aleatoric"], pu["total"], rtol=1e-12)
    np.testing.assert_allclose(pu["p_lo"], pu["p_hi"])


def test_mutual_information_ln2_when_draws_disagree_completely():
    """Half the draws say spam for sure, half ham for sure: total = epistemic = ln 2, aleatoric ≈ 0."""
    z = np.concatenate([np.full((100, 3), 40.0), np.full((100, 3), -40.0)])
    pu = ev.predictive_uncertainty(z)
    np.testing.assert_allclose(pu["p_mean"], 0.5)
    np.testing.assert_allclose(pu["total"], math.log(2), rtol=1e-12)
    np.testing.assert_allclose(pu["aleatoric"], 0.0, atol=1e-15)
    np.testing.assert_allclose(pu["epistemic"], math.log(2), rtol=1e-12)


def test_entropy_decomposition_sums_and_matches_independent_formulas():
    """total = entropy of the mean p; aleatoric = mean per-draw entropy; total = aleatoric + epistemic; MI ≥ 0."""
    rng = np.random.default_rng(0)
    z = rng.normal(loc=rng.normal(0, 3, size=40), scale=rng.uniform(0.01, 2, size=40), size=(400, 40))
    pu = ev.predictive_uncertainty(z)
    p = expit(z)
    pm = p.mean(axis=0)
    np.testing.assert_allclose(pu["total"], -(pm * np.log(pm) + (1 - pm) * np.log(1 - pm)), rtol=1e-10)
    np.testing.assert_allclose(pu["aleatoric"], (-(p * np.log(p) + (1 - p) * np.log(1 - p))).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(pu["aleatoric"] + pu["epistemic"], pu["total"], rtol=1e-12)
    assert np.all(pu["epistemic"] > -1e-12)


def test_credible_interval_of_p_has_the_normal_quantiles():
    """Logit draws N(0, 1): the 90 % interval of p is σ(±1.645) within Monte Carlo error.

    Tolerance: the 5 % sample quantile of 20,000 normal draws has SE ≈ 0.015 on the logit scale
    (sqrt(q(1−q)/n)/φ(z_q)); 4 SE is 0.06 on the logit, ≤ 0.015 after σ (slope ≤ ¼).
    """
    z = np.random.default_rng(1).standard_normal((20_000, 1))
    pu = ev.predictive_uncertainty(z)
    assert pu["p_lo"][0] == pytest.approx(expit(-1.6448536), abs=0.015)
    assert pu["p_hi"][0] == pytest.approx(expit(1.6448536), abs=0.015)


def test_uncertainty_summary_groups_and_error_ranking():
    """Counts per group add up; errors with the largest entropy give AUROC 1; straddling intervals are counted."""
    z = np.array([[-5.0, -4.0, 4.0, 0.2, -0.3], [-5.0, -4.0, 4.0, -0.1, 0.1]])
    y = np.array([0, 0, 1, 0, 1])  # the last two are (borderline) wrong
    pu = ev.predictive_uncertainty(z)
    s = ev.uncertainty_summary(pu, y)
    assert s["all"]["n"] == 5 and s["correct"]["n"] == 3 and s["wrong"]["n"] == 2
    assert s["error_auroc_total"] == 1.0
    assert s["wrong_to_correct_total"] > 1
    assert s["n_straddle"] == 2
    none_wrong = ev.uncertainty_summary(pu, (pu["p_mean"] > 0.5).astype(int))
    assert none_wrong["wrong"]["n"] == 0 and math.isnan(none_wrong["error_auroc_total"])


# ---------------------------------------------------------------- 3. calibration


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    """y ~ Bernoulli(p): ECE is only sampling noise, and p² against the same labels is far off.

    Tolerance: in bin b the gap mean(y − p) has SE σ_b = sqrt(mean p(1−p) / n_b); we allow
    every bin 4 SE, i.e. ECE ≤ Σ_b (n_b/n)·4σ_b (about 0.04 here). The miscalibrated p² has
    ECE ≈ E[p − p²] = 1/6.
    """
    rng = np.random.default_rng(2)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    rc = ev.reliability_curve(p, y, n_bins=10)
    bins = np.clip((p * 10).astype(int), 0, 9)
    tol = sum((bins == b).mean() * 4 * math.sqrt(np.mean(p[bins == b] * (1 - p[bins == b])) / (bins == b).sum()) for b in range(10))
    assert rc["ece"] < tol
    assert rc["ece"] == pytest.approx(ev.expected_calibration_error(p, y))
    assert ev.reliability_curve(p**2, y)["ece"] > 0.1 > tol


def test_ece_exactly_zero_and_null_distribution():
    """A constant 0.3 against exactly 30 % spam has ECE 0; the simulated null of a calibrated predictor covers its observed ECE."""
    y = np.r_[np.ones(30), np.zeros(70)]
    rc = ev.reliability_curve(np.full(100, 0.3), y)
    assert rc["ece"] == pytest.approx(0.0, abs=1e-15) and rc["count"].sum() == 100
    assert np.isnan(rc["freq"][0]) and rc["freq"][3] == pytest.approx(0.3)
    rng = np.random.default_rng(3)
    p = rng.beta(0.5, 3, size=2000)
    null = ev.ece_null(p, n_sim=400, seed=0)
    assert 0 < null["mean"] < null["q95"] < null["q99"]
    # The observed ECE of a calibrated predictor is one draw from this null: inside its 99th percentile
    # except with probability 1 %; fixed seeds make the test deterministic.
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert ev.reliability_curve(p, y)["ece"] < null["q99"]


def test_logistic_baseline_is_the_map_of_the_same_model():
    """C = s² makes scikit-learn's fit the MAP under N(0, s²) slopes and a flat intercept (checked against scipy)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 3))
    y = (rng.uniform(size=300) < expit(-1 + x @ np.array([1.5, -1.0, 0.0]))).astype(float)
    s = 0.7

    def neg_log_post(w: np.ndarray) -> float:
        z = w[0] + x @ w[1:]
        return float(np.sum(np.logaddexp(0, z) - y * z) + np.sum(w[1:] ** 2) / (2 * s**2))

    w = minimize(neg_log_post, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    p = ev.logistic_baseline(x, y, x[:20], prior_scale=s)
    np.testing.assert_allclose(p, expit(w[0] + x[:20] @ w[1:]), atol=1e-5)


# ---------------------------------------------------------------- 4. selective prediction


def test_full_coverage_is_plain_accuracy_and_ceil_rule():
    """Coverage 1.0 gives the plain accuracy; coverage c keeps ceil(c·n) messages."""
    rng = np.random.default_rng(5)
    p, y = rng.uniform(size=101), (rng.uniform(size=101) < 0.4).astype(float)
    out = ev.selective_prediction(p, y, rng.uniform(size=101), coverages=[0.25, 1.0])
    assert out["accuracy"][-1] == np.mean((p > 0.5) == (y > 0.5)) == out["full_accuracy"]
    assert list(out["kept"]) == [26, 101]
    with pytest.raises(ValueError):
        ev.selective_prediction(p, y, p, coverages=[0.0])


def test_deferring_the_errors_first_gives_perfect_accuracy():
    """An uncertainty that ranks every error last reaches accuracy 1 at coverage = accuracy (the oracle)."""
    y = np.r_[np.ones(20), np.zeros(80)]
    p = np.r_[np.full(15, 0.9), np.full(5, 0.2), np.full(75, 0.1), np.full(5, 0.7)]  # 10 errors
    acc = np.mean((p > 0.5) == (y > 0.5))
    orc = ev.oracle_selective(p, y, coverages=[acc, 1.0])
    assert orc["accuracy"][0] == 1.0 and orc["accuracy"][1] == acc
    wrong_first = ev.selective_prediction(p, y, -((p > 0.5) != (y > 0.5)).astype(float), coverages=[0.1])
    assert wrong_first["accuracy"][0] == 0.0


def test_random_deferral_keeps_accuracy():
    """Uncertainty unrelated to correctness: accuracy at 50 % coverage equals the full accuracy within 4 binomial SE."""
    rng = np.random.default_rng(6)
    n = 20_000
    y = (rng.uniform(size=n) < 0.5).astype(float)
    p = np.where(rng.uniform(size=n) < 0.8, y, 1 - y) * 0.8 + 0.1  # 80 % correct
    out = ev.selective_prediction(p, y, rng.uniform(size=n), coverages=[0.5])
    full = out["full_accuracy"]
    assert abs(out["accuracy"][0] - full) < 4 * math.sqrt(full * (1 - full) / (n / 2))


# ---------------------------------------------------------------- 5. qualitative


def test_most_uncertain_and_confidently_wrong():
    """Most uncertain = largest entropy first; confidently wrong = wrong ones by −log p(true), worst first."""
    p = np.array([0.5, 0.99, 0.02, 0.6, 0.001, 0.45])
    y = np.array([1, 0, 1, 0, 0, 1])
    assert list(ev.most_uncertain(ev.binary_entropy(p), 3)) == [0, 5, 3]
    assert list(ev.most_confidently_wrong(p, y, 4)) == [1, 2, 3, 5]  # p = 0.5 for a spam counts as wrong (threshold > 0.5)
    assert ev.most_confidently_wrong(p, (p > 0.5).astype(int), 5).size == 0


def test_advanced_evaluation_is_complete_and_json_able():
    """All five evaluations from draws of a narrow posterior: keys present, numbers finite, small epistemic share."""
    rng = np.random.default_rng(7)
    n_tr, n_te, k = 400, 150, 2
    x_tr, x_te = rng.standard_normal((n_tr, k)), rng.standard_normal((n_te, k))
    w_true = np.array([-1.0, 2.0, 0.0])
    y_tr = (rng.uniform(size=n_tr) < expit(w_true[0] + x_tr @ w_true[1:])).astype(float)
    y_te = (rng.uniform(size=n_te) < expit(w_true[0] + x_te @ w_true[1:])).astype(float)
    loc, scale = w_true + 0.05, np.full(3, 0.1)
    w = loc + scale * rng.standard_normal((500, 3))
    logit = w[:, :1] + w[:, 1:] @ x_te.T
    msgs = np.array([f"msg <{i}>" for i in range(n_te)])
    summary, arrays = ev.advanced_evaluation(loc=loc, scale=scale, coef_names=["b", "x1", "x2"], prior_scale=1.0, logit_test=logit,
                                             y_test=y_te, X_train=x_tr, y_train=y_tr, X_test=x_te, msg_test=msgs,
                                             row_test=np.arange(n_te) + 1000, n_examples=4)
    assert set(summary) == {"weights", "uncertainty", "calibration", "selective", "qualitative"}
    assert summary["weights"]["n_left"] == 3
    assert summary["uncertainty"]["all"]["epistemic_share"] < 0.2
    assert set(summary["calibration"]["models"]) == {"vi", "sklearn"}
    assert summary["selective"]["total"]["accuracy"][-1] == summary["selective"]["total"]["full_accuracy"]
    q = summary["qualitative"]["most_uncertain"]
    assert len(q) == 4 and q[0]["row"] >= 1000 and q[0]["text"].startswith("msg <")
    assert arrays["p_mean"].shape == (n_te,)
    json.dumps(to_jsonable(summary), allow_nan=False)


def test_ratio_verdict_direction():
    """var(MC KL)/var(analytic KL) above 1 means the analytic KL lowers the variance, below 1 raises it; tiny changes are negligible."""
    assert ev.ratio_verdict(2.0, 1.5, 2.5) == "the analytic KL lowers the gradient variance by 50 %"
    assert ev.ratio_verdict(0.5, 0.4, 0.6) == "the analytic KL raises the gradient variance by 100 %"
    assert "negligible" in ev.ratio_verdict(1.0001, 1.00005, 1.0002) and "lowers" in ev.ratio_verdict(1.0001, 1.00005, 1.0002)
    assert ev.ratio_verdict(1.01, 0.99, 1.03).startswith("no detectable difference")
