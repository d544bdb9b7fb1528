"""The refitting studies and the estimator lab on tiny synthetic data: sweeps, estimator variance,
the mini-batch split, the STL floor, ``pyro-spam compare`` and its report section."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.stats import f as f_dist

from pyro_spam import estimator_lab as L
from pyro_spam import studies as C
from pyro_spam.cli import main
from pyro_spam.config import ELBO_TYPES, FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import PyroSpamError
from pyro_spam.evaluate import lppd_pointwise
from pyro_spam.features import build_features
from pyro_spam.pipeline.compare import COMPARE_FIGURES, SPLIT_FIGURE, format_compare_summary, run_compare
from pyro_spam.posterior import draw_weights, predict_draws

from .conftest import make_dataset

TINY = C.CompareSettings(
    sweep_particles=4, sweep_max_steps=150, sweep_window=25, sweep_draws=200, ks=(1, 2, 3),
    est_S=(1, 4), est_reps=12, curve_particles=4, curve_max_steps=60, bootstrap=50,
)


@pytest.fixture(scope="module")
def data():
    """Synthetic course-format data (n = 500, dim 12) and its K = 3 features (seed 0)."""
    ds = make_dataset(n=500, dim=12, seed=3)
    fs, _ = build_features(ds, FeatureConfig(components=3), seed=0)
    return ds, fs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny `pyro-spam run` directory, shared by the end-to-end tests (fitting is the slow part)."""
    from pyro_spam.pipeline.run import run

    tmp = tmp_path_factory.mktemp("cmp")
    ds = make_dataset(n=400, dim=10, seed=4)
    path = tmp / "d.npz"
    np.savez(path, X=ds.X, y=ds.y, msg=ds.msg)
    cfg = RunConfig(data=str(path), features=FeatureConfig(components=2),
                    train=TrainConfig(particles=8, max_steps=200, window=50), num_draws=300)
    out = tmp / "run"
    run(cfg, out)
    return out


def test_sweep_features_prefix_equals_smaller_k(data):
    """The first K columns of the k_max features equal the features built with K components (both kinds)."""
    ds, _ = data
    big = C.sweep_features(ds, FeatureConfig(components=3), 5, seed=0)
    for kind in ("polynomial", "linear"):
        small, _ = build_features(ds, FeatureConfig(components=3, kind=kind), seed=0)
        np.testing.assert_allclose(big[kind].X_train[:, :3], small.X_train, atol=1e-5)
        np.testing.assert_allclose(big[kind].X_test[:, :3], small.X_test, atol=1e-5)
        assert big[kind].names[:3] == small.names


def test_heldout_lppd_matches_direct_computation(data):
    """heldout_lppd is lppd_pointwise of the same draws, with SE = sd/sqrt(n)."""
    _, fs = data
    loc, scale = np.array([-1.0, 1.0, 0.2, 0.0]), np.full(4, 0.1)
    out = C.heldout_lppd(loc, scale, fs.X_test, fs.y_test, 300, seed=5)
    pw = lppd_pointwise(predict_draws(draw_weights(loc, scale, 300, 5), fs.X_test, fs.y_test).loglik)
    assert out["lppd"] == pytest.approx(pw.mean())
    assert out["se"] == pytest.approx(pw.std(ddof=1) / math.sqrt(pw.size))


def test_prior_sensitivity_tight_prior_shrinks(data):
    """A prior sd of 0.01 pulls every weight to ~0 and predicts worse than sd 1 on data with a strong signal."""
    _, fs = data
    s = dataclasses.replace(TINY, prior_scales=(0.01, 1.0))
    out = C.prior_sensitivity(fs.X_train, fs.y_train, fs.X_test, fs.y_test, TrainConfig(seed=1), s)
    tight, one = out["rows"]
    assert np.max(np.abs(tight["loc"])) < 0.1 < np.max(np.abs(one["loc"]))
    assert tight["lppd"] < one["lppd"] and out["best"] == 1.0
    assert one["diff_vs_1"] == 0.0 and tight["diff_vs_1"] < -2 * tight["diff_se"]


