"""PSIS k̂ of q against a conjugate toy with a known posterior, LOO, NUTS against quadrature, VI-vs-NUTS."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal as mvn
from scipy.stats import norm

from pyro_spam.api import load_inference_data
from pyro_spam.diagnostics.nuts import NutsOptions, compare_vi_nuts, comparison_verdict, run_nuts
from pyro_spam.diagnostics.psis import gaussian_khat, khat_reading, log_prior, log_q, loo_summary, pareto_khat, vi_khat
from pyro_spam.errors import ConfigError, ModelFileError
from pyro_spam.inference_data import load_netcdf, to_inference_data
from pyro_spam.model import model
from pyro_spam.pipeline.diagnose import diagnose_run_dir
from pyro_spam.posterior import draw_weights, predict_draws
from pyro_spam.types import ElboHistory, FitResult

S = 4000


# ---------------------------------------------------------------- conjugate toy
# y = X β + ε, ε ~ N(0, 1), β ~ N(0, I₂): the posterior is N(m, Σ) exactly, with correlated
# coefficients (ρ ≈ −0.81), like the bias and the strongest term of the spam model.


def _toy(seed: int = 0, n: int = 20):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    X[:, 1] += 0.8 * X[:, 0]
    y = X @ np.array([0.7, -0.4]) + rng.normal(size=n)
    cov = np.linalg.inv(np.eye(2) + X.T @ X)
    return X, y, cov @ X.T @ y, cov


def _loglik(b, X, y):
    """Pointwise Gaussian log-likelihood, shape (n_draws, n)."""
    return norm.logpdf(y[None, :], b @ X.T, 1.0)


def _log_joint(b, X, y):
    return _loglik(b, X, y).sum(axis=1) + log_prior(b)


def _khat_of(q_mean, q_cov, seed):
    X, y, _, _ = _toy()
    q = mvn(q_mean, q_cov)
    b = q.rvs(S, random_state=seed)
    return pareto_khat(_log_joint(b, X, y), q.logpdf(b))[0]


def test_khat_good_when_q_is_the_exact_posterior():
    """q = the exact posterior: the ratios are constant (the evidence), k̂ = −inf, read as good."""
    _, _, m, cov = _toy()
    k = _khat_of(m, cov, seed=1)
    assert k < 0.5 and khat_reading(k) == "good"


def test_khat_good_when_q_is_wider():
    """q 1.5x wider than the posterior: bounded ratios (theory k ≤ 0); k̂ < 0.5 has a 0.5+ margin."""
    _, _, m, cov = _toy()
    assert _khat_of(m, 2.25 * cov, seed=2) < 0.5


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_khat_large_when_q_is_much_too_narrow(seed):
    """q with 0.3x the posterior sd: theory k = 1 − 0.3² = 0.91; k̂ > 0.7 (S = 4000; over 10 seeds
    we saw 0.78–1.22, so the threshold leaves a margin of the k̂ sampling spread)."""
    _, _, m, cov = _toy()
    k = _khat_of(m, 0.09 * cov, seed=seed)
    assert k > 0.7 and khat_reading(k) == "unreliable"


def test_khat_large_when_q_is_shifted():
    """q shifted by 3 sd in each coordinate: log-normal ratios with a huge variance, k̂ > 0.7."""
    _, _, m, cov = _toy()
    assert _khat_of(m + 3 * np.sqrt(np.diag(cov)), cov, seed=6) > 0.7


def test_gaussian_theory_of_k():
    """gaussian_khat: 1 − s² for q narrower by s; ≤ 0 for a wider q; |ρ| for the mean-field optimum."""
    _, _, _, cov = _toy()
    sd = np.sqrt(np.diag(cov))
    rho = cov[0, 1] / (sd[0] * sd[1])
    assert gaussian_khat(np.diag(sd**2), 0.3 * sd) == pytest.approx(0.91)
    assert gaussian_khat(cov, 3 * sd) <= 0
    # Mean-field KL(q‖p) optimum: q's variances are the inverse diagonal of the precision.
    assert gaussian_khat(cov, 1 / np.sqrt(np.diag(np.linalg.inv(cov)))) == pytest.approx(abs(rho))


def test_reweighting_corrects_a_shifted_wide_q():
    """A mean-field q 0.5 sd off and 1.5x wide has k̂ < 0.5, and PSIS reweighting moves its mean onto the
    exact one (tolerance: 4 Monte Carlo standard errors, sd / √ESS)."""
    X, y, m, cov = _toy()
    sd = np.sqrt(np.diag(cov))
    loc, scale = m + 0.5 * sd, 1.5 * sd
    w = loc + scale * np.random.default_rng(7).normal(size=(S, 2))
    res = vi_khat(w, _loglik(w, X, y), loc, scale)
    assert res.khat < 0.5 and res.mean_is is not None
    assert np.all(np.abs(res.mean_is - m) < 4 * sd / np.sqrt(res.ess))
    assert np.all(np.abs(res.mean_q - m) > 0.4 * sd)  # the unweighted mean is visibly off
    assert np.all(np.abs(res.sd_is / sd - 1) < 0.1)  # 10 %: ≈ 4 standard errors of an sd at ESS ≈ 1500


def test_no_reweighted_means_when_unreliable():
    """Beyond k̂ = 0.7 the reweighted moments are withheld (None), not reported."""
    X, y, m, cov = _toy()
    sd = np.sqrt(np.diag(cov))
    w = m + 0.2 * sd * np.random.default_rng(8).normal(size=(S, 2))
    res = vi_khat(w, _loglik(w, X, y), m, 0.2 * sd)
    assert res.reading == "unreliable" and res.mean_is is None and res.to_dict(["a", "b"])["reweighted"] is None


def test_khat_readings_and_bad_input():
    """The usual thresholds; NaN reads unreliable; non-finite log ratios raise."""
    assert [khat_reading(k) for k in (-np.inf, 0.3, 0.5, 0.69, 0.7, 1.3, np.nan)] == [
        "good", "good", "usable", "usable", "unreliable", "unreliable", "unreliable"]
    with pytest.raises(ValueError, match="finite"):
        pareto_khat(np.array([0.0, np.nan, 1.0]), np.zeros(3))


def test_log_joint_matches_the_pyro_model():
    """vi_khat's log p(w, y) and log q(w) equal Pyro's traces of the model and the guide (float64, 1e-9)."""
    from pyro_spam.guide import make_guide

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = (rng.random(40) < 0.3).astype(np.float64)
    loc, scale = np.array([-1.0, 0.5, 0.2, -0.3]), np.array([0.3, 0.2, 0.4, 0.1])
    w = draw_weights(loc, scale, 5, seed=1)
    ll = predict_draws(w, x, y).loglik
    ours_p = ll.sum(axis=1) + log_prior(w, 2.0)
    ours_q = log_q(w, loc, scale)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    guide = make_guide(init_loc=torch.as_tensor(loc), init_scale_vec=torch.as_tensor(scale))
    for s in range(5):
        pyro.clear_param_store()
        cond = {"w": torch.as_tensor(w[s])}
        mt = poutine.trace(poutine.condition(model, data=cond)).get_trace(xt, yt, None, 2.0)
        gt = poutine.trace(poutine.condition(guide, data=cond)).get_trace(xt, yt, None, 2.0)
        assert mt.log_prob_sum().item() == pytest.approx(ours_p[s], rel=1e-9)
        assert gt.log_prob_sum().detach().item() == pytest.approx(ours_q[s], rel=1e-9)


# ---------------------------------------------------------------- LOO


def _logistic_idata(n: int = 80, draws: int = 500, outlier: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 2.0 * x[:, 0])))).astype(np.float32)
    if outlier:  # one extreme, mislabelled message: its LOO posterior differs from the full one
        x[0, 0], y[0] = 6.0, 0.0
    loc, scale = np.array([-0.5, 2.0]), np.array([0.3, 0.4])
    w = draw_weights(loc, scale, draws, seed=seed)
    fit = FitResult("meanfield", "svi", loc, scale, ElboHistory(*(np.zeros(1) for _ in range(4))), 1, 0.0, "converged")
    return to_inference_data(fit, ("w0 (bias)", "x1"), x, y, x[:10], y[:10], predict_draws(w, x, y),
                             predict_draws(w, x[:10], y[:10]), seed=seed)


def test_loo_summary_numbers_are_consistent():
    """elpd_loo = lppd − p_loo, per-message elpd = elpd / n, and the Pareto-k counts add up to n."""
    from pyro_spam.evaluate import lppd_pointwise

    idata = _logistic_idata()
    out = loo_summary(idata)
    lppd = lppd_pointwise(idata.log_likelihood["y"].values[0].astype(np.float64)).sum()
    assert out["elpd"] == pytest.approx(lppd - out["p_loo"], abs=1e-3)
    assert out["elpd_per_message"] == pytest.approx(out["elpd"] / 80)
    assert sum(out["pareto_k_counts"].values()) == 80 and out["n_draws"] == 500
    assert json.dumps(out)


def test_loo_warning_is_surfaced_not_raised():
    """An influential outlier gives k > good_k: the warning is returned (pytest turns warnings into errors)."""
    out = loo_summary(_logistic_idata(outlier=True))
    assert out["warning"] and out["k_max"] > out["good_k"]
    assert any("Pareto" in m for m in out["warning_messages"])


# ---------------------------------------------------------------- NUTS


def _posterior_by_quadrature(x, y, half_width=1.5, n_grid=301):
    """Exact posterior mean and sd of (w0, w1) for the 1-term logistic model on a fine grid."""
    g0 = np.linspace(-1.0 - half_width, -1.0 + half_width, n_grid)
    g1 = np.linspace(1.5 - half_width, 1.5 + half_width, n_grid)
    W0, W1 = np.meshgrid(g0, g1, indexing="ij")
    w = np.stack([W0.ravel(), W1.ravel()], axis=1)
    z = w[:, :1] + w[:, 1:] * x[None, :, 0]
    lp = -np.logaddexp(0, np.where(y[None, :] > 0, -z, z)).sum(axis=1) + log_prior(w)
    p = np.exp(lp - logsumexp(lp))
    mean = p @ w
    return mean, np.sqrt(p @ (w - mean) ** 2)


@pytest.fixture(scope="module")
def nuts_toy():
    """NUTS on a small logistic problem (K=1, n=150): 2 chains × (150 warmup + 300 draws), a few seconds."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(150, 1))
    y = (rng.random(150) < 1 / (1 + np.exp(-(-1.0 + 1.5 * x[:, 0])))).astype(np.float64)
    res = run_nuts(x, y, options=NutsOptions(chains=2, warmup=150, draws=300), seed=3)
    return x, y, res


