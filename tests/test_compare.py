"""The refitting studies on tiny synthetic data: sweeps, estimator variance, ``pyro-spam compare``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import f as f_dist

from pyro_spam import studies as C
from pyro_spam.cli import main
from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.crosscheck import pyro_same_noise
from pyro_spam.errors import PyroSpamError
from pyro_spam.evaluate import lppd_pointwise
from pyro_spam.features import build_features
from pyro_spam.pipeline.compare import COMPARE_FIGURES, format_compare_summary, run_compare
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


def test_pyro_gradient_matches_crosscheck_same_noise(data):
    """Our Pyro ELBO gradient (chain rule through log scale) equals crosscheck's direct constrained gradient."""
    _, fs = data
    x, y = torch.as_tensor(fs.X_train, dtype=torch.float64), torch.as_tensor(fs.y_train, dtype=torch.float64)
    loc, scale = torch.tensor([-1.0, 0.8, -0.3, 0.1], dtype=torch.float64), torch.tensor([0.2, 0.1, 0.3, 0.05], dtype=torch.float64)
    for kind in ("trace", "meanfield"):
        e, gl, gs = C._pyro_value_and_grad(kind, x, y, loc, scale, 4, 1.0, seed=11)
        ref = pyro_same_noise(kind, x, y, loc, scale, particles=4, seed=11)
        assert e == pytest.approx(ref.elbo, rel=1e-10)
        np.testing.assert_allclose(gl, ref.grad_loc.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(gs, ref.grad_scale.numpy(), rtol=1e-8, atol=1e-10)


def test_estimator_variance_known_structure(data):
    """Variances fall as 1/S; Pyro and the manual module have the same variance; paired ratios bracket 1 at the prior.

    Tolerances: with R = 40 replicates a variance ratio of two independent estimates follows
    F(39, 39); we accept its central 99.8 % range (about [0.37, 2.7]). For var(S=16)/var(S=1) the
    expected value is 1/16, so the same range scaled by 1/16.
    """
    _, fs = data
    reps = 40
    lo, hi = f_dist.ppf([0.001, 0.999], reps - 1, reps - 1)
    guides = {"prior": (np.zeros(4), np.ones(4))}
    out = C.estimator_variance(fs.X_train, fs.y_train, guides, (1, 16), reps, seed=0, n_boot=100)
    tab = {(r["estimator"], r["S"]): r for r in out["table"]}
    for lab, _, _ in C.ESTIMATORS:
        r = tab[(lab, 16)]["var_grad"] / tab[(lab, 1)]["var_grad"]
        assert lo / 16 < r < hi / 16, (lab, r)
    for pyro_lab, man_lab in (("Pyro Trace_ELBO", "manual MC KL"), ("Pyro TraceMeanField_ELBO", "manual analytic KL")):
        r = tab[(man_lab, 16)]["var_elbo"] / tab[(pyro_lab, 16)]["var_elbo"]
        assert lo < r < hi, (pyro_lab, r)
    assert len(out["ratios"]) == 4
    for r in out["ratios"]:
        assert r["grad_lo"] <= r["grad_ratio"] <= r["grad_hi"]
        assert 0.5 < r["grad_ratio"] < 2


def test_estimator_variance_same_seed_same_numbers(data):
    """Two runs with one seed give identical variances and ratios (timings aside)."""
    _, fs = data
    guides = {"g": (np.array([-1.0, 0.5, 0.0, 0.0]), np.full(4, 0.2))}
    a, b = (C.estimator_variance(fs.X_train, fs.y_train, guides, (1, 4), 6, seed=3, n_boot=20) for _ in range(2))
    strip = lambda t: [{k: v for k, v in r.items() if k != "ms_per_eval"} for r in t]  # noqa: E731
    assert strip(a["table"]) == strip(b["table"]) and a["ratios"] == b["ratios"]


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
    """compare adds both summary keys, four figures and a re-rendered report quoting the S = 64-style ratio."""
    s = run_compare(run_dir, settings=dataclasses.replace(TINY, est_S=(1, 4, 64), est_reps=8))
    assert {"compare", "estimators"} <= set(s)
    assert {"prior_sensitivity", "model_size", "settings", "seconds"} <= set(s["compare"])
    assert {"table", "ratios", "curves"} <= set(s["estimators"])
    assert len(s["estimators"]["curves"]) == 4
    for name in COMPARE_FIGURES + ("estimator_curves.npz",):
        assert (run_dir / name).stat().st_size > 0
    html = (run_dir / "report.html").read_text()
    assert "6. Prior sensitivity" in html and "Not computed yet" not in html
    r64 = next(r for r in s["estimators"]["ratios"] if r["guide"] == "fitted" and r["S"] == 64 and r["pair"] == "pyro")
    assert f"{r64['grad_ratio']:.3f}" in html
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["estimators"]["ratios"] == s["estimators"]["ratios"]
    print(format_compare_summary(s, run_dir))


def test_compare_bad_directory_is_a_user_error(tmp_path, capsys):
    """A directory without a run: PyroSpamError from Python, exit code 2 and one line from the CLI."""
    with pytest.raises(PyroSpamError, match="holds no pyro-spam run"):
        run_compare(tmp_path)
    assert main(["compare", str(tmp_path), "-q"]) == 2
    assert capsys.readouterr().err.startswith("pyro-spam: error:")
