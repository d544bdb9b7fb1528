"""report.md / report.html: self-contained, every optional section, numbers quoted from the summary."""

from __future__ import annotations

import base64
import copy
import functools
import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.special import expit

from pyro_spam import report as R
from pyro_spam.evaluate import advanced_evaluation
from pyro_spam.io.rundir import save_figure, to_jsonable, write_json
from pyro_spam.report.document import pct

FIGS = ("elbo_history.png", "weights.png", "eval_weights.png", "eval_uncertainty.png", "eval_calibration.png",
        "eval_selective.png", "eval_examples.png")


@functools.cache
def _lab() -> dict:
    """``summary["estimators"]`` as ``compare`` writes it, from the estimator lab on tiny synthetic data
    (few replicates, small S; the training runs are stand-ins: fitting is not what this file tests)."""
    from pyro_spam import estimator_lab as L

    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 2))
    x[:, 1] += 0.8 * x[:, 0]  # correlated coefficients: a visible STL floor
    y = (rng.uniform(size=300) < expit(-1.0 + x @ np.array([1.5, -0.5]))).astype(float)
    loc, scale = L.optimum(x, y)
    est = L.estimator_variance(x, y, {"initial": (np.zeros(3), np.full(3, 0.1)), "fitted": (loc, scale)}, (1, 16, 64), 8,
                               n_boot=50)
    est.update(fitted_from="exact optimum (L-BFGS on the quadrature ELBO)", stl_floor=L.stl_floor(x, y, loc, scale),
               coef_names=["w0 (bias)", "x1", "x2^2"], minibatch_split=L.minibatch_split(x, y, loc, scale, 30, (1, 16, 64), 8),
               optimum={"loc": loc, "scale": scale}, reach={"loc_sd": L.REACH_LOC_SD, "scale_rel": L.REACH_SCALE_REL},
               run_config={"optimizer": "adam", "engine": "svi", "particles": 16, "max_steps": 400, "lr": 0.1, "batch_size": None,
                           "stop": "iterates", "seed": 0})
    est["runs"] = {k: {"steps": 200 if k in ("quad", "rqmc") else 400, "seconds": 1.0 + i, "ms_per_step": 5.0, "particles": 16,
                       "stop_reason": "converged" if k in ("quad", "rqmc") else "budget", "loc": loc, "scale": scale * (3 if k == "iwae" else 1),
                       "dist_loc_sd": 0.9 if k == "iwae" else 0.01, "dist_scale_rel": 2.0 if k == "iwae" else 0.01, "reached": k != "iwae"}
                   for i, k in enumerate(("trace", "meanfield", "stl", "rqmc", "quad", "iwae", "score"))}
    return json.loads(json.dumps(to_jsonable(est)))


