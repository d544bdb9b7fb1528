"""The guide leaderboard: exact ELBO of a full-covariance Gaussian, Laplace, PSIS resampling, W1 and sd
ratios by hand, the leaderboard's columns, and its place in a run (summary, figure, report)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.special import log_expit
from scipy.stats import multivariate_normal as mvn

from pyro_spam.diagnostics.guides import (
    PSIS_WARNING,
    exact_elbo_gaussian,
    gaussian_kl,
    laplace,
    leaderboard,
    loglik_sum,
    lppd_per_message,
    most_correlated,
    psis_resample,
    wasserstein_in_sd,
)
from pyro_spam.diagnostics.psis import log_prior
from pyro_spam.evaluate import kl_normal
from pyro_spam.exact import exact_elbo


def _data(n: int = 300, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logistic data with correlated terms (so the posterior has correlated coefficients)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    x[:, 1] += 0.7 * x[:, 0]
    z = -1.0 + x @ np.linspace(1.0, -0.5, k)
    return x, (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)


def _grid_posterior(x: np.ndarray, y: np.ndarray, centre: np.ndarray, sd: np.ndarray, prior_scale: float = 1.0, m: int = 121):
    """Mean and covariance of the 2-coefficient (bias + one term) posterior by a 121×121 grid over ±7 sd."""
    g = [np.linspace(c - 7 * s, c + 7 * s, m) for c, s in zip(centre, sd)]
    w = np.stack([a.ravel() for a in np.meshgrid(*g, indexing="ij")], axis=1)
    lp = loglik_sum(w, x, y) + log_prior(w, prior_scale)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    mean = p @ w
    cov = (w - mean).T @ ((w - mean) * p[:, None])
    return mean, cov


# ---------------------------------------------------------------- exact ELBO of a Gaussian q


def test_exact_elbo_gaussian_matches_the_meanfield_quadrature():
    """Diagonal cov: the same Gauss–Hermite sum as pyro_spam.exact (64 nodes both), so they agree to 1e-8
    nats (rounding over n × 64 terms of size ~1 is ~1e-12; 1e-8 leaves room for summation order)."""
    x, y = _data()
    rng = np.random.default_rng(1)
    loc, log_scale = rng.normal(0, 0.5, 4), rng.normal(-1.5, 0.3, 4)
    a = exact_elbo(x, y, loc, log_scale, prior_scale=2.0)
    b = exact_elbo_gaussian(x, y, loc, np.diag(np.exp(2 * log_scale)), prior_scale=2.0)
    assert b == pytest.approx(a, abs=1e-8)
    assert gaussian_kl(loc, np.diag(np.exp(2 * log_scale)), 2.0) == pytest.approx(kl_normal(loc, np.exp(log_scale), 2.0).sum(), abs=1e-10)


def test_exact_elbo_gaussian_full_cov_agrees_with_monte_carlo():
    """Full cov (|ρ| up to 0.73): the exact value lies within 4 Monte Carlo SE of E_q[log p(y, w) − log q(w)]
    from 40,000 draws (a 4-SE band fails by chance with probability 6e-5). The test has power: the ELBO of
    the same q without its correlations differs from the full one by more than 6 SE (seen: 6.6), beyond
    what the band plus a typical 2-SE error would absorb."""
    x, y = _data()
    rng = np.random.default_rng(2)
    loc = rng.normal(0, 0.5, 4)
    a = rng.normal(size=(4, 4))
    cov = 0.05 * (a @ a.T + 0.1 * np.eye(4))
    exact = exact_elbo_gaussian(x, y, loc, cov)
    w = mvn(loc, cov).rvs(40_000, random_state=3)
    terms = loglik_sum(w, x, y) + log_prior(w) - mvn(loc, cov).logpdf(w)
    mc, se = terms.mean(), terms.std(ddof=1) / np.sqrt(terms.size)
    assert abs(exact - mc) < 4 * se
    assert abs(exact_elbo_gaussian(x, y, loc, np.diag(np.diag(cov))) - exact) > 6 * se
    with pytest.raises(ValueError, match="at least 32"):
        exact_elbo_gaussian(x, y, loc, cov, n_nodes=16)
    with pytest.raises(np.linalg.LinAlgError):
        exact_elbo_gaussian(x, y, loc, -cov)


# ---------------------------------------------------------------- Laplace


def test_laplace_without_data_is_the_prior():
    """No messages: the posterior is the prior N(0, s² I), Gaussian, so Laplace is exact (to rounding)."""
    lap = laplace(np.zeros((0, 3)), np.zeros(0), prior_scale=1.7)
    np.testing.assert_allclose(lap.loc, 0.0, atol=1e-14)
    np.testing.assert_allclose(lap.cov, 1.7**2 * np.eye(4), atol=1e-12)


def test_laplace_is_the_map_with_the_inverse_hessian():
    """The gradient vanishes at the MAP (≤ 1e-6), and cov is the inverse of a finite-difference Hessian of
    the log joint (central differences with h = 1e-4: error O(h²) relative ~1e-6; tolerance 1e-4)."""
    x, y = _data()
    lap = laplace(x, y, prior_scale=1.0)
    assert lap.grad_max < 1e-6

    def f(w: np.ndarray) -> float:
        return float(loglik_sum(w[None], x, y)[0] + log_prior(w[None])[0])

    d, h = lap.loc.size, 1e-4
    hess = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            ei, ej = np.eye(d)[i] * h, np.eye(d)[j] * h
            hess[i, j] = (f(lap.loc + ei + ej) - f(lap.loc + ei - ej) - f(lap.loc - ei + ej) + f(lap.loc - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(lap.cov, np.linalg.inv(-hess), rtol=1e-4, atol=1e-8)
    assert lap.log_joint == pytest.approx(f(lap.loc), abs=1e-9)


def test_laplace_matches_a_nearly_gaussian_posterior():
    """1,000 messages, bias + one term: the posterior is close to Gaussian. Against grid moments the
    Laplace mean is off by the mode–mean gap, O(1/√n) sd (we see ~0.03), the sds by O(1/n) (~0.1 %):
    tolerances 0.1 sd and 2 %."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 1))
    y = (rng.random(1000) < 1.0 / (1.0 + np.exp(1.0 - 1.5 * x[:, 0]))).astype(np.float64)
    lap = laplace(x, y)
    mean, cov = _grid_posterior(x, y, lap.loc, lap.scale)
    assert np.all(np.abs(mean - lap.loc) / lap.scale < 0.1)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), lap.scale, rtol=0.02)