def test_model_size_sweep_k1_kinds_coincide(data):
    """At K = 1 polynomial and linear features are the same column, so the fits and lppd are identical."""
    ds, _ = data
    out = C.model_size_sweep(ds, FeatureConfig(components=3), TrainConfig(seed=2), TINY)
    assert out["ks"] == [1, 2, 3]
    p, li = out["kinds"]["polynomial"], out["kinds"]["linear"]
    assert p["lppd"][0] == pytest.approx(li["lppd"][0], abs=1e-9)
    assert p["best_k"] in (1, 2, 3) and p["one_se_k"] <= p["best_k"]
    assert all(x > out["intercept_only"] for x in p["lppd"])


def test_estimator_variance_known_structure(data):
    """Variances fall as 1/S; quad has none; rqmc only at powers of two; meanfield's loc-gradient
    variance is trace's; the unbiased estimators' mean gradient is the exact one; ratios bracket their CI.

    Tolerances: with R = 40 replicates a variance ratio of two independent estimates follows
    F(39, 39); we accept its central 99.8 % range (about [0.37, 2.7]), scaled by 1/16 for
    var(S=16)/var(S=1), whose expected value is 1/16.
    """
    _, fs = data
    reps = 40
    lo, hi = f_dist.ppf([0.001, 0.999], reps - 1, reps - 1)
    guides = {"prior": (np.zeros(4), np.ones(4))}
    out = L.estimator_variance(fs.X_train, fs.y_train, guides, (1, 6, 16), reps, seed=0, n_boot=100)
    tab = {(r["estimator"], r["S"]): r for r in out["table"]}
    assert out["estimators"] == list(L.ESTIMATORS) and out["S"] == [1, 6, 16] and out["reps"] == reps
    assert ("rqmc", 6) not in tab and ("rqmc", 16) in tab  # Sobol points only at powers of two
    for kind in ("trace", "meanfield", "stl", "score"):
        for key in ("grad_var_loc", "grad_var_log_scale"):
            r = tab[(kind, 16)][key] / tab[(kind, 1)][key]
            assert lo / 16 < r < hi / 16, (kind, key, r)
    for S in (1, 6, 16):
        q = tab[("quad", S)]
        assert q["grad_var_loc"] == q["grad_var_log_scale"] == q["elbo_sd"] == 0.0
        assert tab[("stl", S)]["elbo_sd"] == pytest.approx(tab[("trace", S)]["elbo_sd"], rel=1e-6)  # same ε, same estimate
        assert len(tab[("trace", S)]["grad_var_loc_per"]) == 4
    for kind in ("trace", "meanfield", "stl", "score"):
        assert tab[(kind, 16)]["bias_z_max"] < 5, kind  # |mean − exact| / SE over 8 coordinates
    assert out["exact"]["prior"]["elbo"] < 0 and len(out["exact"]["prior"]["grad_loc"]) == 4
    assert tab[("score_nobaseline", 16)]["grad_var_loc"] > 2 * tab[("score", 16)]["grad_var_loc"]  # the baseline helps
    rat = {(r["estimator"], r["S"]): r for r in out["ratios"]}
    assert ("trace", 1) not in rat and rat[("meanfield", 16)]["vs"] == "trace"
    assert 0.5 < rat[("meanfield", 16)]["loc_ratio"] < 2
    for r in out["ratios"]:
        if r["estimator"] != "quad":
            for what in ("loc", "log_scale", "elbo"):
                assert r[f"{what}_lo"] <= r[f"{what}_ratio"] <= r[f"{what}_hi"], (r["estimator"], r["S"], what)