def _summary(with_compare: bool = False) -> dict:
    """A summary with the keys `pyro-spam run` writes, evaluation computed from synthetic draws."""
    rng = np.random.default_rng(0)
    n_tr, n_te = 300, 120
    x_tr, x_te = rng.standard_normal((n_tr, 2)), rng.standard_normal((n_te, 2))
    w = np.array([-1.5, 2.0, 0.1])
    y_tr = (rng.uniform(size=n_tr) < expit(w[0] + x_tr @ w[1:])).astype(float)
    y_te = (rng.uniform(size=n_te) < expit(w[0] + x_te @ w[1:])).astype(float)
    loc, scale = w.copy(), np.array([0.15, 0.2, 0.9])
    draws = loc + scale * rng.standard_normal((400, 3))
    msgs = np.array([f"<script>alert({i})</script> win £100 & more" for i in range(n_te)])
    ev, _ = advanced_evaluation(loc=loc, scale=scale, coef_names=["w0 (bias)", "x1", "x2^2"], prior_scale=1.0,
                                logit_test=draws[:, :1] + draws[:, 1:] @ x_te.T, y_test=y_te, X_train=x_tr, y_train=y_tr,
                                X_test=x_te, msg_test=msgs, row_test=np.arange(n_te))
    ev.update(fit="meanfield", n_draws=400)
    fit = {"engine": "svi", "elbo_train": -150.0, "elbo_test_per_message": -0.4, "coef_names": ["w0 (bias)", "x1", "x2^2"],
           "loc": loc.tolist(), "scale": scale.tolist(), "steps": 500, "stop_reason": "converged", "seconds": 2.0,
           "test": {"lppd_per_message": -0.38, "intercept_only_lppd_per_message": -0.6, "accuracy": 0.85, "roc_auc": 0.9,
                    "brier": 0.1, "ece": 0.03}}
    s = {
        "data": {"source": "synthetic", "embedder": None, "n": 420, "dim": 8, "n_spam": 100, "spam_rate": 100 / 420,
                 "n_train": n_tr, "n_test": n_te, "components": 2, "components_requested": 2, "components_capped": False,
                 "explained_variance": 0.4, "explained_variance_ratio": [0.3, 0.1], "feature_kind": "polynomial",
                 "terms": ["x1", "x2^2"]},
        "fits": {"trace": {**fit, "elbo_train": -150.2}, "meanfield": fit},
        "meta": {"config": {"data": "d.npz", "features": {"components": 2, "kind": "polynomial", "test_size": 0.2},
                            "train": {"engine": "svi", "particles": 8, "batch_size": None, "max_steps": 500, "lr": 0.05,
                                      "prior_scale": 1.0, "seed": 0}, "elbos": ["trace", "meanfield"], "num_draws": 400},
                 "seed": 0, "versions": {"python": "3.11", "pyro_spam": "0.1.0"}},
        "figures": list(FIGS),
        "evaluation": ev,
    }
    if with_compare:
        s["compare"] = {
            "settings": {"sweep_particles": 8, "sweep_lr": 0.05, "sweep_window": 30, "sweep_tol": 1.0, "sweep_max_steps": 1500,
                         "sweep_draws": 1000},
            "quick": False, "seconds": {"total": 12.0},
            "prior_sensitivity": {"coef_names": ["w0 (bias)", "x1", "x2^2"], "best": 1.0, "rows": [
                {"prior_scale": ps, "lppd": lp, "se": 0.01, "diff_vs_1": d, "diff_se": 0.002, "kl_total": 5.0, "steps": 100,
                 "seconds": 1.0, "loc": [lc, 1.0, 0.0], "scale": [0.1, 0.1, 0.1]}
                for ps, lp, d, lc in ((0.1, -0.45, -0.07, -0.5), (1.0, -0.38, 0.0, -1.5), (10.0, -0.3801, -0.0001, -1.6))]},
            "model_size": {"ks": [1, 2, 3], "intercept_only": -0.6, "run_k": 2, "kinds": {
                "polynomial": {"lppd": [-0.42, -0.38, -0.381], "se": [0.01] * 3, "best_k": 2, "one_se_k": 2},
                "linear": {"lppd": [-0.42, -0.37, -0.35], "se": [0.01] * 3, "best_k": 3, "one_se_k": 3}}},
        }
        s["estimators"] = copy.deepcopy(_lab())
    return s


@pytest.fixture
def run_dir(tmp_path):
    """A directory with the run-time figures (tiny placeholders drawn with matplotlib) and a summary.json."""
    for name in FIGS:
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([0, 1], [0, 1])
        ax.set_title(name)
        save_figure(fig, tmp_path / name, dpi=40)
    write_json(tmp_path / "summary.json", _summary())
    return tmp_path


def test_html_is_self_contained(run_dir):
    """No external assets; every figure embedded as a base64 PNG that decodes to PNG bytes."""
    md, page = R.render_report(run_dir)
    html = page.read_text()
    assert "<link" not in html and "<script" not in html.replace("&lt;script", "")
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(srcs) == len(FIGS)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for name in FIGS:
        assert f"({name})" in md.read_text()


def test_text_quotes_this_runs_numbers(run_dir):
    """Generated sentences carry the summary's numbers (coefficients left, ECE, deferral accuracy, epistemic share)."""
    s = _summary()
    ev = s["evaluation"]
    _, page = R.render_report(run_dir, s)
    html = page.read_text()
    w = ev["weights"]
    assert f"{w['n_left']} of {len(w['rows'])} coefficients left the prior" in html
    assert f"ECE {ev['calibration']['models']['vi']['ece']:.4f}" in html
    assert pct(ev["selective"]["total"]["accuracy_at"]["0.90"]) in html
    assert pct(ev["uncertainty"]["all"]["epistemic_share"]) in html
    assert "&lt;script&gt;alert(" in html and "<script>alert" not in html  # message text is escaped, not executed