# ---------------------------------------------------------------- PSIS resampling


@pytest.fixture(scope="module")
def posterior_2d():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 1))
    y = (rng.random(150) < 1.0 / (1.0 + np.exp(0.5 - 2.0 * x[:, 0]))).astype(np.float64)
    lap = laplace(x, y)
    mean, cov = _grid_posterior(x, y, lap.loc, lap.scale)
    return x, y, lap, mean, cov


def test_psis_resampling_recovers_the_posterior_from_a_close_q(posterior_2d):
    """q = Laplace with 1.3x its sds and shifted by 0.3 sd (150 messages: the posterior is mildly skewed).
    The resampled draws' means are within 4 MC SE (sd/√ESS) of the grid posterior's, their sds within
    4 relative SE (1/√(2 ESS)); k̂ < 0.5 (a wider q has bounded ratios) and the row is reliable."""
    x, y, lap, mean, cov = posterior_2d
    res = psis_resample(lap.loc + 0.3 * lap.scale, 1.69 * lap.cov, x, y, n_draws=4000, seed=6)
    assert res.reliable and res.warning is None and res.khat < 0.5
    assert res.draws.shape == (4000, 2) and 100 < res.ess <= 4000
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(res.draws.mean(axis=0) - mean) < 4 * sd / np.sqrt(res.ess))
    assert np.all(np.abs(res.draws.std(axis=0, ddof=1) / sd - 1) < 4 / np.sqrt(2 * res.ess))


def test_psis_resampling_flags_a_too_narrow_q(posterior_2d):
    """q with 0.2x the posterior sds: theory k = 1 − 0.04 = 0.96. One k̂ from 4000 draws has a heavy lower
    tail here (over 30 seeds: min 0.70, median 0.93), so the test takes the median over 5 seeds (> 0.7 fails
    only if 3 of 5 fall below, probability ~4e-4) and checks that every row's flag and warning follow its k̂."""
    x, y, lap, _, _ = posterior_2d
    results = [psis_resample(lap.loc, 0.04 * lap.cov, x, y, n_draws=4000, seed=s) for s in range(5)]
    assert np.median([r.khat for r in results]) > 0.7
    for r in results:
        assert r.reliable == (r.khat <= 0.7) and (r.warning == PSIS_WARNING) == (not r.reliable) and r.n_unique < 4000


# ---------------------------------------------------------------- comparisons by hand


