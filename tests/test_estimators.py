"""The five added ELBO estimators (stl, rqmc, quad, iwae, score) next to the course's pair (trace, meanfield).

Unbiasedness against the exact gradient, what IWAE estimates instead, STL's and RQMC's variance
reduction, SVI = manual engine for every estimator, exact resume of a score fit, and the
cross-check rows that compare each Pyro estimator with its plain-torch twin.

All statistical checks use fixed seeds, so they are deterministic; the tolerances say how
unlikely a failure would be for a correct estimator and another seed.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from torch import Tensor
from torch.func import grad, vmap

from pyro_spam import crosscheck as cc
from pyro_spam import elbo_manual as em
from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import ConfigError
from pyro_spam.features import build_features
from pyro_spam.io.checkpoint import load_checkpoint, save_checkpoint
from pyro_spam.training.engines import fit, torch_threads

from .conftest import make_dataset
from .faultinject import ctrl_c_at, no_injection

DT = torch.float64
N, K = 400, 3
W_TRUE = np.array([-0.5, 1.0, -0.8, 0.5])

# Per (kind, guide) check, each of the 2(K+1) = 8 coordinates of the mean gradient must lie within
# Z_TOL standard errors of the exact gradient. For a correct estimator the mean of R replicates is
# ~normal (R >= 400 here), and P(|Z| > 4.5) = 6.8e-6, so by Bonferroni the chance that any of the 8
# coordinates fails is < 8 · 6.8e-6 = 5.4e-5 < 1e-4 (family-wise, per check).
Z_TOL = 4.5
REPARAM_KINDS = ("trace", "meanfield", "stl", "rqmc")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one torch thread avoids intra-op sync overhead (see train.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    """Synthetic logistic data, N = 400, K = 3, known coefficients (seed 0), float64."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, K))
    y = (rng.random(N) < 1 / (1 + np.exp(-(W_TRUE[0] + x @ W_TRUE[1:])))).astype(np.float64)
    return torch.tensor(x, dtype=DT), torch.tensor(y, dtype=DT)


@pytest.fixture(scope="module")
def guides(data) -> dict[str, tuple[Tensor, Tensor]]:
    """``near``: the mean-field optimum (L-BFGS on the exact quadrature ELBO; at N = 400 the posterior
    is near-Gaussian); ``away``: loc shifted by 0.2–0.3 (~2 posterior sd) and scales 0.5–2.5× off."""
    x, y = data
    fr = fit(x.numpy(), y.numpy(), TrainConfig(optimizer="lbfgs"))
    assert fr.stop_reason == "converged"
    loc, scale = torch.tensor(fr.loc, dtype=DT), torch.tensor(fr.scale, dtype=DT)
    away = (loc + torch.tensor([0.3, -0.3, 0.2, -0.2], dtype=DT), scale * torch.tensor([2.5, 0.5, 2.0, 0.6], dtype=DT))
    return {"near": (loc, scale), "away": away}


RULE = em.gauss_hermite(64)