def test_optional_sections(run_dir):
    """Cross-check rows and diagnostics appear when present; without compare the report says how to add it."""
    s = _summary()
    _, page = R.render_report(run_dir, s)
    html = page.read_text()
    assert "Cross-check" not in html and "Diagnostics" not in html and "pyro-spam compare RUN_DIR" in html
    s["crosscheck"] = [
        {"name": "KL analytic", "pyro": 1.0, "manual": 1.0, "abs_diff": 0.0, "tolerance": 1e-5, "agree": True},
        {"name": "ELBO same noise", "pyro": -10.0, "manual": -10.0, "abs_diff": 1e-9, "tolerance": 1e-4, "agree": True},
        {"name": "grad wrt loc", "pyro": 3.0, "manual": 3.5, "abs_diff": 0.5, "tolerance": 1e-4, "agree": False},
    ]
    s["diagnostics"] = {"psis_khat": 0.31, "loo": {"elpd": -170.2, "se": 9.1}, "nuts_vs_vi": [{"coef": "x1", "nuts_sd": 0.21, "vi_sd": 0.2}]}
    s["figures"].append("diagnostics_extra.png")
    fig, _ = plt.subplots(figsize=(2, 1))
    save_figure(fig, run_dir / "diagnostics_extra.png", dpi=40)
    _, page = R.render_report(run_dir, s)
    html = page.read_text()
    assert "2 of 3</strong> comparisons agree" in html and 'class="bad">NO' in html
    assert "PSIS-LOO on the training messages: elpd -170.2 ± 9.1" in html  # known keys become a sentence
    assert "psis_khat" in html and "nuts_sd" in html  # unknown ones a table
    assert "diagnostics_extra.png" in html  # unplaced figures are shown under "Other figures"


def test_compare_and_estimator_sections(run_dir):
    """With compare results: both sweeps, the estimator ranking, the findings in words with this run's numbers."""
    s = _summary(with_compare=True)
    md, page = R.render_report(run_dir, s)
    html, text = page.read_text(), md.read_text()
    assert "6. Prior sensitivity" in html and "7. Model size" in html
    assert "Not computed yet" not in html
    assert "Linear terms reach lppd -0.350" in html  # write-up insight from the sweep
    est = s["estimators"]
    assert "| S | rank | estimator | Var ∂/∂loc |" in text and text.count("| 64 | ") == len(est["estimators"])
    rq = next(r for r in est["ratios"] if (r["guide"], r["S"], r["estimator"]) == ("fitted", 64, "rqmc"))
    assert f"`rqmc` ({rq['loc_ratio']:.2g}×)" in text  # the ranking sentence
    fl = est["stl_floor"]
    assert f"correlation ρ = {fl['corr']:.2f}" in text and "predicted floor" in text
    for head in ("What was measured.", "Randomised QMC", "Score function.", "IWAE is a different objective.",
                 "subsampling noise sets a floor", "Time to a converged fit."):
        assert head in text, head
    assert "`iwae` (0.90 sd)" in text and "every loc within 0.3 posterior sd" in text
    assert "Loc-gradient variance ÷ Trace_ELBO's at S = 64" in text  # the key-findings bullet


@pytest.mark.parametrize("with_compare", [False, True])
def test_writeup_length_and_parts(with_compare):
    """The write-up has motivation, implementation and insights, within the course's 100–500 words."""
    text = R.writeup(_summary(with_compare))
    assert 100 <= R.word_count(text) <= 500
    for part in ("**Motivation.**", "**Implementation.**", "**Insights.**"):
        assert part in text


def test_missing_figures_are_skipped_and_summary_read_from_disk(run_dir):
    """A figure named in summary.json but absent on disk is left out (no broken image)."""
    (run_dir / "eval_examples.png").unlink()
    _, page = R.render_report(run_dir)
    html = page.read_text()
    assert html.count("<img") == len(FIGS) - 1
    assert json.loads((run_dir / "summary.json").read_text())["data"]["n"] == 420


def test_partial_summary_renders(run_dir):
    """A partial or older run (no evaluation, compare or estimators; diagnostics with a NUTS part) still renders."""
    s = _summary()
    del s["evaluation"]
    s["diagnostics"] = {"khat": 0.4, "khat_reading": "good", "nuts": {"divergences": 0, "r_hat_max": 1.01}}
    md, page = R.render_report(run_dir, s)
    html = page.read_text()
    assert "No evaluation in this run's summary." in html
    assert "PSIS k̂ of the" in html and "r̂ max 1.010" in html and "0 divergences" in html
    assert html.count("Not computed yet") == 2  # sweeps and estimators
    assert "**Insights.**" in md.read_text()


def test_directory_without_summary_says_what_to_do(tmp_path):
    """Rendering a directory that holds no run fails with a one-line ModelFileError naming the fix."""
    from pyro_spam.errors import ModelFileError

    with pytest.raises(ModelFileError, match="pyro-spam run --out"):
        R.render_report(tmp_path)