@pytest.mark.slow
def test_nuts_matches_quadrature(nuts_toy):
    """NUTS means within 4 MCSE (sd/√ESS) and sds within 4 standard errors (sd·/√(2 ESS)) of the exact
    posterior from a 301² grid; r̂ < 1.05 for 600 draws; no divergences."""
    import arviz as az

    x, y, res = nuts_toy
    assert res.samples.shape == (2, 300, 2) and res.diverging.sum() == 0
    mean, sd = _posterior_by_quadrature(x, y)
    for j in range(2):
        ess = float(az.ess(res.samples[..., j]))
        assert float(az.rhat(res.samples[..., j])) < 1.05
        flat = res.samples[..., j].ravel()
        assert abs(flat.mean() - mean[j]) < 4 * sd[j] / np.sqrt(ess)
        assert abs(flat.std(ddof=1) - sd[j]) < 4 * sd[j] / np.sqrt(2 * ess)


@pytest.mark.slow
def test_nuts_is_reproducible(nuts_toy):
    """Same seed, same chains (first 20 draws of a shorter run started identically agree exactly)."""
    x, y, _ = nuts_toy
    opts = NutsOptions(chains=2, warmup=20, draws=20, jit=False)
    a = run_nuts(x, y, options=opts, seed=9).samples
    b = run_nuts(x, y, options=opts, seed=9).samples
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # chains differ (seeds 9 and 10)


