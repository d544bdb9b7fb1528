"""Pyro versus the manual ELBO: same-noise exactness, independent-noise agreement, MC KL rate, figure."""

from __future__ import annotations

import matplotlib.pyplot as plt  # the Agg backend is set in conftest
import numpy as np
import pyro
import pytest
import torch

from pyro_spam import crosscheck as cc
from pyro_spam import elbo_manual as em
from pyro_spam.config import TrainConfig
from pyro_spam.plots.crosscheck import plot_crosscheck, plot_elbo_estimates, plot_mc_kl_error
from pyro_spam.training.engines import torch_threads
from pyro_spam.training.svi import fit_svi

N, K = 4500, 5
W_TRUE = np.array([-1.5, 1.0, -0.5, 0.8, 0.0, 0.3])


@pytest.fixture(scope="module")
def problem():
    """A realistic synthetic problem (N = 4500, K = 5) and a guide fitted to it by Pyro SVI.

    Module-scoped because the fit and the full cross-check take a few seconds and every test
    below only reads them. Fitted with Pyro, not the manual engine, so that a bug in the manual
    code cannot move the point at which the manual code is checked.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, K)).astype(np.float32)
    y = (rng.random(N) < 1 / (1 + np.exp(-(W_TRUE[0] + x @ W_TRUE[1:])))).astype(np.float32)
    with torch_threads(1):
        pyro.enable_validation(True)
        fit = fit_svi(x, y, TrainConfig(elbo="meanfield", particles=16, batch_size=500, window=50, seed=0))
    return x, y, fit.loc, fit.scale


@pytest.fixture(scope="module")
def rows(problem):
    """run_crosscheck at the fitted guide (S = 64, 60 replicates, 200 mini-batches of B = 450)."""
    pyro.enable_validation(True)
    x, y, loc, scale = problem
    return {r["name"]: r for r in cc.run_crosscheck(x, y, loc, scale, particles=64, seed=0, n_rep=60, n_batches=200)}


def _row(rows, prefix):
    hits = [r for name, r in rows.items() if name.startswith(prefix)]
    assert len(hits) == 1, f"expected one row starting with {prefix!r}, got {[r['name'] for r in hits]}"
    return hits[0]


def test_rows_have_the_documented_fields(rows):
    """Every row carries name, pyro, manual, abs_diff, tolerance, agree, kind and detail."""
    for r in rows.values():
        assert set(r) == {"name", "pyro", "manual", "abs_diff", "tolerance", "agree", "kind", "detail"}
        assert r["abs_diff"] == pytest.approx(abs(r["pyro"] - r["manual"])) or r["name"].startswith("grad")


def test_analytic_kl_pyro_equals_manual(rows):
    """Pyro's kl_divergence between guide and prior sites equals kl_analytic (1e-5 relative)."""
    r = _row(rows, "KL analytic")
    assert r["agree"] and r["abs_diff"] <= 1e-5 * abs(r["manual"])  # closed form both sides: rounding only


@pytest.mark.parametrize("prefix", ["ELBO same noise (Trace_ELBO", "ELBO same noise (TraceMeanField_ELBO", "ELBO same noise, mini-batch"])
def test_same_noise_elbo_is_exact(rows, prefix):
    """With the same ε, Pyro's loss and the manual ELBO agree to 1e-5 relative (full data and mini-batch)."""
    hits = [r for name, r in rows.items() if name.startswith(prefix)]
    assert hits
    for r in hits:
        # Same draws, same formula: only float64 summation order differs (~1e-14 relative).
        assert r["agree"], r
        assert r["abs_diff"] <= 1e-5 * max(abs(r["pyro"]), abs(r["manual"]))


def test_same_noise_loglik_part_is_exact(rows):
    """The log-likelihood part the Recording ELBO keeps for the history equals the manual loglik."""
    r = _row(rows, "log-likelihood part")
    assert r["agree"], r  # 1e-5 relative; same draws


@pytest.mark.parametrize("label", ["Trace_ELBO", "TraceMeanField_ELBO"])
@pytest.mark.parametrize("param", ["loc", "scale"])
def test_same_noise_gradients_are_exact(rows, label, param):
    """Gradients w.r.t. loc and scale agree to 1e-5 of the largest component (same ε)."""
    r = _row(rows, f"grad wrt {param}, same noise ({label} ")
    assert r["agree"], r  # tolerance 1e-5·max|grad|; float64 rounding is ~1e-14 of it


def test_meanfield_uses_the_closed_form_kl(rows):
    """TraceMeanField_ELBO's loss implies the analytic KL, and is far from the MC KL of the same draws."""
    r = _row(rows, "TraceMeanField_ELBO uses the closed-form KL")
    assert r["agree"] and "closed form in use" in r["detail"], r


def test_meanfield_fallback_to_mc_would_be_caught(problem, monkeypatch):
    """If no KL were registered, TraceMeanField would silently use the MC KL: the check then matches elbo_mc, not elbo_analytic."""
    pyro.enable_validation(True)
    x, y, loc, scale = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in problem)

    def unregistered(p, q):
        raise NotImplementedError

    monkeypatch.setattr("pyro.infer.trace_mean_field_elbo.kl_divergence", unregistered)
    pn = cc.pyro_same_noise("meanfield", x, y, loc, scale, particles=64, seed=5)
    analytic = em.elbo_analytic(pn.loc, pn.scale, pn.eps, x, y).elbo.item()
    mc = em.elbo_mc(pn.loc, pn.scale, pn.eps, x, y).elbo.item()
    # The fallback equals the MC estimator to rounding (1e-5 relative, as in the exact rows) and
    # fails that same tolerance against the analytic one: the two differ by the MC KL's error at
    # S = 64 (RMS ≈ 0.2 nats), and this seed's draw is checked to be > 10 tolerances away.
    tol = 1e-5 * abs(analytic)
    assert abs(pn.elbo - mc) <= tol
    assert abs(pn.elbo - analytic) > 10 * tol
    row = cc.closed_form_row(pn)
    assert not row["agree"] and "NOT distinguishable" in row["detail"], row