def test_estimator_variance_same_seed_same_numbers(data):
    """Two runs with one seed give identical variances and ratios (timings aside)."""
    _, fs = data
    guides = {"g": (np.array([-1.0, 0.5, 0.0, 0.0]), np.full(4, 0.2))}
    a, b = (L.estimator_variance(fs.X_train, fs.y_train, guides, (1, 4), 6, seed=3, n_boot=20) for _ in range(2))
    strip = lambda t: [{k: v for k, v in r.items() if k != "ms_per_step"} for r in t]  # noqa: E731
    assert strip(a["table"]) == strip(b["table"]) and a["ratios"] == b["ratios"]


def test_stl_floor_two_coefficients_is_rho_squared_over_one_plus_rho_squared(data):
    """With two coefficients at the Gaussian mean-field optimum (scale² = 1/Λ_jj) the predicted STL ÷ trace
    loc-gradient variance ratio is ρ²/(1 + ρ²) for both, ρ the posterior correlation."""
    _, fs = data
    x, y = fs.X_train[:, :1].astype(np.float64), fs.y_train
    loc = np.array([-1.0, 1.2])
    xt = np.c_[np.ones(len(x)), x]
    p = 1 / (1 + np.exp(-(xt @ loc)))
    lam = (xt * (p * (1 - p))[:, None]).T @ xt + np.eye(2)
    rho = -lam[0, 1] / np.sqrt(lam[0, 0] * lam[1, 1])  # correlation of Λ⁻¹ in two dimensions
    out = L.stl_floor(x, y, loc, 1 / np.sqrt(np.diag(lam)))
    np.testing.assert_allclose(out["loc_ratio_per"], [rho**2 / (1 + rho**2)] * 2, rtol=1e-10)
    assert out["corr"] == pytest.approx(rho) and out["max_abs_corr"] == pytest.approx(abs(rho)) and out["corr_pair"] == [0, 1]


def test_minibatch_split_adds_up(data):
    """Monte Carlo + subsampling ≈ total; quad has no Monte Carlo part; shares lie in [0, 1]; a batch of N is refused."""
    _, fs = data
    x, y = fs.X_train, fs.y_train
    loc, scale = L.optimum(x, y)
    out = L.minibatch_split(x, y, loc, scale, 40, (1, 8), 24, estimators=("trace", "rqmc", "quad"), seed=1)
    assert (out["batch_size"], out["n"], out["reps"]) == (40, len(y), 24)
    rows = {(r["estimator"], r["S"]): r for r in out["rows"]}
    assert set(rows) == {(k, s) for k in ("trace", "rqmc", "quad") for s in (1, 8)}
    for (kind, _), r in rows.items():
        for what in ("loc", "log_scale"):
            assert 0 <= r[f"subsampling_share_{what}"] <= 1
            parts = r[f"mc_{what}"] + r[f"subsampling_{what}"]
            assert 0.3 < parts / r[f"total_{what}"] < 3, (kind, what)  # two estimates of one variance, 24 replicates
        if kind == "quad":
            assert r["mc_loc"] == r["mc_log_scale"] == 0 and r["subsampling_share_loc"] == 1
    with pytest.raises(ValueError, match="batch_size"):
        L.minibatch_split(x, y, loc, scale, len(y), (1,), 4)