def test_nuts_options_are_validated():
    """Fewer than 2 chains or non-positive budgets are ConfigErrors (one clear message)."""
    with pytest.raises(ConfigError, match="2 chains"):
        NutsOptions(chains=1)
    with pytest.raises(ConfigError, match="draws"):
        NutsOptions(draws=0)


def test_compare_vi_nuts_by_hand():
    """The comparison rows: means, sds, |Δmean|/sd_NUTS and sd ratio as defined, per name."""
    rng = np.random.default_rng(0)
    nuts = rng.normal(size=(2, 2000, 2)) * np.array([1.0, 2.0]) + np.array([0.0, 1.0])
    vi = rng.normal(size=(1000, 2))
    rows = compare_vi_nuts(vi, nuts, ["a", "b"], loc=np.array([0.5, 1.0]), scale=np.array([0.5, 2.0]))
    flat = nuts.reshape(-1, 2)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["mean_shift_in_sd"] == pytest.approx(abs(0.5 - flat[:, 0].mean()) / flat[:, 0].std(ddof=1))
    assert rows[1]["sd_ratio"] == pytest.approx(2.0 / flat[:, 1].std(ddof=1))
    assert rows[0]["sd_vi"] == 0.5 and rows[0]["mean_nuts"] == pytest.approx(flat[:, 0].mean())
    text = comparison_verdict(rows)
    assert "narrower than NUTS for 1 of 2" in text and "for a" in text


