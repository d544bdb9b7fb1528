"""Model and guide: shapes with and without vectorised particles, site order, subsample scaling."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_spam.evaluate import elbo_estimate
from pyro_spam.guide import make_guide
from pyro_spam.model import logits, model
from pyro_spam.posterior import draw_weights, predict_draws


def _data(n=200, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(-1 + 2 * x[:, 0])).float()
    return x, y


def test_logits_shapes_and_values():
    """logits maps (..., K+1) draws and (N, K) inputs to (..., N), equal to the course's sum."""
    x, _ = _data(7, 3)
    w = torch.randn(5, 4)
    z = logits(w, x)
    assert z.shape == (5, 7)
    ref = w[:, :1] + (x.unsqueeze(0) * w[:, None, 1:]).sum(-1)
    torch.testing.assert_close(z, ref)
    assert logits(w[0], x).shape == (7,)


def test_course_sanity_check_returns_one_probability_per_row():
    """The course's check: w of shape (1, 6) on x of shape (4, 5) gives 4 probabilities."""
    p = torch.sigmoid(logits(torch.rand(1, 6), torch.rand(4, 5)))
    assert p.shape == (1, 4) and bool(((p > 0) & (p < 1)).all())


@pytest.mark.parametrize("particles", [2, 8])  # Pyro does not vectorise S=1
def test_vectorised_particles_shapes(particles):
    """With S vectorised particles, w is (S, 1, K+1) and y's log-prob is (S, N), never (S, S, N)."""
    x, y = _data()
    guide = make_guide()
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    model_trace, guide_trace = next(elbo._get_traces(model, guide, (x, y), {}))
    assert guide_trace.nodes["w"]["value"].shape == (particles, 1, 5)
    assert model_trace.nodes["y"]["fn"].batch_shape == (particles, 200)


def test_unvectorised_shapes_and_site_order():
    """Without particles w is (K+1,); guide and model sample 'w' first (mean-field order)."""
    x, y = _data()
    guide = make_guide()
    gt = poutine.trace(guide).get_trace(x, y)
    mt = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x, y)
    assert gt.nodes["w"]["value"].shape == (5,)
    sites = [n for n, s in mt.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert sites == ["w", "y"]
    assert mt.nodes["y"]["fn"].batch_shape == (200,)


def test_guide_scale_is_positive_and_loc_starts_at_prior_mean():
    """The guide's scale is constrained positive; loc starts at 0."""
    x, y = _data()
    make_guide(init_scale=0.3)(x, y)
    store = pyro.get_param_store()
    torch.testing.assert_close(store["w_loc"], torch.zeros(5))
    torch.testing.assert_close(store["w_scale"], torch.full((5,), 0.3))
    assert isinstance(store._constraints["w_scale"], type(torch.distributions.constraints.positive))


def test_subsample_scales_likelihood_by_n_over_b():
    """A mini-batch's log-likelihood enters the trace multiplied by N/B."""
    x, y = _data(n=200)
    idx = torch.arange(50)
    w = torch.randn(5)
    tr = poutine.trace(poutine.condition(model, data={"w": w})).get_trace(x, y, idx)
    tr.compute_log_prob()
    batch_ll = torch.distributions.Bernoulli(logits=logits(w, x[idx])).log_prob(y[idx]).sum()
    torch.testing.assert_close(tr.nodes["y"]["log_prob_sum"], batch_ll * 4.0)


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_minibatch_elbo_is_unbiased(elbo_cls):
    """Mean of R=400 mini-batch ELBO estimates (B=40 of N=400) equals the full-data ELBO.

    Tolerance: 4 Monte Carlo standard errors of the difference (batch estimates' sd/√R combined
    with the reference's own SE); without the N/B scale the mean misses by hundreds of SEs.
    """
    x, y = _data(n=400, k=3, seed=1)
    loc = np.array([-1.0, 1.8, 0.1, -0.2])
    scale = np.array([0.1, 0.15, 0.2, 0.1])
    guide = make_guide(init_loc=torch.tensor(loc, dtype=torch.float32), init_scale_vec=torch.tensor(scale, dtype=torch.float32))
    pyro.set_rng_seed(0)
    elbo = elbo_cls(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    g = torch.Generator().manual_seed(0)
    est = np.array([-elbo.loss(model, guide, x, y, torch.randperm(400, generator=g)[:40]) for _ in range(400)])
    w = draw_weights(loc, scale, 20000, seed=1)
    ref = elbo_estimate(predict_draws(w, x.numpy(), y.numpy()).loglik, loc, scale)
    se = np.sqrt(est.var(ddof=1) / est.size + ref["mc_se"] ** 2)
    assert abs(est.mean() - ref["elbo"]) < 4 * se
    unscaled = est.mean() + (40 / 400 - 1) * ref["expected_loglik"]  # what dropping N/B would give
    assert abs(unscaled - ref["elbo"]) > 20 * se