def test_run_writes_evaluation_and_report(run_dir):
    """`pyro-spam run` itself adds evaluations 1–5, their figures, predictive_test.npz and the report."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert {"weights", "uncertainty", "calibration", "selective", "qualitative", "fit"} <= set(s["evaluation"])
    for name in ("eval_weights.png", "eval_uncertainty.png", "eval_calibration.png", "eval_selective.png", "eval_examples.png"):
        assert name in s["figures"] and (run_dir / name).stat().st_size > 0
    with np.load(run_dir / "predictive_test.npz") as z:
        assert z["p_mean"].shape == (s["data"]["n_test"],)
    html = (run_dir / "report.html").read_text()
    assert "pyro-spam compare" in html and html.count("data:image/png;base64,") >= 7


def test_run_compare_end_to_end(run_dir):
    """compare adds both summary keys, the lab's tables and runs, the figures and a re-rendered report; a
    full-batch run gets no mini-batch split unless asked."""
    s = run_compare(run_dir, settings=dataclasses.replace(TINY, est_S=(1, 4, 64), est_reps=8))
    assert {"compare", "estimators"} <= set(s)
    assert {"prior_sensitivity", "model_size", "settings", "seconds", "figures"} <= set(s["compare"])
    est = s["estimators"]
    assert {"table", "ratios", "exact", "stl_floor", "optimum", "runs", "run_config", "guides", "reach"} <= set(est)
    assert est["minibatch_split"] is None and SPLIT_FIGURE not in s["compare"]["figures"]
    assert list(est["runs"]) == list(ELBO_TYPES) and est["reach"] == {"loc_sd": L.REACH_LOC_SD, "scale_rel": L.REACH_SCALE_REL}
    for name in COMPARE_FIGURES + ("estimator_curves.npz",):
        assert (run_dir / name).stat().st_size > 0
    with np.load(run_dir / "estimator_curves.npz") as z:
        assert [str(v) for v in z["labels"]] == list(est["runs"])
        assert z["elbo_0"].size == est["runs"][str(z["labels"][0])]["steps"]
    html = (run_dir / "report.html").read_text()
    assert "6. Prior sensitivity" in html and "Not computed yet" not in html
    r64 = next(r for r in est["ratios"] if r["guide"] == "fitted" and r["S"] == 64 and r["estimator"] == "rqmc")
    assert f"{r64['loc_ratio']:.3g}" in html
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["estimators"]["ratios"] == est["ratios"]
    print(format_compare_summary(s, run_dir))


def test_run_compare_with_batch_size_writes_the_split_and_report(run_dir):
    """``batch_size=B``: the Monte Carlo / subsampling split and its figure; the report has the ranking
    table, the STL floor sentence with the correlated pair, and the subsampling share at B."""
    s = run_compare(run_dir, settings=dataclasses.replace(TINY, est_S=(1, 16), est_reps=6, ks=(1, 2)), batch_size=50)
    est = s["estimators"]
    sp = est["minibatch_split"]
    assert sp["batch_size"] == 50 and sp["n"] == s["data"]["n_train"] and sp["reps"] == 6
    assert {(r["estimator"], r["S"]) for r in sp["rows"]} >= {("trace", 1), ("quad", 16), ("rqmc", 16)}
    assert SPLIT_FIGURE in s["compare"]["figures"] and SPLIT_FIGURE in s["figures"]
    assert (run_dir / SPLIT_FIGURE).stat().st_size > 0
    md = (run_dir / "report.md").read_text()
    assert "| S | rank | estimator | Var ∂/∂loc | ÷ trace [95 % CI] |" in md
    fl = est["stl_floor"]
    names = est["coef_names"]
    i, j = fl["corr_pair"]
    assert "**Sticking the landing" in md and "predicted floor" in md
    assert f"`{names[i]}` and `{names[j]}` have correlation ρ = {fl['corr']:.2f}" in md
    assert f"ρ²/(1 + ρ²) = {fl['corr'] ** 2 / (1 + fl['corr'] ** 2):.2f}" in md
    tr16 = next(r for r in sp["rows"] if r["estimator"] == "trace" and r["S"] == 16)
    assert f"subsampling makes up {100 * tr16['subsampling_share_loc']:.1f} % of `trace`'s loc-gradient variance at S = 16" in md
    assert "(estimators_minibatch_split.png)" in md and "(estimators_training.png)" in md
    assert "IWAE is a different objective" in md and "Score function." in md and "--batch-size 50" in md


def test_compare_bad_directory_is_a_user_error(tmp_path, capsys):
    """A directory without a run: PyroSpamError from Python, exit code 2 and one line from the CLI."""
    with pytest.raises(PyroSpamError, match=r"is not a pyro-spam run directory \(no summary.json\); make one with"):
        run_compare(tmp_path)
    assert main(["compare", str(tmp_path), "-q"]) == 2
    assert capsys.readouterr().err.startswith("pyro-spam: error:")