@pytest.mark.parametrize("kind", ["trace", "meanfield"])
def test_independent_noise_means_agree_within_4_se(rows, kind):
    """With independent noise, Pyro's and the manual mean ELBO differ by less than 4 MC standard errors."""
    name = cc._PYRO_NAME[kind]
    r = _row(rows, f"ELBO independent noise ({name} ")
    # 4 SE, SE = sqrt(var_pyro/n + var_manual/n) over 60 replicates each: false alarm p ≈ 6e-5.
    assert r["kind"] == "statistical" and r["agree"], r
    # Power: 4 SE (~0.4 nats here) stays below 1e-3 of the ELBO (~2 nats), far below the shift
    # a missing term or constant would cause.
    assert r["tolerance"] < 1e-3 * abs(r["manual"])


def test_minibatch_estimates_are_unbiased(rows):
    """Batch ELBOs (B = N/10, scaled by N/B) average to the full-data ELBO within 4 SE, in both implementations."""
    same = _row(rows, "mini-batch mean = full-data ELBO, same ε")
    pyro_b = _row(rows, "mini-batch mean = full-data ELBO (Pyro")
    for r in (same, pyro_b):
        # 200 batches: SE = sd/sqrt(200) ≈ 30 nats; dropping N/B would be off by ~0.9·ELBO ≈ 1800 nats.
        assert r["agree"], r
        assert r["tolerance"] < 0.1 * abs(r["pyro"])


def test_mc_kl_error_shrinks_as_one_over_sqrt_s(problem):
    """The RMS error of the MC KL falls with slope −½ in log-log over S = 4…4096 (slope within ±0.1)."""
    _, _, loc, scale = problem
    res = cc.mc_kl_error_vs_s(loc, scale, S_values=(4, 16, 64, 256, 1024, 4096), reps=200, seed=0)
    # Each RMS from 200 replicates has ~5 % relative error; over three decades of S the slope's
    # SE is ≈ 0.01, so ±0.1 is ~10 SE wide yet excludes a biased estimator (slope → 0).
    assert -0.6 <= res.slope <= -0.4, res
    assert np.all(np.diff(res.rms) < 0)
    assert res.kl == pytest.approx(em.kl_analytic(torch.as_tensor(loc), torch.as_tensor(scale)).item())


def test_crosscheck_leaves_param_store_and_rng_alone(problem):
    """run helpers use a private param store scope and RNG fork: the caller's state is unchanged."""
    x, y, loc, scale = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in problem)
    pyro.clear_param_store()
    pyro.param("keep_me", torch.ones(2))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    cc.pyro_same_noise("trace", x, y, loc, scale, particles=4, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert list(pyro.get_param_store().keys()) == ["keep_me"]


def test_crosscheck_figure_draws_both_panels(problem):
    """The figure has the four implementations with ±2 SE bars and the log-log KL error panel."""
    x, y, loc, scale = problem
    reps = cc.elbo_replicates(x[:500], y[:500], loc, scale, particles=8, n_rep=10, seed=1)
    summary = cc.summarize_replicates(reps)
    assert [s["name"] for s in summary] == list(cc.IMPLEMENTATIONS)
    kl_err = cc.mc_kl_error_vs_s(loc, scale, S_values=(4, 64, 1024), reps=20)
    fig = plot_crosscheck(summary, kl_err)
    try:
        ax_a, ax_b = fig.axes
        assert "nats" in ax_a.get_ylabel() and "nats" in ax_b.get_ylabel()
        assert ax_b.get_xscale() == "log" and ax_b.get_yscale() == "log"
        assert len(ax_a.get_legend().get_texts()) == 4
        assert any("1/√S" in t.get_text() for t in ax_b.get_legend().get_texts())
        assert ax_a.get_title() and ax_b.get_title()
    finally:
        plt.close(fig)
    ax = plot_elbo_estimates(summary)
    ax2 = plot_mc_kl_error(kl_err)
    plt.close(ax.figure)
    plt.close(ax2.figure)


@pytest.mark.parametrize("s", [4, 16, 4096, 5])
def test_mc_kl_study_equals_one_draw_of_all_replicates(s):
    """mc_kl_error_vs_s draws its replicates' noise in blocks; the RMS equals the one from a single
    (reps, S, K+1) draw, the way it was computed before (torch's normal stream must continue)."""
    loc, scale = np.array([0.3, -0.2, 0.1]), np.array([0.5, 0.2, 0.8])
    res = cc.mc_kl_error_vs_s(loc, scale, S_values=(s, 8 * s), reps=40, seed=3)  # two S: the slope needs a fit
    gen = torch.Generator().manual_seed(3)
    lt, st = torch.as_tensor(loc), torch.as_tensor(scale)
    eps = torch.randn((40, s, 3), generator=gen, dtype=torch.float64)
    est = torch.stack([em.kl_mc(lt + st * e, lt, st) for e in eps])
    rms = float(torch.sqrt(torch.mean((est - float(em.kl_analytic(lt, st))) ** 2)))
    assert res.rms[0] == pytest.approx(rms, rel=1e-12)