# ---------------------------------------------------------------- run directory


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One small run (synthetic data, short training, 300 draws) shared by the run-directory tests."""
    from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
    from pyro_spam.pipeline.run import run

    from .conftest import make_dataset

    tmp = tmp_path_factory.mktemp("diag")
    ds = make_dataset(n=400, dim=12, seed=2)
    data = tmp / "course.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    cfg = RunConfig(data=str(data), features=FeatureConfig(components=2),
                    train=TrainConfig(particles=8, max_steps=300), num_draws=300)
    out = tmp / "run"
    run(cfg, out)
    return out


@pytest.mark.slow
def test_run_stage_writes_inference_data_and_diagnostics(small_run):
    """Every run: posterior_<elbo>.nc (all groups), k̂, LOO, az.summary tables and the ArviZ figures."""
    import arviz as az

    s = json.loads((small_run / "summary.json").read_text())
    d = s["diagnostics"]
    assert d["primary"] == "meanfield" and set(d["per_fit"]) == {"trace", "meanfield"}
    assert {"elpd", "se", "p_loo", "warning"} <= set(d["loo"]) and d["khat_reading"] in ("good", "usable", "unreliable")
    for kind in ("trace", "meanfield"):
        idata = load_inference_data(small_run / f"posterior_{kind}.nc")  # the file omits log_likelihood: rebuilt
        assert {"posterior", "prior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data"} <= set(idata.groups())
        # the rebuilt log-likelihood is the run's: ArviZ's LOO from the file equals summary.json's
        assert az.loo(idata).elpd_loo == pytest.approx(d["per_fit"][kind]["loo"]["elpd"], rel=1e-12)
        assert idata.posterior["w"].shape == (1, 300, 3)
        assert "w0 (bias)" in (small_run / f"az_summary_{kind}.md").read_text()
    for name in d["figures"] + d["files"]:
        assert (small_run / name).stat().st_size > 0
    assert set(d["figures"]) <= set(s["figures"])


@pytest.mark.slow
def test_diagnose_regenerates_the_same_draws(small_run, tmp_path):
    """diagnose on a run without the ArviZ files rebuilds them from guide + features: same draws, same k̂."""
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    for p in copy.glob("posterior_*.nc"):
        p.unlink()
    s = json.loads((copy / "summary.json").read_text())
    del s["diagnostics"]
    (copy / "summary.json").write_text(json.dumps(s))
    section = diagnose_run_dir(copy)
    a, b = load_netcdf(small_run / "posterior_meanfield.nc"), load_netcdf(copy / "posterior_meanfield.nc")
    np.testing.assert_array_equal(a.posterior["w"].values, b.posterior["w"].values)
    np.testing.assert_array_equal(a.posterior_predictive["y"].values, b.posterior_predictive["y"].values)
    old = json.loads((small_run / "summary.json").read_text())["diagnostics"]
    assert section["khat"] == old["khat"] and section["loo"]["elpd"] == old["loo"]["elpd"]


@pytest.mark.slow
def test_diagnose_replaces_an_unreadable_netcdf(small_run, tmp_path):
    """A corrupt posterior_<elbo>.nc is recomputed (not a crash); the rebuilt file reads back."""
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    (copy / "posterior_trace.nc").write_bytes(b"garbage")
    diagnose_run_dir(copy)
    assert load_netcdf(copy / "posterior_trace.nc").posterior["w"].shape == (1, 300, 3)


@pytest.mark.slow
def test_cli_diagnose_with_nuts(small_run, tmp_path, capsys):
    """`pyro-spam diagnose RUN --nuts` adds nuts.nc, r̂/ESS and the VI-vs-NUTS table; no staging left."""
    from pyro_spam.cli import main

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    code = main(["diagnose", str(copy), "--nuts", "--warmup", "60", "--nuts-draws", "80", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "r̂ max" in out and "w0 (bias)" in out
    n = json.loads((copy / "summary.json").read_text())["diagnostics"]["nuts"]
    assert {"rhat_max", "ess_bulk_min", "per_coef"} <= set(n)
    assert [r["name"] for r in n["per_coef"]] == ["w0 (bias)", "x1", "x2^2"]
    assert {"name", "mean_vi", "mean_nuts", "sd_vi", "sd_nuts"} <= set(n["per_coef"][0])
    assert load_netcdf(copy / "nuts.nc").posterior["w"].shape == (2, 80, 3)
    for name in n["files"]:
        assert (copy / name).is_file()
    assert not list(copy.glob(".diagnose-*"))


def test_diagnose_refuses_a_non_run(tmp_path, capsys):
    """A folder without summary.json: exit 2 with one message."""
    from pyro_spam.cli import main

    assert main(["diagnose", str(tmp_path)]) == 2
    assert "not a pyro-spam run directory" in capsys.readouterr().err
    with pytest.raises(ModelFileError):
        diagnose_run_dir(tmp_path)