def exact_grad(loc: Tensor, scale: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """The exact ELBO gradient w.r.t. (loc, scale), concatenated (2(K+1),): torch.func.grad of the
    quadrature ELBO with 64 Gauss–Hermite nodes (at these guides within 2e-14 of 128 nodes)."""
    g = grad(lambda lo, sc: em.elbo_quad(lo, sc, None, x, y, rule=RULE).elbo, argnums=(0, 1))(loc, scale)
    return torch.cat(g)


def exact_elbo(loc: Tensor, scale: Tensor, x: Tensor, y: Tensor) -> float:
    return float(em.elbo_quad(loc, scale, None, x, y, rule=RULE).elbo)


def noise(kind: str, reps: int, s: int, seed: int) -> Tensor:
    """``reps`` independent base-noise blocks (reps, S, K+1) of ``kind`` (independent scrambles for rqmc)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "rqmc":
        return torch.stack([em.draw_noise("rqmc", s, K + 1, gen, DT) for _ in range(reps)])
    return torch.randn((reps, s, K + 1), generator=gen, dtype=DT)


def manual_grads(kind: str, loc: Tensor, scale: Tensor, eps: Tensor, x: Tensor, y: Tensor,
                 baseline: float | None = None, chunk: int = 250) -> Tensor:
    """The manual estimator's gradient w.r.t. (loc, scale) for each noise block: (R, 2(K+1)), vmapped in chunks."""

    def one(e: Tensor) -> Tensor:  # torch.func here (vmappable); em.elbo_grad itself uses torch.autograd
        g_loc, g_scale = grad(lambda lo, sc: em.elbo(kind, lo, sc, e, x, y, baseline=baseline).elbo, argnums=(0, 1))(loc, scale)
        return torch.cat([g_loc, g_scale])

    return torch.cat([vmap(one)(e) for e in eps.split(chunk)])


def z_scores(reps: Tensor, exact: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean − exact) / SE`` per coordinate and the SE (sd with ddof 1 over sqrt(R))."""
    se = reps.std(0) / math.sqrt(reps.shape[0])
    return (reps.mean(0) - exact) / se, se


# --- 1. unbiasedness ------------------------------------------------------------------------------

# Manual side: R = 2000 replicates of S = 16 draws (32,000 draws; ~0.3 s per case, vmapped).
# The score estimator uses a constant baseline b = the exact ELBO: what the decaying average tends to
# at fixed parameters, and like it independent of the current draws, so the estimator stays unbiased.
# Without a baseline it is unbiased too but useless for a test: its SE here is 15–45 per coordinate
# (measured), larger than the gradient itself (≤ 26), so no bug would be visible.
POWER = {"trace": 0.1, "meanfield": 0.1, "stl": 0.1, "rqmc": 0.1, "score": 0.5}
"""At the away guide the tolerance Z_TOL·SE must stay below this fraction of max|exact gradient|
(measured, manual: ≤ 0.042 for the reparameterised kinds, 0.20 for score; Pyro: see below), so the
check can see a bug that moves the gradient by a fraction of its size (a missing term, a wrong N/B
or KL factor). Near the optimum the exact gradient is ~1e-4, so there the check is about the noise
being centred, not about power."""


@pytest.mark.parametrize("where", ["away", "near"])
@pytest.mark.parametrize("kind", [*REPARAM_KINDS, "score"])
def test_manual_gradient_is_unbiased(data, guides, kind, where):
    """Mean of 2000 manual gradients (S = 16) = the exact gradient, each coordinate within 4.5 SE."""
    x, y = data
    loc, scale = guides[where]
    ex = exact_grad(loc, scale, x, y)
    b = exact_elbo(loc, scale, x, y) if kind == "score" else None
    g = manual_grads(kind, loc, scale, noise(kind, 2000, 16, seed=11), x, y, baseline=b)
    z, se = z_scores(g, ex)
    assert z.abs().max() <= Z_TOL, (kind, where, z, se)
    if where == "away":
        assert (Z_TOL * se).max() < POWER[kind] * ex.abs().max(), (kind, se, ex)


# Pyro side: consecutive evaluations of one ELBO object at fixed parameters (crosscheck.pyro_same_noise_sequence),
# S = 64 each (Pyro's per-call overhead dominates: 64 particles cost ~10 % more than 16).
# stl and rqmc: R = 400 independent evaluations. score: the decaying-average baseline starts at 0
# and is carried from evaluation to evaluation, as in training. Each evaluation's baseline depends
# only on earlier draws, so the gradients are unbiased given the past and uncorrelated (a martingale
# difference sequence): the mean's SE is still sd/sqrt(R). The first 60 of 460 evaluations are
# dropped (0.9⁶⁰ ≈ 2e-3: the baseline has converged; before that the no-baseline variance, ~1e3×
# larger, would swamp the sample sd). Measured max SE at the away guide: stl 0.24, rqmc 0.05,
# score 1.35 (tolerance 4.5 SE = 0.04, 0.01 and 0.23 of max|gradient|): even with its baseline the
# score estimator needs ~30× the draws of the reparameterised ones for the same precision.
PYRO_CASES = {"stl": (64, 400, 0), "rqmc": (64, 400, 0), "score": (64, 460, 60)}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["away", "near"])
@pytest.mark.parametrize("kind", list(PYRO_CASES))
def test_pyro_gradient_is_unbiased(data, guides, kind, where):
    """Mean of R Pyro gradients (StlELBO, RqmcELBO, ScoreELBO) = the exact gradient, each coordinate within 4.5 SE."""
    x, y = data
    loc, scale = guides[where]
    s, reps, burn = PYRO_CASES[kind]
    seq = cc.pyro_same_noise_sequence(kind, x, y, loc, scale, particles=s, seed=5, evaluations=reps)
    g = torch.stack([torch.cat([pn.grad_loc, pn.grad_scale]) for pn in seq[burn:]])
    z, se = z_scores(g, exact_grad(loc, scale, x, y))
    assert z.abs().max() <= Z_TOL, (kind, where, z, se)
    if where == "away":
        assert (Z_TOL * se).max() < POWER[kind] * exact_grad(loc, scale, x, y).abs().max(), (kind, se)


# --- 2. iwae: a different objective ---------------------------------------------------------------


def test_iwae_gradient_is_not_the_elbo_gradient(data, guides):
    """At the poor (away) guide with S = 16 the mean IWAE gradient misses the ELBO gradient by far more
    than its noise: it is the gradient of another objective, the importance-weighted bound
    ``E log 1/S Σ exp f_s`` (≥ the ELBO, equal only at S = 1 or when q is the posterior)."""
    x, y = data
    loc, scale = guides["away"]
    g = manual_grads("iwae", loc, scale, noise("iwae", 2000, 16, seed=12), x, y)
    z, _ = z_scores(g, exact_grad(loc, scale, x, y))
    # A correct ELBO estimator stays within 4.5 SE (test 1); IWAE is measured 21–125 SE off here,
    # in every coordinate.
    assert z.abs().max() > 20, z
    # and the bound it estimates lies above the ELBO (Jensen): measured 8.4 nats above, SE 0.08
    vals = torch.stack([em.elbo_iwae(loc, scale, e, x, y).elbo for e in noise("iwae", 400, 16, seed=13)])
    assert vals.mean() - exact_elbo(loc, scale, x, y) > 10 * vals.std() / math.sqrt(len(vals))


def test_iwae_with_one_particle_is_the_trace_elbo(data, guides):
    """S = 1: the IWAE bound is log exp f = f, the Trace_ELBO estimate with the same noise, in value and gradient
    (manual), and Pyro's IwaeELBO equals its Trace_ELBO with the same seed (hence the same draw)."""
    x, y = data
    loc, scale = guides["away"]
    eps = noise("trace", 1, 1, seed=14)[0]
    (gi, pi), (gt, pt) = (em.elbo_grad(kind, loc, scale, eps, x, y) for kind in ("iwae", "trace"))
    # log-sum-exp of one term minus log 1: rounding only (~1e-16 relative)
    assert float(pi.elbo) == pytest.approx(float(pt.elbo), rel=1e-13)
    for a, b in zip(gi, gt):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    iw, tr = (cc.pyro_same_noise(kind, x, y, loc, scale, particles=1, seed=3) for kind in ("iwae", "trace"))
    assert torch.equal(iw.eps, tr.eps)
    assert iw.elbo == pytest.approx(tr.elbo, rel=1e-13)
    torch.testing.assert_close(iw.grad_loc, tr.grad_loc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(iw.grad_scale, tr.grad_scale, rtol=1e-12, atol=1e-12)


# --- 3. stl -----------------------------------------------------------------------------------------


def test_stl_value_is_the_trace_value_with_the_same_noise(data, guides):
    """Sticking the landing changes the gradient, not the estimate: same ε, same ELBO (manual and Pyro)."""
    x, y = data
    loc, scale = guides["away"]
    eps = noise("trace", 1, 16, seed=15)[0]
    (gs, ps), (gt, pt) = (em.elbo_grad(kind, loc, scale, eps, x, y) for kind in ("stl", "trace"))
    assert torch.equal(ps.elbo, pt.elbo)  # the same arithmetic: log q with detached loc/scale has the same value
    assert not torch.allclose(gs[1], gt[1])  # but another gradient
    stl, tr = (cc.pyro_same_noise(kind, x, y, loc, scale, particles=16, seed=4) for kind in ("stl", "trace"))
    assert torch.equal(stl.eps, tr.eps)
    assert stl.elbo == pytest.approx(tr.elbo, rel=1e-13)


def test_stl_gradient_variance_is_lower_near_the_posterior(data, guides):
    """At the mean-field optimum (near-Gaussian posterior) every coordinate of the STL gradient has
    a smaller variance than Trace_ELBO's, and the total is < 10 % of it (measured: 2 %)."""
    x, y = data
    loc, scale = guides["near"]
    eps = noise("trace", 2000, 8, seed=16)  # the same ε for both: a paired comparison
    v_stl = manual_grads("stl", loc, scale, eps, x, y).var(0)
    v_tr = manual_grads("trace", loc, scale, eps, x, y).var(0)
    # Each variance from 2000 replicates is known to ~3 % (sqrt(2/R)); measured ratios 0.01–0.05.
    assert torch.all(v_stl < 0.5 * v_tr), (v_stl, v_tr)
    assert v_stl.sum() < 0.1 * v_tr.sum()


# --- 4. rqmc ----------------------------------------------------------------------------------------


def test_rqmc_normal_points():
    """Scrambled Sobol normals: the right shape and dtype, finite, mean ~0 and variance ~1 in every
    dimension, reproducible per seed and different across seeds."""
    pts = em.rqmc_normal(1024, 6, seed=7, dtype=DT)
    assert pts.shape == (1024, 6) and pts.dtype == DT and torch.isfinite(pts).all()
    # i.i.d. normals would give sd(mean) = 0.031 and sd(var) = 0.044 at n = 1024; the balanced Sobol
    # points are closer (measured |mean| ≤ 1e-3, |var − 1| ≤ 8e-3 at this seed).
    assert pts.mean(0).abs().max() < 0.01
    assert (pts.var(0) - 1).abs().max() < 0.02
    assert torch.equal(pts, em.rqmc_normal(1024, 6, seed=7, dtype=DT))
    assert not torch.equal(pts, em.rqmc_normal(1024, 6, seed=8, dtype=DT))
    gen = torch.Generator().manual_seed(0)
    assert torch.isfinite(em.draw_noise("rqmc", 64, 6, gen)).all()


def test_rqmc_elbo_sd_is_at_most_half_the_meanfield_sd(data, guides):
    """At the fitted guide and S = 64 the RQMC ELBO estimate's sd is ≤ ½ of TraceMeanField's (same analytic
    KL; only the base noise differs). 300 replicates each: each sd is known to ~4 % (1/sqrt(2R));
    measured ratio 0.25."""
    x, y = data
    loc, scale = guides["near"]
    sd = {kind: torch.stack([em.elbo(kind, loc, scale, e, x, y).elbo for e in noise(kind, 300, 64, seed=17)]).std()
          for kind in ("rqmc", "meanfield")}
    assert sd["rqmc"] <= 0.5 * sd["meanfield"], sd


def test_rqmc_needs_a_power_of_two_particles():
    """TrainConfig refuses rqmc with S = 12 (Sobol points are balanced only for powers of two)."""
    with pytest.raises(ConfigError, match="power of two"):
        TrainConfig(elbo="rqmc", particles=12)
    TrainConfig(elbo="rqmc", particles=16)


# --- 5. engines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", em.ELBO_KINDS)
def test_svi_and_manual_engines_follow_the_same_trajectory(data, kind):
    """Same config and seed: the manual engine replays SVI's noise (Sobol seeds for rqmc, the decaying
    baseline for score), so 30 Adam steps of both end at the same guide."""
    x, y = (t.numpy().astype(np.float32) for t in data)
    cfg = TrainConfig(elbo=kind, particles=16, max_steps=30, jit=False)
    a = fit(x, y, cfg)
    b = fit(x, y, TrainConfig(elbo=kind, engine="manual", particles=16, max_steps=30, jit=False))
    assert (a.engine, b.engine) == ("svi", "manual")
    # Same noise and data; float32 summation order differs (measured ≤ 2e-6 after 30 steps, iwae the largest).
    np.testing.assert_allclose(b.loc, a.loc, atol=1e-5)
    np.testing.assert_allclose(b.scale, a.scale, atol=1e-5)
    np.testing.assert_allclose(b.history.elbo, a.history.elbo, rtol=1e-5)


@pytest.fixture(scope="module")
def features():
    fs, _ = build_features(make_dataset(n=300, dim=8, seed=2), FeatureConfig(components=3), seed=0)
    return fs


SCORE_RESUME = TrainConfig(elbo="score", particles=16, batch_size=64, max_steps=40, jit=False)


def test_score_fit_resumes_exactly(features, monkeypatch):
    """A score-ELBO SVI fit interrupted at step 17 and resumed from ``FitResult.state`` equals the
    uninterrupted fit bit for bit: the state carries Pyro's decaying-average baseline
    (``__baseline_avg_downstream_cost_w``, one value per particle slot) with the parameters."""
    x, y = features.X_train, features.y_train
    full = fit(x, y, SCORE_RESUME)
    ctrl_c_at(monkeypatch, step=16)
    part = fit(x, y, SCORE_RESUME)
    no_injection(monkeypatch)
    assert part.stop_reason == "interrupted" and part.steps == 17 and part.state.exact
    assert part.state.params["__baseline_avg_downstream_cost_w"].shape == (16, 1)
    rest = fit(x, y, SCORE_RESUME, resume=part.state)
    assert rest.steps == full.steps == 40
    for a, b in [(rest.loc, full.loc), (rest.scale, full.scale), (rest.history.elbo, full.history.elbo),
                 (rest.history.loglik, full.history.loglik)]:
        np.testing.assert_array_equal(a, b)
    for name, v in full.state.params.items():
        np.testing.assert_array_equal(rest.state.params[name], v)


def test_score_fit_resumes_exactly_from_checkpoint_files(features, tmp_path, monkeypatch):
    """As above, through checkpoint.json/.npz (what ``pyro-spam run --resume`` does)."""
    x, y = features.X_train, features.y_train
    full = fit(x, y, SCORE_RESUME)
    ctrl_c_at(monkeypatch, step=16)
    part = fit(x, y, SCORE_RESUME)
    no_injection(monkeypatch)
    save_checkpoint(tmp_path, RunConfig(train=SCORE_RESUME, elbos=("score",)), {"score": part}, features)
    saved = load_checkpoint(tmp_path).fits["score"]
    assert saved.state.params["__baseline_avg_downstream_cost_w"].shape == (SCORE_RESUME.particles, 1)
    rest = fit(x, y, SCORE_RESUME, resume=saved.state)
    np.testing.assert_array_equal(rest.loc, full.loc)
    np.testing.assert_array_equal(rest.history.elbo, full.history.elbo)


# --- 6. cross-check rows ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def estimator_rows(data, guides) -> dict[str, dict]:
    """run_crosscheck on the small problem at the fitted guide, S = 12 (rqmc then uses S = 8)."""
    pyro.enable_validation(True)
    x, y = data
    loc, scale = guides["near"]
    rows = cc.run_crosscheck(x, y, loc, scale, particles=12, seed=0, n_rep=10, n_batches=20)
    return {r["name"]: r for r in rows}


def test_crosscheck_has_agreeing_rows_for_every_estimator(estimator_rows):
    """Value and both gradients with the same noise for stl, rqmc, iwae, score and quad, plus the score
    baseline row and the rqmc closed-form-KL row: all present, exact, and agreeing."""
    names = [f"{what} ({label})" for label in cc.ESTIMATOR_LABELS.values()
             for what in ("ELBO same noise", "grad wrt loc, same noise", "grad wrt scale, same noise")]
    names.append("RqmcELBO uses the closed-form KL")
    names += [n for n in estimator_rows if n.startswith("grad wrt (loc, scale), 2nd evaluation")]
    assert len(names) == 3 * 5 + 2
    for name in names:
        r = estimator_rows[name]
        assert r["kind"] == "exact" and r["agree"], r
    assert "closed form in use" in estimator_rows["RqmcELBO uses the closed-form KL"]["detail"]
    baseline = estimator_rows[names[-1]]
    assert "baseline in use" in baseline["detail"], baseline
    rqmc = estimator_rows[f"ELBO same noise ({cc.ESTIMATOR_LABELS['rqmc']})"]
    assert "S=8 (the largest power of two ≤ particles=12)" in rqmc["detail"]
    assert all(r["agree"] for r in estimator_rows.values())  # and the course's rows still agree


def test_crosscheck_score_baseline_row_catches_a_wrong_baseline(data, guides, monkeypatch):
    """The baseline row fails if the manual side assumed another decay (β = 0.5 instead of 0.9): it has power."""
    x, y = data
    loc, scale = guides["away"]
    first, second = cc.pyro_same_noise_sequence("score", x, y, loc, scale, particles=8, seed=1, evaluations=2)
    assert cc._score_baseline_row(first, second, x, y, 1.0)["agree"]
    monkeypatch.setattr(cc, "SCORE_BASELINE_BETA", 0.5)
    assert not cc._score_baseline_row(first, second, x, y, 1.0)["agree"]


def test_quad_same_noise_has_no_noise(data, guides):
    """pyro_same_noise("quad") returns eps None and the deterministic exact ELBO (twice the same)."""
    x, y = data
    loc, scale = guides["near"]
    a, b = (cc.pyro_same_noise("quad", x, y, loc, scale, particles=16, seed=s) for s in (0, 1))
    assert a.eps is None and a.elbo == b.elbo
    assert a.elbo == pytest.approx(float(em.elbo_quad(loc, scale, None, x, y).elbo), rel=1e-12)