def test_wasserstein_and_correlation_by_hand():
    """Equal-size samples: W1 = mean |sorted a − sorted b|; a constant shift δ gives W1 = δ exactly."""
    a = np.array([[0.0, 5.0], [1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])
    b = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    sd_b = b.std(axis=0, ddof=1)
    # column 0: sorted a = 0,1,2,3 vs 1,2,3,4 → 1; column 1: 1,2,3,5 vs 0,1,2,3 → (1+1+1+2)/4 = 1.25
    np.testing.assert_allclose(wasserstein_in_sd(a, b), np.array([1.0, 1.25]) / sd_b, rtol=1e-12)
    ref = np.random.default_rng(9).normal(size=(500, 3))
    np.testing.assert_allclose(wasserstein_in_sd(ref + 0.2, ref), 0.2 / ref.std(axis=0, ddof=1), rtol=1e-10)
    cov = np.array([[1.0, 0.1, -0.6], [0.1, 4.0, 0.2], [-0.6, 0.2, 1.0]])
    assert most_correlated(cov) == (0, 2, pytest.approx(-0.6))
    assert most_correlated(np.diag([1.0, 2.0, 3.0])) == (0, 1, 0.0)  # no correlation: the first pair, never (i, i)


def test_lppd_by_hand():
    """Two draws, two messages: mean_i log mean_s σ(±x̃_i · w_s) written out."""
    w = np.array([[0.0, 1.0], [1.0, -1.0]])
    x, y = np.array([[2.0], [-1.0]]), np.array([1.0, 0.0])
    z = w @ np.array([[1.0, 1.0], [2.0, -1.0]])
    p = np.exp(log_expit(z * np.array([1.0, -1.0])))
    assert lppd_per_message(w, x, y) == pytest.approx(np.mean(np.log(p.mean(axis=0))), abs=1e-14)


def test_leaderboard_columns_by_hand():
    """Gaussian rows use their exact sd and mean: sd ratio = √diag(cov) / sd_NUTS (ddof 1), mean shift =
    |loc − mean_NUTS| / sd_NUTS; the pair is NUTS's most correlated; given k̂ repeats are reused."""
    x, y = _data(n=120, k=2)
    rng = np.random.default_rng(10)
    nuts = rng.multivariate_normal([-1.0, 1.0, -0.3], [[0.04, -0.03, 0.0], [-0.03, 0.05, 0.0], [0.0, 0.0, 0.02]], size=(2, 400))
    flat = nuts.reshape(-1, 3)
    loc, cov = np.array([-0.9, 1.0, -0.3]), np.diag([0.01, 0.02, 0.02])
    given = {"median": 0.42, "min": 0.3, "max": 0.6, "values": [0.42], "n_draws": 200, "repeats": 1}
    draws = np.random.default_rng(11).normal(size=(200, 3)) * 0.1 + loc
    lb = leaderboard(x, y, x, y, {"q": {"loc": loc, "cov": cov, "seconds": 1.5, "kind": "fit", "khat": given},
                                  "d": {"draws": draws, "seconds": 2.0, "kind": "correction", "reliable": True}},
                     nuts_draws=nuts, nuts_seconds=9.0, n_draws=200, seed=0, coef_names=["b", "x1", "x2"])
    q, dr, nr = lb["rows"]
    assert lb["reference"] == "nuts" and lb["pair"] == [0, 1] and lb["pair_names"] == ["b", "x1"] and nr["key"] == "nuts"
    sd_n, m_n = flat.std(axis=0, ddof=1), flat.mean(axis=0)
    np.testing.assert_allclose(q["sd_ratio"], np.sqrt(np.diag(cov)) / sd_n, rtol=1e-12)
    assert q["sd_ratio_min"] == pytest.approx(min(q["sd_ratio"])) and q["sd_ratio_max"] == pytest.approx(max(q["sd_ratio"]))
    assert q["mean_shift_max_in_sd"] == pytest.approx(np.max(np.abs(loc - m_n) / sd_n), rel=1e-12)
    assert q["khat_median"] == 0.42 and q["khat_range"] == [0.3, 0.6] and q["khat_reading"] == "good"
    assert q["elbo"] == pytest.approx(exact_elbo_gaussian(x, y, loc, cov)) and q["pair_rho"] == 0.0 and q["seconds"] == 1.5
    np.testing.assert_allclose(dr["sd_ratio"], draws.std(axis=0, ddof=1) / sd_n, rtol=1e-12)
    np.testing.assert_allclose(dr["w1_in_sd"], wasserstein_in_sd(draws, flat), rtol=1e-12)
    assert dr["elbo"] is None and dr["khat_median"] is None and dr["reliable"] is True
    assert nr["seconds"] == 9.0 and nr["pair_rho"] == pytest.approx(np.corrcoef(flat, rowvar=False)[0, 1])
    assert 0.0 < lb["w1_floor_in_sd"] < 0.3


def test_leaderboard_without_nuts_takes_the_pair_from_laplace():
    """No NUTS: no comparison columns; the pair comes from the first "reference" row (Laplace here); k̂ is
    computed when not given (median within its own min–max)."""
    x, y = _data(n=200, k=3)
    lap = laplace(x, y)
    lb = leaderboard(x, y, x, y, {"mf": {"loc": lap.loc, "cov": np.diag(np.diag(lap.cov)), "seconds": 0.1, "kind": "fit"},
                                  "Laplace": {"loc": lap.loc, "cov": lap.cov, "seconds": 0.0, "kind": "reference"}},
                     n_draws=300, repeats=3, seed=1)
    i, j, rho = most_correlated(lap.cov)
    assert lb["reference"] is None and lb["pair"] == [i, j] and lb["pair_source"] == "Laplace"
    mf, lp = lb["rows"]
    assert "sd_ratio" not in mf and mf["pair_rho"] == 0.0 and lp["pair_rho"] == pytest.approx(rho)
    assert mf["khat_range"][0] <= mf["khat_median"] <= mf["khat_range"][1]
    assert lp["elbo"] > mf["elbo"]  # the full covariance is closer to the posterior in KL(q‖p)
    from pyro_spam.diagnostics.psis import khat_repeats

    again = khat_repeats(lambda w: loglik_sum(w, x, y), lap.loc, np.sqrt(np.diag(lap.cov)), cov=lap.cov,
                         n_draws=300, repeats=3, seed=1)
    assert lp["khat_pooled"] == again["pooled"] and lp["khat_pooled_draws"] == 900


def test_khat_draws_sets_the_size_of_each_khat_set():
    """``khat_draws`` changes only the k̂ sets (pooled over repeats × khat_draws draws, recomputed the same way),
    not the draws the other columns use."""
    from pyro_spam.diagnostics.psis import khat_repeats

    x, y = _data(n=200, k=3)
    lap = laplace(x, y)
    approx = {"Laplace": {"loc": lap.loc, "cov": lap.cov, "seconds": 0.0, "kind": "reference"}}
    small = leaderboard(x, y, x, y, approx, n_draws=300, repeats=3, seed=1)
    big = leaderboard(x, y, x, y, approx, n_draws=300, repeats=3, seed=1, khat_draws=1200)
    assert small["khat_draws"] == 300 and big["khat_draws"] == 1200 and big["n_draws"] == 300
    again = khat_repeats(lambda w: loglik_sum(w, x, y), lap.loc, np.sqrt(np.diag(lap.cov)), cov=lap.cov,
                         n_draws=1200, repeats=3, seed=1)
    row = big["rows"][0]
    assert row["khat_median"] == again["median"] and row["khat_pooled"] == again["pooled"] and row["khat_pooled_draws"] == 3600
    assert row["lppd_test_per_message"] == small["rows"][0]["lppd_test_per_message"] and row["sd"] == small["rows"][0]["sd"]


def test_fit_covariances_prefer_the_cholesky_factor_then_the_summary():
    """A fit's q: its Cholesky factor when it has one; else the summary's cov (a run read back from disk, whose
    guide files hold no factor); else diag(scale²)."""
    from pyro_spam.pipeline.guides import fit_covariances
    from pyro_spam.types import ElboHistory, FitResult

    e = np.zeros(0)
    L = np.array([[0.2, 0.0], [-0.1, 0.3]])

    def fit(scale_tril=None):
        return FitResult(elbo="meanfield", engine="svi", loc=np.zeros(2), scale=np.array([0.2, 0.5]), history=ElboHistory(e, e, e, e),
                         steps=1, seconds=0.0, stop_reason="converged", scale_tril=scale_tril)

    saved = [[0.04, -0.02], [-0.02, 0.1]]
    covs = fit_covariances({"a": fit(L), "b": fit(), "c": fit()}, {"a": {"cov": [[9.0, 0.0], [0.0, 9.0]]}, "b": {"cov": saved}})
    np.testing.assert_allclose(covs["a"], L @ L.T)
    np.testing.assert_allclose(covs["b"], saved)
    np.testing.assert_allclose(covs["c"], np.diag([0.04, 0.25]))


# ---------------------------------------------------------------- a run directory


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One small run (synthetic data, K = 2 terms, 300 draws)."""
    from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
    from pyro_spam.pipeline.run import run

    from .conftest import make_dataset

    tmp = tmp_path_factory.mktemp("guides")
    ds = make_dataset(n=400, dim=12, seed=2)
    data = tmp / "course.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    out = tmp / "run"
    run(RunConfig(data=str(data), features=FeatureConfig(components=2), train=TrainConfig(particles=8, max_steps=300),
                  num_draws=300), out)
    return out


ROWS = ["mean-field VI (trace ELBO)", "mean-field VI (meanfield ELBO)", "linear response (LRVB)", "mean-field + PSIS resampling",
        "full-rank Gaussian (exact optimum)", "Laplace at the MAP"]


@pytest.mark.slow
def test_run_writes_the_cheap_leaderboard(tiny_run):
    """Every run: the cheap rows, the pair, the figure and the report section; per_fit k̂ unchanged and reused."""
    s = json.loads((tiny_run / "summary.json").read_text())
    d = s["diagnostics"]
    lb = d["guides"]
    assert [r["name"] for r in lb["rows"]] == ROWS and lb["reference"] is None and lb["pair_source"] == "Laplace at the MAP"
    rows = {r["key"]: r for r in lb["rows"]}
    assert rows["fit:meanfield"]["khat"] == d["per_fit"]["meanfield"]["khat"]
    assert rows["fit:meanfield"]["khat_median"] == d["per_fit"]["meanfield"]["khat_median"]
    assert rows["lrvb"]["khat_median"] == d["linear_response"]["khat_median"]
    assert rows["fit:meanfield"]["lppd_test_per_message"] == pytest.approx(s["fits"]["meanfield"]["test"]["lppd_per_message"], abs=1e-12)
    assert rows["lrvb"]["lppd_test_per_message"] == pytest.approx(d["linear_response"]["lppd_test_per_message"], abs=1e-12)
    assert {"elbo", "khat_median", "khat_range", "pair_rho", "lppd_test_per_message", "seconds", "sd", "mean"} <= set(rows["laplace"])
    assert rows["psis"]["elbo"] is None and isinstance(rows["psis"]["reliable"], bool)
    assert "guides_pair.png" in d["figures"] and "guides_pair.png" in s["figures"]
    assert (tiny_run / "guides_pair.png").stat().st_size > 0 and d["seconds"]["guides"] > 0
    report = (tiny_run / "report.md").read_text()
    assert "Which approximation to trust?" in report and "guides_pair.png" in report and "--nuts" in report
    assert "Which approximation to trust?" in (tiny_run / "diagnostics.md").read_text()


@pytest.mark.slow
def test_diagnose_nuts_adds_the_nuts_columns(tiny_run, tmp_path):
    """diagnose --nuts: a NUTS row, sd ratios and W1 per coefficient, the pair from NUTS, the text on sds."""
    from pyro_spam.diagnostics.nuts import NutsOptions
    from pyro_spam.pipeline.diagnose import diagnose_run_dir

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    section = diagnose_run_dir(copy, nuts=True, options=NutsOptions(warmup=60, draws=80))
    lb = section["guides"]
    assert lb["reference"] == "nuts" and lb["pair_source"] == "NUTS" and lb["rows"][-1]["key"] == "nuts"
    for r in lb["rows"][:-1]:
        assert len(r["sd_ratio"]) == 3 and len(r["w1_in_sd"]) == 3 and r["w1_max_in_sd"] == max(r["w1_in_sd"])
    report = (copy / "report.md").read_text()
    assert "matches the marginal sds best" in report and "sd / NUTS sd" in report
    # against NUTS, k̂ comes from sets of REFERENCE_KHAT_DRAWS draws (the run's 1000-draw k̂s are not reused)
    from pyro_spam.pipeline.guides import REFERENCE_KHAT_DRAWS

    assert lb["khat_draws"] == REFERENCE_KHAT_DRAWS > lb["n_draws"]
    for r in lb["rows"][:-1]:
        if r["gaussian"] or r["key"] == "psis":
            assert r["khat_pooled_draws"] == 10 * REFERENCE_KHAT_DRAWS
    assert f"10 sets of {REFERENCE_KHAT_DRAWS:,} draws, and k̂ of all those draws pooled; sets of the run's {lb['n_draws']:,} draws" in report
